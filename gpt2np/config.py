"""What the model and the weight files share: GPT-2's sizes, its hyperparameters and its params tree.

- sizes: OpenAI's four names, gpt2np's bundled model ``BUNDLED_MODEL`` ("gpt2np-mini"), their
  aliases (``canonical_name``), and each one's ``Config`` (``PRESETS``);
- hyperparameters: ``Config`` (the five of OpenAI's ``hparams.json``) and ``check_hparams``, the
  one validator of them (``Config`` uses it, and so do the readers of :mod:`gpt2np.formats`);
- the params tree: its shapes (``param_shapes``), its check (``check_params``) and its walker
  (``walk``, ``map_tree``, ``format_path``, ``flatten``, ``unflatten``).

The params tree holds every weight of a model, with V = n_vocab and d = n_embd::

    wte [V, d], wpe [n_ctx, d],
    blocks[i] = {ln_1: {g, b}, attn: {c_attn: {w [d, 3d], b}, c_proj: {w [d, d], b}},
                 ln_2: {g, b}, mlp: {c_fc: {w [d, 4d], b}, c_proj: {w [4d, d], b}}},
    ln_f: {g, b}

``blocks`` is a list of n_layer blocks; the leaves are arrays (float32 or float64, one dtype for
all).  A leaf's *path* is the tuple of keys and list indexes that leads to it, such as
``("blocks", 3, "attn", "c_attn", "w")``; it is written ``blocks[3].attn.c_attn.w`` in messages
and ``blocks.3.attn.c_attn.w`` as a *flat name* (the members of an ``.npz``, the name maps of
:mod:`gpt2np.formats`).  See docs/architecture.md.

This module imports only NumPy and the standard library.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable, Iterator, Mapping

import numpy as np

HPARAM_KEYS = ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer")
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

Path = tuple  # of dict keys (str) and list indexes (int), e.g. ("blocks", 3, "attn", "c_attn", "w")


# --------------------------------------------------------------------------------------------
# Hyperparameters
# --------------------------------------------------------------------------------------------


def check_hparams(hparams, source: str = "hparams", error: type[Exception] = ValueError) -> dict:
    """The five hyperparameters as plain ints, in the order of ``HPARAM_KEYS``.

    ``hparams`` must be a mapping with exactly the keys n_vocab, n_ctx, n_embd, n_head, n_layer,
    each a positive integer (a Python or NumPy integer, or a 0-d integer array as an ``.npz``
    stores it), and n_embd divisible by n_head.  Otherwise raises ``error`` with a one-line
    message that starts with ``source`` (the file or the object the values come from).
    """
    keys = ", ".join(HPARAM_KEYS)
    if not isinstance(hparams, Mapping):
        raise error(f"{source}: expected a JSON object with the keys {keys}, found {type(hparams).__name__}")
    missing = [k for k in HPARAM_KEYS if k not in hparams]
    if missing:
        raise error(f"{source}: missing {', '.join(missing)} (expected the keys {keys})")
    unknown = [str(k) for k in hparams if k not in HPARAM_KEYS]
    if unknown:
        raise error(f"{source}: unexpected keys {', '.join(unknown)} (expected only the keys {keys})")
    out = {}
    for k in HPARAM_KEYS:
        v = hparams[k]
        if isinstance(v, np.ndarray) and v.shape == ():
            v = v.item()
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise error(f"{source}: {k} must be a positive integer, found {v!r}")
        out[k] = int(v)
    if out["n_embd"] % out["n_head"]:
        raise error(f"{source}: n_embd={out['n_embd']} must be divisible by n_head={out['n_head']} "
                    "(each head gets n_embd / n_head features)")
    return out


@dataclasses.dataclass(frozen=True)
class Config:
    """GPT-2's hyperparameters, under the names of OpenAI's ``hparams.json``.

    n_vocab: vocabulary size V; n_ctx: longest sequence (number of position embeddings);
    n_embd: model width d; n_head: attention heads H; n_layer: transformer blocks L.
    """

    n_vocab: int = 50257
    n_ctx: int = 1024
    n_embd: int = 768
    n_head: int = 12
    n_layer: int = 12

    def __post_init__(self):
        values = check_hparams({f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, "Config")
        for name, value in values.items():
            object.__setattr__(self, name, value)  # plain ints, also from np.int64

    @property
    def head_dim(self) -> int:
        """dh = n_embd / n_head (64 for every GPT-2 size)."""
        return self.n_embd // self.n_head

    @classmethod
    def preset(cls, name: str) -> "Config":
        """The hyperparameters of one of OpenAI's sizes or of the bundled model, by its name or an
        alias, in any letter case: "124M", "gpt2", "355M", "GPT2-Medium", "1.5b", "gpt2np-mini",
        "mini", ... (see :func:`canonical_name`)."""
        return PRESETS[canonical_name(name)]

    @classmethod
    def from_hparams(cls, path) -> "Config":
        """Read OpenAI's ``hparams.json`` (the file, or the folder that holds it)."""
        path = pathlib.Path(path)
        if path.is_dir():
            path = path / "hparams.json"
        try:
            hparams = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such hparams file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        return cls(**check_hparams(hparams, str(path)))

    def to_dict(self) -> dict:
        """The five hparams as plain ints, in OpenAI's order (``Config(**d)`` rebuilds it)."""
        return {f.name: int(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def num_params(self) -> int:
        """Number of weights: V·d + C·d + L·(12d² + 13d) + 2d (the output head is tied to wte)."""
        V, C, d, L = self.n_vocab, self.n_ctx, self.n_embd, self.n_layer
        return V * d + C * d + L * (12 * d * d + 13 * d) + 2 * d


# --------------------------------------------------------------------------------------------
# Sizes: the one table of names
# --------------------------------------------------------------------------------------------

# OpenAI's four sizes: name, n_embd, n_head, n_layer (n_vocab 50257 and n_ctx 1024 for all), and
# the other names they go by: OpenAI's first names (117M, 345M; renamed in 2019), Hugging Face's
# model ids (gpt2, gpt2-medium, ...) and the short names small, medium, large, xl.
_SIZES = (
    ("124M", 768, 12, 12, ("117M", "gpt2", "small")),
    ("355M", 1024, 16, 24, ("345M", "gpt2-medium", "medium")),
    ("774M", 1280, 20, 36, ("gpt2-large", "large")),
    ("1558M", 1600, 25, 48, ("1.5B", "gpt2-xl", "xl")),
)

OPENAI_SIZES: tuple[str, ...] = tuple(name for name, *_ in _SIZES)  # the sizes hub.py downloads

# gpt2np's own small model of GPT-2's architecture and vocabulary, trained by `gpt2np train` and
# shipped in the package (gpt2np/assets/gpt2np-mini/, read by gpt2np.bundled): never downloaded.
BUNDLED_MODEL = "gpt2np-mini"
_BUNDLED = (BUNDLED_MODEL, Config(n_vocab=50257, n_ctx=256, n_embd=128, n_head=4, n_layer=6), ("mini", "bundled"))

PRESETS: dict[str, Config] = {
    **{name: Config(n_embd=d, n_head=h, n_layer=n) for name, d, h, n, _ in _SIZES},
    _BUNDLED[0]: _BUNDLED[1],
}
_NAMES = tuple((name, aliases) for name, *_, aliases in _SIZES) + ((_BUNDLED[0], _BUNDLED[2]),)
ALIASES: dict[str, str] = {alias: name for name, aliases in _NAMES for alias in aliases}
_LOOKUP = {key.lower(): name for name, aliases in _NAMES for key in (name, *aliases)}


def canonical_name(name: str) -> str:
    """The name of a size ("124M", "355M", "774M", "1558M": OpenAI's; "gpt2np-mini": the
    bundled model) from that name or an alias.

    Letter case and surrounding spaces do not matter: "124m", " GPT2-Medium ", "1.5b", "XL" and
    "Mini" are "124M", "355M", "1558M", "1558M" and "gpt2np-mini".  Anything else raises
    ValueError listing the names and their aliases.
    """
    key = name.strip().lower() if isinstance(name, str) else None
    if key in _LOOKUP:
        return _LOOKUP[key]
    aliases = "; ".join(f"{size}: {', '.join(names)}" for size, names in _NAMES)
    raise ValueError(f"unknown model size {name!r}; known sizes: {', '.join(PRESETS)}, or an alias "
                     f"({aliases}), in any letter case")


def is_bundled(name) -> bool:
    """Whether ``name`` (any spelling, as for :func:`canonical_name`) is the bundled model."""
    try:
        return canonical_name(name) == BUNDLED_MODEL
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------
# The params tree: shapes and checks
# --------------------------------------------------------------------------------------------


def param_shapes(config: "Config | Mapping") -> dict:
    """The params tree of ``config`` (a Config, or its five hparams) with each tensor's shape
    tuple in place of its array, in the tree's natural order.  The one definition of the tree."""
    if not isinstance(config, Config):
        config = Config(**config)
    V, C, d = config.n_vocab, config.n_ctx, config.n_embd

    def ln():
        return {"g": (d,), "b": (d,)}

    def lin(n_in, n_out):
        return {"w": (n_in, n_out), "b": (n_out,)}

    def block():
        return {
            "ln_1": ln(),
            "attn": {"c_attn": lin(d, 3 * d), "c_proj": lin(d, d)},
            "ln_2": ln(),
            "mlp": {"c_fc": lin(d, 4 * d), "c_proj": lin(4 * d, d)},
        }

    return {"wte": (V, d), "wpe": (C, d), "blocks": [block() for _ in range(config.n_layer)], "ln_f": ln()}


def float_dtype(dtype) -> np.dtype:
    """``np.dtype(dtype)`` if it is float32 or float64 (the dtypes a model computes in); else ValueError."""
    dtype = np.dtype(dtype)
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


def check_params(config: Config, params) -> np.dtype:
    """Check ``params`` against ``config``; raise ValueError naming the first wrong tensor.

    Every tensor must be present (nothing more), a NumPy array of the shape ``param_shapes``
    gives, float32 or float64, all of one dtype; ``blocks`` a list of n_layer blocks.
    Returns that dtype.
    """
    first = {}  # the first tensor's path and dtype, to name both in a mixed-dtype error

    def check(expected, found, path):
        where = format_path(path)
        if isinstance(expected, dict):
            if not isinstance(found, dict):
                raise ValueError(f"{where}: expected a dict with keys {list(expected)}, found {type(found).__name__}")
            for key, sub in expected.items():
                if key not in found:
                    what = f"shape {sub}" if isinstance(sub, tuple) else "a subtree"
                    raise ValueError(f"{format_path(path + (key,))}: missing (expected {what})")
                check(sub, found[key], path + (key,))
            unknown = [k for k in found if k not in expected]
            if unknown:
                raise ValueError(f"{where}: unexpected entries {unknown}; expected only {list(expected)}")
        elif isinstance(expected, list):
            if not isinstance(found, list):
                raise ValueError(f"{where}: expected a list of {len(expected)} blocks, found {type(found).__name__}")
            if len(found) != len(expected):
                raise ValueError(f"{where}: expected {len(expected)} blocks (n_layer), found {len(found)}")
            for i, (sub, blk) in enumerate(zip(expected, found)):
                check(sub, blk, path + (i,))
        else:
            if not isinstance(found, np.ndarray):
                raise ValueError(f"{where}: expected a NumPy array of shape {expected}, found {type(found).__name__}")
            if found.dtype not in FLOAT_DTYPES:
                raise ValueError(f"{where}: dtype {found.dtype} is not supported; expected float32 or float64")
            if not first:
                first.update(path=where, dtype=found.dtype)
            elif found.dtype != first["dtype"]:
                raise ValueError(
                    f"{where}: dtype {found.dtype} differs from {first['path']}'s {first['dtype']}; "
                    "all tensors must share one dtype (convert them with astype)"
                )
            if found.shape != expected:
                raise ValueError(f"{where}: expected {expected}, found {found.shape}")

    check(param_shapes(config), params, ())
    return first["dtype"]


# --------------------------------------------------------------------------------------------
# Walking a tree
# --------------------------------------------------------------------------------------------


def walk(tree, path: Path = ()) -> Iterator[tuple[Path, object]]:
    """(path, leaf) for every leaf of ``tree``, in its order: dicts by key, lists by index.

    Dicts and lists are the tree; anything else is a leaf (an array, or a shape tuple in the
    tree of :func:`param_shapes`).
    """
    if isinstance(tree, dict):
        for key, sub in tree.items():
            yield from walk(sub, path + (key,))
    elif isinstance(tree, list):
        for i, sub in enumerate(tree):
            yield from walk(sub, path + (i,))
    else:
        yield path, tree


def map_tree(fn: Callable[[Path, object], object], tree, path: Path = ()):
    """The same tree with ``fn(path, leaf)`` in place of each leaf (new dicts and lists)."""
    if isinstance(tree, dict):
        return {key: map_tree(fn, sub, path + (key,)) for key, sub in tree.items()}
    if isinstance(tree, list):
        return [map_tree(fn, sub, path + (i,)) for i, sub in enumerate(tree)]
    return fn(path, tree)


def format_path(path: Path, flat: bool = False) -> str:
    """``("blocks", 3, "attn", "c_attn", "w")`` -> ``blocks[3].attn.c_attn.w`` (for messages), or
    with ``flat`` the flat name ``blocks.3.attn.c_attn.w``.  The empty path is ``params``."""
    out = ""
    for key in path:
        if isinstance(key, int) and not flat:
            out += f"[{key}]"
        else:
            out += f".{key}" if out else str(key)
    return out or "params"


def flatten(tree) -> dict:
    """The tree as ``{flat name: leaf}``: ``{"wte": ..., "blocks.0.ln_1.g": ..., ...}``, in its order."""
    return {format_path(path, flat=True): leaf for path, leaf in walk(tree)}


def unflatten(flat: Mapping, n_layer: int) -> dict:
    """The inverse of :func:`flatten` for a params tree of ``n_layer`` blocks.

    The tree comes out in its natural order (wte, wpe, blocks 0..n_layer-1, ln_f; ln_1, attn,
    ln_2, mlp inside a block), whatever the order of ``flat``.  ``flat`` must hold exactly the
    tree's names; a missing or unexpected one raises ValueError.
    """
    layout = param_shapes(Config(n_layer=n_layer))  # only the names matter here, not the shapes
    names = [format_path(path, flat=True) for path, _ in walk(layout)]
    missing = [name for name in names if name not in flat]
    unexpected = sorted(set(flat) - set(names))
    if missing or unexpected:
        raise ValueError(f"a params tree of {n_layer} blocks has other names: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return map_tree(lambda path, _: flat[format_path(path, flat=True)], layout)
