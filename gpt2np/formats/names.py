"""Name maps between weight files and the params tree, and the checks of a file's tensors.

The params tree, its flat names (``{"blocks.0.attn.c_attn.w": array, ...}``, the form weight
files are handled in here), its shapes and the validator of hparams are those of
:mod:`gpt2np.config`, the vocabulary the files share with the model; this module adds the
names each file format uses and raises :class:`WeightsError` for what a file gets wrong.
"""

from __future__ import annotations

import re

import numpy as np

from .. import config
from ..config import HPARAM_KEYS, flatten, unflatten  # noqa: F401  (re-exported by gpt2np.formats)
from .errors import WeightsError


def check_hparams(hparams, source: str = "hparams") -> dict:
    """The five GPT-2 hyperparameters as plain positive ints, n_embd divisible by n_head
    (:func:`gpt2np.config.check_hparams`); a WeightsError naming ``source`` otherwise."""
    return config.check_hparams(hparams, source, WeightsError)


def expected_shapes(hparams: dict) -> dict[str, tuple[int, ...]]:
    """Flat name -> shape of every tensor of the params tree (12 L + 4 tensors), in the tree's order."""
    return flatten(config.param_shapes(hparams))


def _sort_key(name: str):
    """Layers in numeric order (blocks.2 before blocks.10) for readable messages."""
    return [int(p) if p.isdigit() else p for p in name.split(".")]


def check_flat(flat: dict, hparams: dict, source: str, file_names=None) -> None:
    """Exactly the expected tensors, each with the expected shape; errors name the tensors.

    ``file_names`` turns a flat name into the name it has (or would have) in the file, for
    messages: a dict, or a function.
    """
    want = expected_shapes(check_hparams(hparams, source))  # (inferred hparams are checked here)
    missing = [name for name in want if name not in flat]
    extra = sorted(set(flat) - set(want), key=_sort_key)
    if callable(file_names):
        fn = file_names
    else:
        fn = (lambda n: (file_names or {}).get(n, n))
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise WeightsError(f"{source}: missing tensors {', '.join(fn(n) for n in missing[:5])}{more} "
                           f"for n_layer={hparams['n_layer']}")
    if extra:
        more = f" (and {len(extra) - 5} more)" if len(extra) > 5 else ""
        raise WeightsError(f"{source}: unexpected tensors {', '.join(fn(n) for n in extra[:5])}{more} "
                           f"for n_layer={hparams['n_layer']}")
    for name, shape in want.items():
        if tuple(flat[name].shape) != shape:
            raise WeightsError(f"{source}: {fn(name)}: expected shape {shape} from hparams, "
                               f"found {tuple(flat[name].shape)}")


# ---- OpenAI's TensorFlow names ------------------------------------------------------
_TF_BLOCK = re.compile(r"^model/h(0|[1-9]\d*)/(.+)$")


def tf_to_flat(name: str) -> str | None:
    """``model/h3/attn/c_attn/w`` -> ``blocks.3.attn.c_attn.w``; ``model/wte`` -> ``wte``; else None."""
    m = _TF_BLOCK.match(name)
    if m:
        return f"blocks.{m.group(1)}.{m.group(2).replace('/', '.')}"
    if name.startswith("model/") and name.count("/") <= 2:
        return name[len("model/"):].replace("/", ".")
    return None


def flat_to_tf(name: str) -> str:
    """Inverse of :func:`tf_to_flat`."""
    if name.startswith("blocks."):
        _, i, rest = name.split(".", 2)
        return f"model/h{i}/{rest.replace('.', '/')}"
    return "model/" + name.replace(".", "/")


def from_tf_names(tensors: dict, hparams: dict, source: str) -> dict:
    """OpenAI checkpoint tensors -> params tree.

    Conv1D weights are stored as ``w [1, nx, nf]``: only that leading axis is dropped
    (``w[0]``, a view), never a blanket squeeze.  Names and shapes must match hparams exactly.
    """
    flat, file_names, unknown = {}, {}, []
    for name, arr in tensors.items():
        key = tf_to_flat(name)
        if key is None:
            unknown.append(name)
            continue
        if key.endswith(".w"):
            if arr.ndim != 3 or arr.shape[0] != 1:
                raise WeightsError(f"{source}: {name}: expected a Conv1D weight of shape [1, nx, nf], "
                                   f"found {tuple(arr.shape)}")
            arr = arr[0]
        flat[key] = arr
        file_names[key] = name
    if unknown:
        raise WeightsError(f"{source}: unexpected tensors {', '.join(sorted(unknown)[:5])} "
                           f"(not GPT-2 names model/wte, model/h<i>/...)")
    check_flat(flat, hparams, source, lambda n: file_names.get(n) or flat_to_tf(n))
    return unflatten(flat, hparams["n_layer"])


# ---- Hugging Face names ----------------------------------------------------------------
_HF_SKIP = re.compile(r"^h\.\d+\.(attn\.(bias|masked_bias)|crossattention\..*)$")


def hf_to_flat(name: str) -> str | None:
    """``h.3.attn.c_attn.weight`` -> ``blocks.3.attn.c_attn.w``; ``h.0.ln_1.weight`` -> ``...ln_1.g``.

    Returns None for names outside GPT-2's set (reported as unexpected by the caller).
    """
    if name in ("wte.weight", "wpe.weight"):
        return name.split(".")[0]
    m = re.match(r"^h\.(\d+)\.(ln_1|ln_2|attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.(weight|bias)$", name)
    if m:
        i, mod, kind = m.groups()
        leaf = "b" if kind == "bias" else ("g" if mod.startswith("ln_") else "w")
        return f"blocks.{int(i)}.{mod}.{leaf}"
    if name in ("ln_f.weight", "ln_f.bias"):
        return "ln_f." + ("g" if name.endswith("weight") else "b")
    return None


def normalize_hf(tensors: dict, source: str) -> tuple[dict, dict]:
    """Hugging Face GPT-2 tensors -> (flat params, flat name -> file name).

    1. strip an optional ``transformer.`` prefix;
    2. skip the causal-mask buffers ``h.<i>.attn.bias`` / ``h.<i>.attn.masked_bias``;
    3. ``lm_head.weight`` is tied to ``wte``: checked equal, then dropped;
    4. ``weight`` -> ``g`` (LayerNorm) or ``w`` (Conv1D, already ``[nx, nf]``: no transpose), ``bias`` -> ``b``.
    """
    flat, file_names, unknown = {}, {}, []
    lm_head = None
    for name, arr in tensors.items():
        short = name[len("transformer."):] if name.startswith("transformer.") else name
        if _HF_SKIP.match(short):
            continue
        if short == "lm_head.weight":
            lm_head = (name, arr)
            continue
        key = hf_to_flat(short)
        if key is None:
            unknown.append(name)
            continue
        if key in flat:
            raise WeightsError(f"{source}: {name} appears twice (with and without the 'transformer.' prefix)")
        flat[key] = arr
        file_names[key] = name
    if unknown:
        raise WeightsError(f"{source}: unexpected tensors {', '.join(sorted(unknown)[:5])} "
                           f"(not GPT-2 names wte.weight, h.<i>.attn.c_attn.weight, ...)")
    if lm_head is not None and "wte" in flat:
        name, arr = lm_head
        if arr.shape != flat["wte"].shape or not np.array_equal(arr, flat["wte"]):
            raise WeightsError(f"{source}: {name} differs from wte; gpt2np ties the output "
                               f"projection to wte and cannot load an untied head")
    return flat, file_names
