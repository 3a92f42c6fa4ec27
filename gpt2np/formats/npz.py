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
"""

from __future__ import annotations

import io
import mmap
import pathlib
import struct
import zipfile
import zlib

import numpy as np

from .atomic import atomic_write
from .errors import WeightsError
from .names import HPARAM_KEYS, check_flat, check_hparams, flatten, unflatten

_HP = "hparams."
ALIGN = 64
_PAD_ID = 0xD935  # zip "extra field" id used for alignment padding


def save_npz(path, hparams: dict, params: dict) -> None:
    """Write ``params`` and ``hparams`` to ``path`` atomically (temp file + ``os.replace``)."""
    hparams = check_hparams(hparams, "save_npz")
    flat = flatten(params)
    check_flat(flat, hparams, "save_npz")
    arrays = {name: np.asarray(a) for name, a in flat.items()}
    arrays.update({_HP + k: np.array(v, dtype=np.int64) for k, v in hparams.items()})
    with atomic_write(path) as f:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, arr in arrays.items():
                _write_member(zf, f, name + ".npy", arr)


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


def _read_member(buf, data_start: int, size: int, name: str, path) -> np.ndarray:
    """A view of the .npy stored at ``buf[data_start : data_start + size]``."""
    head = io.BytesIO(buf[data_start:data_start + min(size, 1 << 16)])
    try:
        version = np.lib.format.read_magic(head)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(head)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(head)
    except ValueError as e:
        raise WeightsError(f"{path}: member {name} is not a valid .npy ({e})") from None
    if dtype.hasobject:
        raise WeightsError(f"{path}: member {name} holds Python objects; refusing to unpickle")
    offset = data_start + head.tell()
    count = int(np.prod(shape, dtype=np.int64))
    if head.tell() + count * dtype.itemsize != size:
        raise WeightsError(f"{path}: member {name} has {size} bytes, its header describes "
                           f"{head.tell() + count * dtype.itemsize}")
    arr = np.frombuffer(buf, dtype=dtype, count=count, offset=offset)
    arr = arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)
    return arr if offset % dtype.alignment == 0 else arr.copy()


def _read_all(path: pathlib.Path, verify: bool) -> dict:
    with open(path, "rb") as f, zipfile.ZipFile(f) as zf:
        infos = zf.infolist()
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if path.stat().st_size else b""
        out = {}
        for info in infos:
            if not info.filename.endswith(".npy"):
                raise WeightsError(f"{path}: unexpected member {info.filename} (an .npz holds .npy files)")
            name = info.filename[:-4]
            if info.compress_type != zipfile.ZIP_STORED:  # e.g. np.savez_compressed: decompress (a copy)
                with zf.open(info) as m:  # zipfile checks the CRC at the end of the stream
                    out[name] = np.lib.format.read_array(m, allow_pickle=False)
                continue
            h = info.header_offset
            if buf[h:h + 4] != b"PK\x03\x04":
                raise WeightsError(f"{path}: bad local header for {info.filename}; the file is corrupt")
            n_name, n_extra = struct.unpack_from("<HH", buf, h + 26)
            start = h + 30 + n_name + n_extra
            if start + info.file_size > len(buf):
                raise WeightsError(f"{path}: member {info.filename} runs past the end; the file is truncated")
            if verify and zlib.crc32(memoryview(buf)[start:start + info.file_size]) != info.CRC:
                raise WeightsError(f"{path}: member {name} fails its CRC-32 check; the file is corrupt "
                                   f"(delete it and convert or download again)")
            out[name] = _read_member(buf, start, info.file_size, name, path)
        return out


def load_npz(path, verify: bool = True) -> tuple[dict, dict]:
    """``(hparams, params tree)`` from a file written by :func:`save_npz`.

    Arrays are read-only views of a memory map of the file (float dtypes kept as stored).
    ``verify`` checks each member's CRC-32 recorded in the zip.
    """
    path = pathlib.Path(path)
    try:
        arrays = _read_all(path, verify)
    except FileNotFoundError:
        raise WeightsError(f"{path}: file not found") from None
    except (zipfile.BadZipFile, EOFError, struct.error) as e:
        raise WeightsError(f"{path}: not a readable .npz ({e}); the file is truncated or corrupt") from None
    except ValueError as e:
        if isinstance(e, WeightsError):
            raise
        raise WeightsError(f"{path}: cannot read ({e})") from None
    missing = [k for k in HPARAM_KEYS if _HP + k not in arrays]
    if missing:
        raise WeightsError(f"{path}: not a gpt2np model file (missing {', '.join(_HP + k for k in missing)})")
    hparams = check_hparams({k: arrays.pop(_HP + k) for k in HPARAM_KEYS}, str(path))
    extra_hp = [k for k in arrays if k.startswith(_HP)]
    if extra_hp:
        raise WeightsError(f"{path}: unknown hparams {', '.join(extra_hp)}")
    check_flat(arrays, hparams, str(path))
    for name, arr in arrays.items():
        if arr.dtype.kind != "f":
            raise WeightsError(f"{path}: {name} has dtype {arr.dtype}, expected a float dtype")
    return hparams, unflatten(arrays, hparams["n_layer"])
