"""The converted format: one uncompressed ``.npz`` holding the params tree and the hparams.

Members are the flattened tree (``wte``, ``blocks.0.attn.c_attn.w``, ..., ``ln_f.b``) plus
``hparams.n_vocab`` ... ``hparams.n_layer`` as int64 scalars.  Loading never unpickles
(``allow_pickle=False``) and checks names, shapes and dtypes against the hparams.
"""

from __future__ import annotations

import pathlib
import zipfile

import numpy as np

from .atomic import atomic_write
from .errors import WeightsError
from .names import HPARAM_KEYS, check_flat, check_hparams, flatten, unflatten

_HP = "hparams."


def save_npz(path, hparams: dict, params: dict) -> None:
    """Write ``params`` and ``hparams`` to ``path`` atomically (temp file + ``os.replace``)."""
    hparams = check_hparams(hparams, "save_npz")
    flat = flatten(params)
    check_flat(flat, hparams, "save_npz")
    arrays = {name: np.asarray(a) for name, a in flat.items()}
    arrays.update({_HP + k: np.array(v, dtype=np.int64) for k, v in hparams.items()})
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def load_npz(path) -> tuple[dict, dict]:
    """``(hparams, params tree)`` from a file written by :func:`save_npz` (float arrays kept as stored)."""
    path = pathlib.Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            names = list(z.files)
            missing = [k for k in HPARAM_KEYS if _HP + k not in names]
            if missing:
                raise WeightsError(f"{path}: not a gpt2np model file (missing {', '.join(_HP + k for k in missing)})")
            hparams = check_hparams({k: z[_HP + k] for k in HPARAM_KEYS}, str(path))
            flat = {n: z[n] for n in names if not n.startswith(_HP)}
    except FileNotFoundError:
        raise WeightsError(f"{path}: file not found") from None
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as e:
        raise WeightsError(f"{path}: not a readable .npz ({e}); the file is truncated or corrupt") from None
    except ValueError as e:
        if isinstance(e, WeightsError):
            raise
        raise WeightsError(f"{path}: cannot read ({e})") from None
    check_flat(flat, hparams, str(path))
    for name, arr in flat.items():
        if arr.dtype.kind != "f":
            raise WeightsError(f"{path}: {name} has dtype {arr.dtype}, expected a float dtype")
    return hparams, unflatten(flat, hparams["n_layer"])
