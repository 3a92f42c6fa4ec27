"""The converted format: one uncompressed ``.npz`` holding the params tree and the hparams.

Members are the flattened tree (``wte.npy``, ``blocks.0.attn.c_attn.w.npy``, ..., ``ln_f.b.npy``)
plus ``hparams.n_vocab`` ... ``hparams.n_layer`` as int64 scalars.  It is an ordinary ``.npz``
(``np.load`` reads it), written so that loading is nearly free:

- members are stored uncompressed, and each local zip header carries a padding extra field
  (id 0xD935, the one Android's zipalign uses) so every array's data starts at a multiple
  of 64 bytes in the file;
- :func:`load_npz` memory-maps the file and returns read-only, aligned views of it (no copy,
  so loading takes no second copy of the weights); the zip's CRC-32 of every member is
  checked (``zlib.crc32``, about 0.2 s for 124M) unless ``verify=False``.

Nothing is ever unpickled; names, shapes and dtypes are checked against the hparams.
Files written by ``np.savez``/``np.savez_compressed`` with the same names load too (copied).

Weights are float32 or float64, little-endian.  One deliberate exception: a file whose
metadata says ``"storage": "float16"`` (``save_npz(..., metadata={"storage": "float16"})``,
which rounds every weight to float16) holds every weight as little-endian float16, half the
bytes; :func:`load_npz` checks that and upcasts each weight to float32 once (a copy, not a
memory map), so the model computes in float32.  The bundled model is stored this way.  A
float16 member in any other file is refused, as is a ``storage`` other than "float16".
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import mmap
import pathlib
import struct
import zipfile
import zlib

import numpy as np

from .atomic import atomic_write
from .errors import WeightsError
from .names import HPARAM_KEYS, check_flat, check_hparams, expected_shapes, flatten, unflatten

_HP = "hparams."
ALIGN = 64
_PAD_ID = 0xD935  # zip "extra field" id used for alignment padding


def save_npz(path, hparams: dict, params: dict, metadata: dict | None = None) -> None:
    """Write ``params`` and ``hparams`` to ``path`` atomically (temp file + ``os.replace``).

    ``metadata`` (JSON-serialisable: e.g. where the weights came from) is stored as the zip's
    comment, which ``np.load`` ignores; :func:`npz_metadata` reads it back.
    """
    hparams = check_hparams(hparams, "save_npz")
    flat = flatten(params)
    check_flat(flat, hparams, "save_npz")
    arrays = {name: np.asarray(a) for name, a in flat.items()}
    half = _storage(metadata or {}, "save_npz") == "float16"
    for name, arr in arrays.items():
        if arr.dtype not in _WEIGHT_DTYPES and not (half and arr.dtype == _HALF):
            raise WeightsError(f"save_npz: {name} has dtype {arr.dtype} ({arr.dtype.str!r}); gpt2np model files "
                               f"hold float32 or float64 weights, little-endian: convert with arr.astype(np.float32)"
                               f"{_HALF_HINT if arr.dtype.kind == 'f' and arr.dtype.itemsize == 2 else ''}")
    if half:  # every weight rounded to float16; one that overflows it is refused by name
        for name, arr in arrays.items():
            if not np.isfinite(arr).all():
                raise WeightsError(f"save_npz: {name} holds values that are not finite; refusing to store it")
            with np.errstate(over="ignore"):
                arrays[name] = h = arr.astype(_HALF)
            if not np.isfinite(h).all():
                raise WeightsError(f"save_npz: {name} has values beyond float16's range (|x| > 65504); "
                                   f"store this model as float32 (no storage='float16')")
    comment = b""
    if metadata:
        comment = json.dumps(metadata, sort_keys=True, separators=(",", ":")).encode("utf-8")
        if len(comment) > 0xFFFF:
            raise WeightsError(f"save_npz: metadata of {len(comment)} bytes is too large (at most 65535 as JSON)")
    arrays.update({_HP + k: np.array(v, dtype=np.int64) for k, v in hparams.items()})
    with atomic_write(path) as f:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, arr in arrays.items():
                _write_member(zf, f, name + ".npy", arr)
            zf.comment = comment


def npz_metadata(path) -> dict:
    """The ``metadata`` that :func:`save_npz` stored in ``path`` (``{}`` if none); reads only
    the zip's directory."""
    path = pathlib.Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            comment = zf.comment
    except FileNotFoundError:
        raise WeightsError(f"{path}: file not found") from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise WeightsError(f"{path}: not a readable .npz ({e}); the file is truncated or corrupt") from None
    return _parse_comment(comment)


