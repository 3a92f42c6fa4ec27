"""A minimal TensorFlow-bundle *writer* for tests and benchmarks, checked against TensorFlow's bytes.

The package only reads checkpoints.  To build corrupted or unusual checkpoints (unknown dtypes,
slices, several shards, big-endian headers) and full-size random ones for benchmarks, this
module encodes bundles the way TF's BundleWriter does.  ``test_writer_reproduces_tensorflow``
proves it by re-encoding the committed fixture, which TensorFlow wrote, byte for byte.
"""

from __future__ import annotations

import pathlib
import struct

import numpy as np

from gpt2np.formats.crc32c import crc32c, mask

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "tf_tiny"

NP_TO_TF = {"<f4": 1, "<f8": 2, "<i4": 3, "|u1": 4, "<i2": 5, "|i1": 6, "<c8": 8, "<i8": 9, "|b1": 10,
            "<u2": 17, "<c16": 18, "<f2": 19, "<u4": 22, "<u8": 23}


def varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(num: int, wt: int, value) -> bytes:
    tag = varint(num << 3 | wt)
    if wt == 0:
        return tag + varint(value)
    if wt == 2:
        return tag + varint(len(value)) + value
    if wt == 5:
        return tag + struct.pack("<I", value)
    raise ValueError(wt)


def entry_proto(dtype: int, shape, offset: int, size: int, crc: int | None, shard_id: int = 0,
                slices: int = 0) -> bytes:
    """BundleEntryProto with proto3 rules: fields at their default value are omitted."""
    shape_msg = b"".join(field(2, 2, field(1, 0, d) if d else b"") for d in shape)
    out = (field(1, 0, dtype) if dtype else b"") + field(2, 2, shape_msg)
    out += field(3, 0, shard_id) if shard_id else b""
    out += field(4, 0, offset) if offset else b""
    out += field(5, 0, size) if size else b""
    out += field(6, 5, crc) if crc is not None else b""
    out += b"".join(field(7, 2, field(1, 2, field(1, 0, 0) + field(2, 0, 1))) for _ in range(slices))
    return out


def header_proto(num_shards=1, endianness=0, producer=1, min_consumer=0, bad_consumers=()) -> bytes:
    version = field(1, 0, producer) if producer else b""
    version += field(2, 0, min_consumer) if min_consumer else b""
    version += b"".join(field(3, 0, b) for b in bad_consumers)
    out = field(1, 0, num_shards) if num_shards else b""
    out += field(2, 0, endianness) if endianness else b""
    return out + field(3, 2, version)


def block(items, restart_interval: int) -> bytes:
    """Prefix-compressed entries + restart array + count (LevelDB BlockBuilder)."""
    out, restarts, prev = bytearray(), [], b""
    for i, (key, value) in enumerate(items):
        shared = 0
        if i % restart_interval == 0:
            restarts.append(len(out))
        else:
            while shared < min(len(prev), len(key)) and prev[shared] == key[shared]:
                shared += 1
        out += varint(shared) + varint(len(key) - shared) + varint(len(value)) + key[shared:] + value
        prev = key
    restarts = restarts or [0]
    return bytes(out) + struct.pack(f"<{len(restarts)}I", *restarts) + struct.pack("<I", len(restarts))


def with_trailer(contents: bytes) -> bytes:
    return contents + b"\x00" + struct.pack("<I", mask(crc32c(contents + b"\x00")))


def short_successor(key: bytes) -> bytes:
    for i, b in enumerate(key):
        if b != 0xFF:
            return key[:i] + bytes([b + 1])
    return key


def sstable(items) -> bytes:
    """One data block (fine below 256 KiB, like every GPT-2 index), empty metaindex, index, footer."""
    data = block(items, 16)
    out = with_trailer(data)
    meta_handle = varint(len(out)) + varint(8)
    out += with_trailer(block([], 1))
    index_handle = varint(len(out))
    index = block([(short_successor(items[-1][0]), varint(0) + varint(len(data)))], 1)
    index_handle += varint(len(index))
    out += with_trailer(index)
    footer = meta_handle + index_handle
    return out + footer + b"\x00" * (40 - len(footer)) + bytes.fromhex("57fb808b247547db")


def write_bundle(prefix, tensors: dict, dtype_override: dict | None = None, endianness: int = 0,
                 header: bytes | None = None, entry_edit=None) -> None:
    """Write ``{name: array}`` as a TF bundle at ``prefix`` (data in sorted-name order, like TF 2.x).

    ``entry_edit(name, fields: dict) -> dict`` may change an entry's fields before encoding.
    """
    prefix = pathlib.Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    items = [(b"", header if header is not None else header_proto(endianness=endianness))]
    offset = 0
    with open(f"{prefix}.data-00000-of-00001", "wb") as f:
        for name in sorted(tensors, key=lambda s: s.encode()):
            arr = np.ascontiguousarray(tensors[name])
            code = NP_TO_TF[arr.dtype.newbyteorder("<").str]
            if endianness:
                arr = arr.astype(arr.dtype.newbyteorder(">"))
            raw = arr.tobytes()
            fields = dict(dtype=(dtype_override or {}).get(name, code), shape=arr.shape, offset=offset,
                          size=len(raw), crc=mask(crc32c(raw)))
            if entry_edit:
                fields = entry_edit(name, fields)
            items.append((name.encode(), entry_proto(**fields)))
            f.write(raw)
            offset += len(raw)
    pathlib.Path(f"{prefix}.index").write_bytes(sstable(items))


def test_writer_reproduces_tensorflow(tmp_path):
    """Re-encoding TF's own GPT-2 fixture gives TF's exact bytes, index and data."""
    expected = dict(np.load(FIXTURES / "gpt2_expected.npz"))
    write_bundle(tmp_path / "model.ckpt", expected)
    for suffix in (".index", ".data-00000-of-00001"):
        assert (tmp_path / f"model.ckpt{suffix}").read_bytes() == (FIXTURES / "gpt2" / f"model.ckpt{suffix}").read_bytes()


def test_varint_and_sstable_helpers():
    assert varint(300) == b"\xac\x02"
    assert varint(-1) == b"\xff" * 9 + b"\x01"
    assert short_successor(b"model/wte") == b"n"
    assert block([], 1) == bytes.fromhex("0000000001000000")
