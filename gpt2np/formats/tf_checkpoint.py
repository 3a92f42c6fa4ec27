"""Read a TensorFlow checkpoint V2 ("tensor bundle") with NumPy alone.

A bundle with prefix ``P`` is ``P.index`` (an SSTable: key ``""`` -> BundleHeaderProto,
tensor name -> BundleEntryProto) plus ``P.data-SSSSS-of-NNNNN`` shards holding the raw,
little-endian, C-order tensor bytes at ``entry.offset``.  Tensors come back as read-only
views of a memory map of the shard (no copy); every check of docs/formats.md §3.5 is made, and
the tensor CRC32C is verified unless ``verify=False``.
"""

from __future__ import annotations

import json
import mmap
import os
import pathlib
import re

import numpy as np

from .crc32c import crc32c, unmask
from .errors import WeightsError
from .names import check_hparams, from_tf_names
from .protobuf import parse_bundle_entry, parse_bundle_header

# DataType enum -> NumPy dtype (little-endian); BF16 (14) is read as uint16 and widened.
TF_DTYPES = {
    1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 8: "<c8", 9: "<i8", 10: "?",
    11: "i1", 12: "u1", 13: "<i4", 14: "<u2", 15: "<i2", 16: "<u2", 17: "<u2", 18: "<c16",
    19: "<f2", 22: "<u4", 23: "<u8",
}
TF_DTYPE_NAMES = {0: "DT_INVALID", 7: "DT_STRING", 20: "DT_RESOURCE", 21: "DT_VARIANT"}
DT_BFLOAT16 = 14


def bf16_to_f32(u16: np.ndarray) -> np.ndarray:
    """bfloat16 bits are the top half of a float32: widen by shifting left 16."""
    return (u16.astype(np.uint32) << np.uint32(16)).view(np.float32)


def find_prefix(path) -> pathlib.Path:
    """The bundle prefix ``<dir>/model.ckpt`` from a folder, an ``.index`` file or a prefix."""
    path = pathlib.Path(path)
    if path.is_dir():
        state = path / "checkpoint"
        if state.is_file():
            m = re.search(r'model_checkpoint_path:\s*"([^"]*)"', state.read_text(errors="replace"))
            if m:
                named = pathlib.Path(m.group(1))
                # TF records absolute paths; the folder we were given wins (it may be a copy or moved)
                for prefix in (path / named.name, named if named.is_absolute() else path / named):
                    if prefix.with_name(prefix.name + ".index").is_file():
                        return prefix
        indexes = sorted(path.glob("*.index"))
        if len(indexes) == 1:
            return indexes[0].with_suffix("")
        if not indexes:
            raise WeightsError(f"{path}: no TensorFlow checkpoint here (no *.index file)")
        raise WeightsError(f"{path}: several checkpoints ({', '.join(p.name for p in indexes)}); "
                           f"pass the prefix, e.g. {indexes[0].with_suffix('')}")
    if path.suffix == ".index" and path.is_file():
        return path.with_suffix("")
    if path.with_name(path.name + ".index").is_file():
        return path
    raise WeightsError(f"{path}: not a TensorFlow checkpoint folder, .index file or prefix")


