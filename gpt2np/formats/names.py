"""Name maps between weight files and the params tree, and the shape checks against hparams.

The params tree (design.md)::

    wte [V, d], wpe [n_ctx, d],
    blocks[i] = {ln_1: {g, b}, attn: {c_attn: {w [d, 3d], b}, c_proj: {w [d, d], b}},
                 ln_2: {g, b}, mlp: {c_fc: {w [d, 4d], b}, c_proj: {w [4d, d], b}}},
    ln_f: {g, b}

Inside this room a tree is often handled *flat*: ``{"blocks.0.attn.c_attn.w": array, ...}``.
"""

from __future__ import annotations

import re

import numpy as np

from .errors import WeightsError

HPARAM_KEYS = ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer")


def check_hparams(hparams, source: str = "hparams") -> dict:
    """The five GPT-2 hyperparameters as plain positive ints, n_embd divisible by n_head."""
    if not isinstance(hparams, dict):
        raise WeightsError(f"{source}: expected a JSON object with keys {', '.join(HPARAM_KEYS)}")
    missing = [k for k in HPARAM_KEYS if k not in hparams]
    if missing:
        raise WeightsError(f"{source}: missing {', '.join(missing)} (expected keys {', '.join(HPARAM_KEYS)})")
    out = {}
    for k in HPARAM_KEYS:
        v = hparams[k]
        if isinstance(v, np.ndarray) and v.shape == ():
            v = v.item()
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
            raise WeightsError(f"{source}: {k} must be a positive integer, found {v!r}")
        out[k] = int(v)
    if out["n_embd"] % out["n_head"]:
        raise WeightsError(f"{source}: n_embd={out['n_embd']} is not divisible by n_head={out['n_head']}")
    return out


_BLOCK_SHAPES = {  # name inside a block -> shape as a function of d = n_embd
    "ln_1.g": lambda d: (d,), "ln_1.b": lambda d: (d,),
    "attn.c_attn.w": lambda d: (d, 3 * d), "attn.c_attn.b": lambda d: (3 * d,),
    "attn.c_proj.w": lambda d: (d, d), "attn.c_proj.b": lambda d: (d,),
    "ln_2.g": lambda d: (d,), "ln_2.b": lambda d: (d,),
    "mlp.c_fc.w": lambda d: (d, 4 * d), "mlp.c_fc.b": lambda d: (4 * d,),
    "mlp.c_proj.w": lambda d: (4 * d, d), "mlp.c_proj.b": lambda d: (d,),
}


def expected_shapes(hparams: dict) -> dict[str, tuple[int, ...]]:
    """Flat name -> shape of every tensor of the params tree (12 L + 4 tensors)."""
    d = hparams["n_embd"]
    out = {"wte": (hparams["n_vocab"], d), "wpe": (hparams["n_ctx"], d)}
    for i in range(hparams["n_layer"]):
        for name, shape in _BLOCK_SHAPES.items():
            out[f"blocks.{i}.{name}"] = shape(d)
    out["ln_f.g"] = (d,)
    out["ln_f.b"] = (d,)
    return out


def _sort_key(name: str):
    """Layers in numeric order (blocks.2 before blocks.10) for readable messages."""
    return [int(p) if p.isdigit() else p for p in name.split(".")]


def check_flat(flat: dict, hparams: dict, source: str, file_names=None) -> None:
    """Exactly the expected tensors, each with the expected shape; errors name the tensors.

    ``file_names`` turns a flat name into the name it has (or would have) in the file, for
    messages: a dict, or a function.
    """
    want = expected_shapes(hparams)
    missing = sorted(set(want) - set(flat), key=_sort_key)
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
    for name in sorted(want, key=_sort_key):
        if tuple(flat[name].shape) != want[name]:
            raise WeightsError(f"{source}: {fn(name)}: expected shape {want[name]} from hparams, "
                               f"found {tuple(flat[name].shape)}")


_TOP_ORDER = {"wte": 0, "wpe": 1, "blocks": 2, "ln_f": 3}
_BLOCK_ORDER = {name: i for i, name in enumerate(_BLOCK_SHAPES)}


def canonical_order(name: str):
    """Sort key giving the tree's natural order: wte, wpe, blocks 0..L-1 (ln_1, attn, ln_2, mlp), ln_f."""
    parts = name.split(".")
    if parts[0] == "blocks" and len(parts) > 2 and parts[1].isdigit():
        return (2, int(parts[1]), _BLOCK_ORDER.get(".".join(parts[2:]), 99), name)
    return (_TOP_ORDER.get(parts[0], 9), 0, {"g": 0, "b": 1}.get(parts[-1], 0), name)


def unflatten(flat: dict, n_layer: int) -> dict:
    """``{"blocks.0.ln_1.g": a, ...}`` -> the nested params tree (blocks as a list), in natural order."""
    tree: dict = {"wte": None, "wpe": None, "blocks": [{} for _ in range(n_layer)]}
    for name in [k for k in ("wte", "wpe") if k not in flat]:
        del tree[name]
    for name, value in sorted(flat.items(), key=lambda kv: canonical_order(kv[0])):
        parts = name.split(".")
        node = tree
        if parts[0] == "blocks":
            node, parts = tree["blocks"][int(parts[1])], parts[2:]
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return tree


def flatten(tree: dict, prefix: str = "") -> dict:
    """The nested params tree -> ``{"blocks.0.ln_1.g": array, ...}``."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                out.update(flatten(item, f"{name}.{i}."))
        else:
            out[name] = value
    return out


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
