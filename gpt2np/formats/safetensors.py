"""safetensors (Hugging Face) read and write, with NumPy alone.

Layout::

    bytes [0, 8)        N: u64 little-endian, the header length
    bytes [8, 8 + N)    header: UTF-8 JSON {name: {"dtype", "shape", "data_offsets": [begin, end]},
                                            "__metadata__": {str: str} (optional)}
    bytes [8 + N, EOF)  data buffer; offsets are relative to its start; little-endian, C order

Reading checks every rule of the reference reader: header size and JSON, known dtypes and
entry keys, ``end - begin == prod(shape) * itemsize``, tensors tile the buffer with no gap or
overlap, and the buffer ends exactly at the end of the file.  Aligned tensors are read-only
views of a memory map (no copy); unaligned ones (old writers did not pad the header) are
copied once; BF16 is widened to float32.
"""

from __future__ import annotations

import json
import math
import mmap
import pathlib
import re
import struct

import numpy as np

from .atomic import atomic_write
from .errors import WeightsError
from .names import check_hparams, check_flat, normalize_hf, unflatten

MAX_HEADER_SIZE = 100_000_000
MAX_DEPTH = 3  # {name: {"shape": [...]}}; __metadata__ maps strings to strings

ST_DTYPES = {
    "BOOL": "?", "U8": "u1", "I8": "i1", "I16": "<i2", "U16": "<u2", "F16": "<f2", "BF16": "<u2",
    "I32": "<i4", "U32": "<u4", "F32": "<f4", "F64": "<f8", "I64": "<i8", "U64": "<u8", "C64": "<c8",
}
NO_NUMPY = ("F8_E5M2", "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "F4", "F6_E2M3", "F6_E3M2")
_NP_TO_ST = {np.dtype(v): k for k, v in ST_DTYPES.items() if k != "BF16"}


def read_safetensors_header(path) -> tuple[dict, dict, int]:
    """``(tensor entries, metadata, data_start)`` of a safetensors file, fully validated."""
    path = pathlib.Path(path)
    try:
        file_size = path.stat().st_size
    except FileNotFoundError:
        raise WeightsError(f"{path}: file not found") from None
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise WeightsError(f"{path}: {file_size} bytes is too short for a safetensors file")
        n = struct.unpack("<Q", head)[0]
        if n > MAX_HEADER_SIZE:
            raise WeightsError(f"{path}: header length {n} exceeds the limit {MAX_HEADER_SIZE}; not a safetensors file")
        if 8 + n > file_size:
            raise WeightsError(f"{path}: header length {n} runs past the end of the file ({file_size} bytes)")
        raw = f.read(n)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise WeightsError(f"{path}: header is not valid UTF-8 JSON ({e})") from None
    if _nesting(text) > MAX_DEPTH:  # before json.loads, whose recursion a deep header exhausts
        raise WeightsError(f"{path}: header is nested deeper than {MAX_DEPTH} levels (a safetensors header is "
                           f"{{name: {{dtype, shape: [...], data_offsets: [...]}}}}); not a safetensors file")
    try:
        header = json.loads(text, object_pairs_hook=_no_duplicates)
    except (json.JSONDecodeError, ValueError, RecursionError) as e:
        raise WeightsError(f"{path}: header is not valid UTF-8 JSON ({e})") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{path}: header must be a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise WeightsError(f"{path}: __metadata__ must map strings to strings")

    spans = []
    for name, e in header.items():
        where = f"{path}: tensor {name!r}"
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            raise WeightsError(f"{where}: entry must have exactly the keys dtype, shape, data_offsets")
        dt, shape, offs = e["dtype"], e["shape"], e["data_offsets"]
        if dt in NO_NUMPY:
            raise WeightsError(f"{where}: dtype {dt} has no NumPy equivalent")
        if dt not in ST_DTYPES:
            raise WeightsError(f"{where}: unknown dtype {dt!r} (known: {', '.join(ST_DTYPES)})")
        if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                  for s in shape):
            raise WeightsError(f"{where}: shape must be a list of non-negative integers, found {shape!r}")
        if (not isinstance(offs, list) or len(offs) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs) or not 0 <= offs[0] <= offs[1]):
            raise WeightsError(f"{where}: data_offsets must be [begin, end] with 0 <= begin <= end, found {offs!r}")
        nbytes = math.prod(shape) * np.dtype(ST_DTYPES[dt]).itemsize  # exact: no int64 wrap-around
        if offs[1] - offs[0] != nbytes:
            raise WeightsError(f"{where}: data_offsets {offs} hold {offs[1] - offs[0]} bytes, "
                               f"but {dt}{shape} needs {nbytes}")
        spans.append((offs[0], offs[1], name))
    spans.sort()
    pos = 0
    for begin, end, name in spans:
        if begin != pos:
            kind = "overlaps the previous tensor" if begin < pos else f"leaves a gap after byte {pos}"
            raise WeightsError(f"{path}: tensor {name!r} at data_offsets [{begin}, {end}] {kind}")
        pos = end
    if 8 + n + pos != file_size:
        raise WeightsError(f"{path}: header describes {8 + n + pos} bytes but the file has {file_size} "
                           f"(truncated or trailing data)")
    return header, metadata, 8 + n