def _map_file(path: pathlib.Path):
    """A read-only memory map of a whole file (a plain empty bytes for an empty file)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""


def read_bundle(prefix, verify: bool = True) -> dict[str, np.ndarray]:
    """All tensors of the bundle ``prefix`` as ``{name: array}`` (read-only views of the shards)."""
    from .sstable import read_table  # local: keeps module import light

    prefix = pathlib.Path(prefix)
    index_path = prefix.with_name(prefix.name + ".index")
    try:
        table = read_table(index_path.read_bytes(), what=str(index_path))
    except FileNotFoundError:
        raise WeightsError(f"{index_path}: file not found") from None
    if b"" not in table:
        raise WeightsError(f"{index_path}: no bundle header (key \"\") in the index")
    header = parse_bundle_header(table.pop(b""))
    n_shards, version = header["num_shards"], header["version"]
    if n_shards < 1:
        raise WeightsError(f"{index_path}: num_shards={n_shards}, expected at least 1")
    if version["min_consumer"] > 1 or 1 in version["bad_consumers"]:
        raise WeightsError(f"{index_path}: bundle version {version} is too new for this reader")
    if header["endianness"] not in (0, 1):
        raise WeightsError(f"{index_path}: unknown endianness {header['endianness']}")
    order = "<" if header["endianness"] == 0 else ">"

    shards: dict[int, object] = {}
    tensors = {}
    for key, value in table.items():
        try:
            name = key.decode("utf-8")
        except UnicodeDecodeError:
            raise WeightsError(f"{index_path}: tensor name {key!r} is not UTF-8") from None
        e = parse_bundle_entry(value, name)
        if e["slices"]:
            raise NotImplementedError(f"{index_path}: {name} is a partitioned (sliced) tensor; not supported")
        if e["dtype"] not in TF_DTYPES:
            label = TF_DTYPE_NAMES.get(e["dtype"], f"DataType {e['dtype']}")
            raise WeightsError(f"{index_path}: {name} has unsupported dtype {label} "
                               f"(supported: numeric DataTypes {sorted(TF_DTYPES)})")
        dtype = np.dtype(TF_DTYPES[e["dtype"]]).newbyteorder(order)
        shape, off, size, sid = e["shape"], e["offset"], e["size"], e["shard_id"]
        if not 0 <= sid < n_shards:
            raise WeightsError(f"{index_path}: {name} is in shard {sid}, but the bundle has {n_shards} shard(s)")
        count = int(np.prod(shape, dtype=np.int64))
        if size != count * dtype.itemsize:
            raise WeightsError(f"{index_path}: {name}: size {size} bytes does not match shape {shape} "
                               f"x {dtype.itemsize} bytes = {count * dtype.itemsize}")
        if sid not in shards:
            data_path = prefix.with_name(f"{prefix.name}.data-{sid:05d}-of-{n_shards:05d}")
            if not data_path.is_file():
                raise WeightsError(f"{data_path}: data file not found")
            shards[sid] = (data_path, _map_file(data_path))
        data_path, buf = shards[sid]
        if off < 0 or off + size > len(buf):
            raise WeightsError(f"{data_path}: {name} needs bytes [{off}, {off + size}) but the file has "
                               f"{len(buf)} bytes; the file is truncated or not this checkpoint's")
        raw = np.frombuffer(buf, dtype=np.uint8, count=size, offset=off) if size else np.zeros(0, np.uint8)
        if verify:
            if e["crc32c"] is None:
                raise WeightsError(f"{index_path}: {name} has no crc32c to verify (use verify=False to skip)")
            actual = crc32c(raw)
            if actual != unmask(e["crc32c"]):
                raise WeightsError(f"{data_path}: tensor {name} fails its CRC32C check "
                                   f"(stored {unmask(e['crc32c']):#010x}, computed {actual:#010x}); "
                                   f"the file is corrupt - delete it and download again")
        arr = raw.view(dtype).reshape(shape)
        if e["dtype"] == DT_BFLOAT16:
            arr = bf16_to_f32(arr.astype("<u2"))
        elif order == ">":
            arr = arr.astype(dtype.newbyteorder("<"))
        tensors[name] = arr
    return tensors


def read_hparams_json(path) -> dict:
    path = pathlib.Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return check_hparams(json.load(f), str(path))
    except FileNotFoundError:
        raise WeightsError(f"{path}: file not found (a GPT-2 checkpoint folder has hparams.json)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WeightsError(f"{path}: not valid JSON ({e})") from None


def read_tf_checkpoint(folder, verify: bool = True) -> tuple[dict, dict]:
    """OpenAI's GPT-2 checkpoint folder -> ``(hparams, params tree)``.

    ``folder`` holds ``hparams.json`` and ``model.ckpt.{index,data-00000-of-00001}`` (the
    ``checkpoint`` state file names the prefix).  The tensor names must be exactly OpenAI's
    (``model/wte``, ``model/h<i>/attn/c_attn/w``, ...) with shapes that agree with hparams;
    the arrays are float32 read-only views of the memory-mapped data file.
    ``verify=True`` checks every tensor's CRC32C (about 5 s for 124M; index CRCs are always checked).
    """
    folder = pathlib.Path(folder)
    prefix = find_prefix(folder)
    hparams = read_hparams_json(prefix.parent / "hparams.json")
    tensors = read_bundle(prefix, verify=verify)
    params = from_tf_names(tensors, hparams, str(prefix))  # names and shapes first: clearer errors
    for name, arr in tensors.items():
        if arr.dtype != np.float32:
            raise WeightsError(f"{prefix}: {name} has dtype {arr.dtype}, GPT-2 weights are float32")
    return hparams, params
