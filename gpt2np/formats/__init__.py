"""Reading and writing weight files with NumPy alone.

- TensorFlow checkpoint V2 (OpenAI's GPT-2 release): :func:`read_tf_checkpoint`, :func:`read_bundle`
- safetensors (Hugging Face): :func:`read_safetensors_model`, :func:`read_safetensors`,
  :func:`write_safetensors`
- the converted ``.npz`` (params tree + hparams): :func:`save_npz`, :func:`load_npz`
- CRC32C: :func:`crc32c`

This package returns hparams *dicts* and params *trees*; it never imports ``gpt2np.model``.
"""

from .crc32c import crc32c, crc32c_serial, mask, unmask
from .errors import WeightsError
from .names import HPARAM_KEYS, check_hparams, expected_shapes, flatten, unflatten
from .tf_checkpoint import read_bundle, read_tf_checkpoint, find_prefix
from .safetensors import read_safetensors, read_safetensors_model, write_safetensors, read_safetensors_header
from .npz import load_npz, save_npz

__all__ = [
    "WeightsError", "crc32c", "crc32c_serial", "mask", "unmask",
    "HPARAM_KEYS", "check_hparams", "expected_shapes", "flatten", "unflatten",
    "read_bundle", "read_tf_checkpoint", "find_prefix",
    "read_safetensors", "read_safetensors_model", "write_safetensors", "read_safetensors_header",
    "load_npz", "save_npz",
]