def _parse_comment(comment: bytes) -> dict:
    """The metadata in a zip comment written by :func:`save_npz`; ``{}`` for none or another's."""
    if not comment:
        return {}
    try:
        meta = json.loads(comment.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return {}  # someone else's zip comment: no metadata of ours
    return meta if isinstance(meta, dict) else {}


def _storage(metadata: dict, source) -> str | None:
    """The metadata's ``storage``: None (the weights' own dtype) or "float16"; anything else is refused."""
    storage = metadata.get("storage")
    if storage is not None and storage != "float16":
        raise WeightsError(f"{source}: unknown weight storage {storage!r} in the metadata; gpt2np knows only "
                           f"'float16' (every weight float16, computed in float32)")
    return storage


def _write_member(zf: zipfile.ZipFile, f, fname: str, arr: np.ndarray) -> None:
    info = zipfile.ZipInfo(fname, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    # local header = 30 bytes + name + our extra field (4 + pad) + zipfile's zip64 extra (20);
    # NumPy pads the .npy header to a multiple of 64, so aligning the member aligns the data.
    fixed = 30 + len(fname.encode("utf-8")) + 4 + 20
    pad = -(f.tell() + fixed) % ALIGN
    info.extra = struct.pack("<HH", _PAD_ID, pad) + bytes(pad)
    with zf.open(info, "w", force_zip64=True) as w:
        np.lib.format.write_array(w, np.ascontiguousarray(arr) if arr.ndim else arr, allow_pickle=False)


_HEADER_BYTES = 1 << 16  # a member's first bytes, where its .npy header must end
_COMPRESSIONS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
_WEIGHT_DTYPES = (np.dtype("<f4"), np.dtype("<f8"))
_HALF = np.dtype("<f2")  # only in a file whose metadata says "storage": "float16"
_HALF_HINT = " (float16 only in a file saved with metadata storage='float16', which holds every weight so)"


@dataclasses.dataclass
class _Member:
    """One ``.npy`` member, known from the zip's directory and the member's first bytes only."""

    info: zipfile.ZipInfo
    name: str  # the file name without ".npy"
    shape: tuple
    fortran: bool
    dtype: np.dtype
    header: int  # bytes of the .npy header before the data
    start: int | None  # stored members: offset of the member's bytes in the file


def _parse_header(prefix: bytes, name: str, path) -> tuple[tuple, bool, np.dtype, int]:
    """(shape, fortran order, dtype, header length) of the .npy whose first bytes are ``prefix``."""
    head = io.BytesIO(prefix)
    try:
        version = np.lib.format.read_magic(head)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(head)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(head)
    except (ValueError, EOFError) as e:
        raise WeightsError(f"{path}: member {name} is not a valid .npy ({e})") from None
    if dtype.hasobject:
        raise WeightsError(f"{path}: member {name} holds Python objects; refusing to unpickle")
    if not all(isinstance(n, int) and n >= 0 for n in shape):
        raise WeightsError(f"{path}: member {name} has an invalid shape {shape}")
    return tuple(shape), fortran, dtype, head.tell()


def _headers(zf: zipfile.ZipFile, buf, path) -> dict[str, _Member]:
    """Every member's name, shape and dtype, reading no more than the header of each: only
    ``.npy`` members, each name once, stored or deflated."""
    out: dict[str, _Member] = {}
    for info in zf.infolist():
        if not info.filename.endswith(".npy"):
            raise WeightsError(f"{path}: unexpected member {info.filename} (an .npz holds .npy files)")
        name = info.filename[:-4]
        if name in out:
            raise WeightsError(f"{path}: member {info.filename} appears twice; refusing a file whose "
                               f"tensors are ambiguous (np.load would take the last one)")
        if info.compress_type not in _COMPRESSIONS:
            raise WeightsError(f"{path}: member {info.filename} uses zip compression method "
                               f"{info.compress_type}; supported: stored or deflate "
                               f"(np.savez, np.savez_compressed)")
        if info.flag_bits & 0x1:
            raise WeightsError(f"{path}: member {info.filename} is encrypted")
        start = None
        if info.compress_type == zipfile.ZIP_STORED:
            h = info.header_offset
            if buf[h:h + 4] != b"PK\x03\x04":
                raise WeightsError(f"{path}: bad local header for {info.filename}; the file is corrupt")
            n_name, n_extra = struct.unpack_from("<HH", buf, h + 26)
            start = h + 30 + n_name + n_extra
            if start + info.file_size > len(buf):
                raise WeightsError(f"{path}: member {info.filename} runs past the end; the file is truncated")
            prefix = buf[start:start + min(info.file_size, _HEADER_BYTES)]
        else:
            with zf.open(info) as m:  # inflates at most _HEADER_BYTES
                prefix = m.read(min(info.file_size, _HEADER_BYTES))
        out[name] = _Member(info, name, *_parse_header(prefix, name, path), start)
    return out


def _check_size(m: _Member, path) -> None:
    """The size the zip declares for ``m`` must be what its header describes."""
    described = m.header + math.prod(m.shape) * m.dtype.itemsize  # exact: no int64 wrap-around
    if described != m.info.file_size:
        raise WeightsError(f"{path}: member {m.name} holds {m.info.file_size} bytes, its header describes "
                           f"{described}; the file is corrupt or not a gpt2np model file")


def _read_hparams(zf, buf, members: dict[str, _Member], path, verify: bool) -> dict:
    """Take the ``hparams.*`` members out of ``members`` and return the checked hparams."""
    missing = [k for k in HPARAM_KEYS if _HP + k not in members]
    if missing:
        raise WeightsError(f"{path}: not a gpt2np model file (missing {', '.join(_HP + k for k in missing)})")
    extra = [name for name in members if name.startswith(_HP) and name[len(_HP):] not in HPARAM_KEYS]
    if extra:
        raise WeightsError(f"{path}: unknown hparams {', '.join(extra)}")
    values = {}
    for key in HPARAM_KEYS:
        m = members.pop(_HP + key)
        if m.shape != () or m.dtype.kind not in "iu":
            raise WeightsError(f"{path}: member {m.name} must be an integer scalar (an int64 .npy of shape ()), "
                               f"found {m.dtype} of shape {m.shape}")
        _check_size(m, path)
        values[key] = _data(zf, buf, m, path, verify)
    return check_hparams(values, str(path))


def _check_weights(members: dict[str, _Member], hparams: dict, path, storage: str | None = None) -> None:
    """Names, shapes and dtypes against hparams, before any weight is read.  With ``storage``
    "float16" every weight must be little-endian float16, and only then may one be."""
    per_layer = len(expected_shapes({**hparams, "n_layer": 2})) - len(expected_shapes({**hparams, "n_layer": 1}))
    if hparams["n_layer"] * per_layer > len(members):  # (and never build a billion expected names)
        raise WeightsError(f"{path}: hparams.n_layer={hparams['n_layer']} needs at least "
                           f"{hparams['n_layer'] * per_layer} tensors, the file has {len(members)}")
    check_flat(members, hparams, str(path))
    for name, m in members.items():
        if storage == "float16":
            if m.dtype != _HALF:
                raise WeightsError(f"{path}: {name} has dtype {m.dtype} ({m.dtype.str!r}), but the file's metadata "
                                   f"says storage float16: every weight must be little-endian float16 ('<f2')")
            continue
        if m.dtype in _WEIGHT_DTYPES:
            continue
        if m.dtype.kind == "f" and m.dtype.byteorder == ">":
            what = f"is big-endian {m.dtype.newbyteorder('=').name} ({m.dtype.str!r})"
        else:
            what = f"has dtype {m.dtype} ({m.dtype.str!r})"
        hint = _HALF_HINT if m.dtype == _HALF else ""
        raise WeightsError(f"{path}: {name} {what}; gpt2np model files hold float32 or float64 weights, "
                           f"little-endian ('<f4', '<f8'): convert with arr.astype(np.float32){hint}")
    for m in members.values():
        _check_size(m, path)


def _data(zf, buf, m: _Member, path, verify: bool) -> np.ndarray:
    """The array of member ``m`` (its size already checked by :func:`_check_size`)."""
    count = math.prod(m.shape)
    nbytes = count * m.dtype.itemsize
    if m.start is not None:  # stored: a view of the memory map
        if verify and zlib.crc32(memoryview(buf)[m.start:m.start + m.info.file_size]) != m.info.CRC:
            raise WeightsError(f"{path}: member {m.name} fails its CRC-32 check; the file is corrupt "
                               f"(delete it and convert or download again)")
        offset = m.start + m.header
        arr = np.frombuffer(buf, dtype=m.dtype, count=count, offset=offset) if nbytes else np.zeros(0, m.dtype)
        copy = offset % m.dtype.alignment != 0
    else:  # deflate: inflated into the array, 1 MiB at a time (zipfile checks the CRC at the end)
        arr = np.empty(count, dtype=m.dtype)
        out = memoryview(arr.reshape(-1).view(np.uint8)) if nbytes else memoryview(b"")
        with zf.open(m.info) as f:
            f.read(m.header)
            done = 0
            while done < nbytes:
                chunk = f.read(min(1 << 20, nbytes - done))
                if not chunk:
                    raise WeightsError(f"{path}: member {m.name} ends after {done} of {nbytes} bytes; "
                                       f"the file is truncated or corrupt")
                out[done:done + len(chunk)] = chunk
                done += len(chunk)
            f.read(1)  # reaches the end of the member: zipfile compares the CRC-32 there
        copy = False
    arr = arr.reshape(m.shape[::-1]).T if m.fortran else arr.reshape(m.shape)
    return arr.copy() if copy else arr


def _read_all(path: pathlib.Path, verify: bool) -> tuple[dict, dict]:
    """(hparams, flat arrays): every member's header, then the hparams, then the names, shapes
    and dtypes of the weights, and only then any weight's data."""
    with open(path, "rb") as f, zipfile.ZipFile(f) as zf:
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if path.stat().st_size else b""
        storage = _storage(_parse_comment(zf.comment), path)
        members = _headers(zf, buf, path)
        hparams = _read_hparams(zf, buf, members, path, verify)
        _check_weights(members, hparams, path, storage)
        arrays = {name: _data(zf, buf, m, path, verify) for name, m in members.items()}
        if storage == "float16":  # computed in float32: upcast once (half the file, twice the memory)
            arrays = {name: a.astype(np.float32) for name, a in arrays.items()}
        return hparams, arrays


def load_npz(path, verify: bool = True) -> tuple[dict, dict]:
    """``(hparams, params tree)`` from a file written by :func:`save_npz`.

    Arrays are read-only views of a memory map of the file (float dtypes kept as stored), except
    in a file stored as float16 (metadata ``"storage": "float16"``): its weights come back as
    float32 copies.  ``verify`` checks each member's CRC-32 recorded in the zip.
    """
    path = pathlib.Path(path)
    try:
        hparams, arrays = _read_all(path, verify)
    except FileNotFoundError:
        raise WeightsError(f"{path}: file not found") from None
    except zipfile.BadZipFile as e:
        if "CRC" in str(e) or "Bad magic" in str(e):  # zipfile's words for a corrupt member
            raise WeightsError(f"{path}: {e}; the file is corrupt (delete it and convert or download again)") from None
        raise WeightsError(f"{path}: not a readable .npz ({e}); the file is truncated or corrupt") from None
    except (EOFError, struct.error, zlib.error) as e:
        raise WeightsError(f"{path}: not a readable .npz ({e}); the file is truncated or corrupt") from None
    except ValueError as e:
        if isinstance(e, WeightsError):
            raise
        raise WeightsError(f"{path}: cannot read ({e})") from None
    return hparams, unflatten(arrays, hparams["n_layer"])