_STRING = re.compile(r'"[^"]*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def _nesting(text: str, limit: int = MAX_DEPTH) -> int:
    """How deeply the JSON ``text`` nests objects and arrays (or ``limit + 1`` once deeper),
    in a few linear passes and no recursion: escaped backslashes and quotes dropped, then the
    strings, then everything but brackets; then the innermost ``[]``/``{}`` pairs go, one
    level per pass (a marker keeps ``{[]}`` from losing both levels in one pass)."""
    text = text.replace("\\\\", "").replace('\\"', "")
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    depth = 0
    while brackets and depth <= limit:
        inner = brackets.replace("[]", "#").replace("{}", "#")
        if inner == brackets:
            break  # unbalanced: json.loads says where
        brackets = inner.replace("#", "")
        depth += 1
    return depth


def _no_duplicates(pairs):
    seen = {}
    for k, v in pairs:
        if k in seen:
            raise ValueError(f"duplicate key {k!r}")
        seen[k] = v
    return seen


def read_safetensors(path) -> dict[str, np.ndarray]:
    """All tensors of a safetensors file as ``{name: array}`` in file order of offsets.

    Arrays are read-only memory-map views where the data is aligned to its itemsize,
    copies where not; BF16 comes back as float32 (exactly, bfloat16 is a truncated float32).
    """
    path = pathlib.Path(path)
    header, _, start = read_safetensors_header(path)
    if not header:
        return {}
    with open(path, "rb") as f:
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    out = {}
    for name, e in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        dtype = np.dtype(ST_DTYPES[e["dtype"]])
        begin, end = e["data_offsets"]
        count = (end - begin) // dtype.itemsize
        arr = np.frombuffer(buf, dtype=dtype, count=count, offset=start + begin).reshape(e["shape"])
        if (start + begin) % dtype.alignment:
            arr = arr.copy()  # unaligned view: correct but slow to compute with
        if e["dtype"] == "BF16":
            arr = (arr.astype(np.uint32) << np.uint32(16)).view(np.float32)
        out[name] = arr
    return out


def write_safetensors(path, tensors: dict, metadata: dict | None = None) -> None:
    """Write ``{name: array}`` as safetensors, atomically.

    The JSON header is padded with spaces so that the data starts at a multiple of 8
    (every tensor then stays aligned for a memory map); tensors are laid out by
    decreasing itemsize, then by name.  NumPy dtypes only (no BF16: NumPy has none).
    """
    entries, arrays, pos = {}, [], 0
    items = []
    for name, a in tensors.items():
        a = np.asarray(a)
        a = np.asarray(a, dtype=a.dtype.newbyteorder("<"), order="C")  # (ascontiguousarray would make 0-d 1-d)
        if not isinstance(name, str) or name == "__metadata__":
            raise WeightsError(f"invalid tensor name {name!r}")
        if a.dtype not in _NP_TO_ST:
            raise WeightsError(f"{name}: dtype {a.dtype} cannot be stored in safetensors "
                               f"(supported: {', '.join(str(d) for d in _NP_TO_ST)})")
        items.append((name, a))
    items.sort(key=lambda kv: (-kv[1].dtype.itemsize, kv[0]))
    for name, arr in items:
        entries[name] = {"dtype": _NP_TO_ST[arr.dtype], "shape": list(arr.shape),
                         "data_offsets": [pos, pos + arr.nbytes]}
        arrays.append(arr)
        pos += arr.nbytes
    header = dict(entries)
    if metadata:
        header = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}, **header}
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-(8 + len(raw)) % 8)
    with atomic_write(path) as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for arr in arrays:
            f.write(memoryview(arr.reshape(-1)).cast("B"))


def infer_hparams(flat: dict, source: str) -> dict:
    """GPT-2 hparams from tensor shapes.

    n_vocab, n_embd from ``wte [V, d]``; n_ctx from ``wpe [n_ctx, d]``; n_layer by counting
    the blocks.  n_head is *not* recorded in the shapes (any divisor of d fits); every GPT-2
    size uses 64-dimensional heads, so it is taken as ``n_embd // 64``.  Pass hparams
    explicitly for models with other head sizes.
    """
    for key in ("wte", "wpe"):
        if key not in flat or flat[key].ndim != 2:
            raise WeightsError(f"{source}: cannot infer the config without a 2-D {key}.weight")
    (n_vocab, d), (n_ctx, d2) = flat["wte"].shape, flat["wpe"].shape
    if d != d2:
        raise WeightsError(f"{source}: wte has width {d} but wpe has width {d2}")
    if d % 64:
        raise WeightsError(f"{source}: n_embd={d} is not a multiple of 64, so n_head cannot be "
                           f"inferred (GPT-2 uses 64-dim heads); pass the config explicitly")
    layers = {int(k.split(".")[1]) for k in flat if k.startswith("blocks.")}
    return {"n_vocab": n_vocab, "n_ctx": n_ctx, "n_embd": d, "n_head": d // 64, "n_layer": len(layers)}


def read_safetensors_model(path, hparams: dict | None = None) -> tuple[dict, dict]:
    """A Hugging Face GPT-2 ``model.safetensors`` -> ``(hparams, params tree)``.

    Names are normalised (optional ``transformer.`` prefix; ``attn.bias``/``masked_bias``
    buffers skipped; a tied ``lm_head.weight`` checked equal to ``wte`` and dropped;
    ``weight`` -> ``g``/``w``, ``bias`` -> ``b``; Conv1D weights are already ``[nx, nf]``).
    Without ``hparams`` they are inferred from the shapes (see :func:`infer_hparams`:
    n_head = n_embd // 64).  Weights must be float (F32, F16 or BF16) and come back as float32.
    """
    source = str(path)
    flat, file_names = normalize_hf(read_safetensors(path), source)
    hparams = infer_hparams(flat, source) if hparams is None else check_hparams(hparams, source)
    check_flat(flat, hparams, source, file_names)
    for key, arr in flat.items():
        if arr.dtype.kind != "f":
            raise WeightsError(f"{source}: {file_names[key]} has dtype {arr.dtype}; GPT-2 weights must be float")
        if arr.dtype != np.float32:
            flat[key] = arr.astype(np.float32)
    return hparams, unflatten(flat, hparams["n_layer"])
