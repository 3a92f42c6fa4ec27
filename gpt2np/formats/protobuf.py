"""A minimal protobuf wire-format decoder, and the three TensorFlow messages a bundle needs.

Wire format: a message is a sequence of ``tag value`` pairs, ``tag = varint(field << 3 | wire_type)``.
Wire types: 0 varint, 1 fixed64, 2 length-delimited (varint length + bytes), 5 fixed32.
Groups (3, 4) are not used by these messages and are refused.  proto3 omits fields
that hold their default value, so every field has a default here.
"""

from __future__ import annotations

import struct

from .errors import WeightsError


def read_varint(buf: bytes, pos: int, end: int | None = None, max_bytes: int = 10) -> tuple[int, int]:
    """Decode a LEB128 varint at ``buf[pos]``: 7 bits per byte, low group first, 0x80 = more.

    Returns ``(value, new_pos)``; raises WeightsError if it runs past ``end`` or is too long.
    """
    end = len(buf) if end is None else end
    value = shift = 0
    for i in range(max_bytes):
        if pos + i >= end:
            raise WeightsError(f"truncated varint at byte {pos}")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos + i + 1
        shift += 7
    raise WeightsError(f"varint longer than {max_bytes} bytes at byte {pos}")


def to_int64(v: int) -> int:
    """Protobuf int64/int32 negatives arrive as 64-bit two's complement."""
    return v - (1 << 64) if v >= 1 << 63 else v


def iter_fields(buf: bytes, what: str):
    """Yield ``(field_number, wire_type, value)``; value is an int, or bytes for wire type 2."""
    pos, end = 0, len(buf)
    while pos < end:
        tag, pos = read_varint(buf, pos, end)
        field, wt = tag >> 3, tag & 7
        if field == 0:
            raise WeightsError(f"{what}: field number 0 in protobuf message")
        if wt == 0:
            value, pos = read_varint(buf, pos, end)
        elif wt == 1:
            if pos + 8 > end:
                raise WeightsError(f"{what}: truncated fixed64 field {field}")
            value = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wt == 5:
            if pos + 4 > end:
                raise WeightsError(f"{what}: truncated fixed32 field {field}")
            value = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        elif wt == 2:
            length, pos = read_varint(buf, pos, end)
            if pos + length > end:
                raise WeightsError(f"{what}: field {field} claims {length} bytes, only {end - pos} left")
            value = bytes(buf[pos:pos + length])
            pos += length
        else:
            raise WeightsError(f"{what}: unsupported protobuf wire type {wt} (field {field})")
        yield field, wt, value


def _expect(wt: int, want: int, what: str, name: str) -> None:
    if wt != want:
        raise WeightsError(f"{what}: field {name} has wire type {wt}, expected {want}")


def parse_version_def(buf: bytes, what: str = "VersionDef") -> dict:
    """VersionDef: 1 producer, 2 min_consumer, 3 bad_consumers (repeated int32, packed or not)."""
    out = {"producer": 0, "min_consumer": 0, "bad_consumers": []}
    for field, wt, value in iter_fields(buf, what):
        if field in (1, 2):
            name = ("producer", "min_consumer")[field - 1]
            _expect(wt, 0, what, name)
            out[name] = to_int64(value)
        elif field == 3:
            if wt == 0:
                out["bad_consumers"].append(to_int64(value))
            elif wt == 2:  # packed
                pos = 0
                while pos < len(value):
                    v, pos = read_varint(value, pos)
                    out["bad_consumers"].append(to_int64(v))
            else:
                raise WeightsError(f"{what}: bad wire type {wt} for bad_consumers")
    return out


def parse_bundle_header(buf: bytes) -> dict:
    """BundleHeaderProto: 1 num_shards, 2 endianness (0 LITTLE, 1 BIG), 3 version (VersionDef)."""
    what = "BundleHeaderProto"
    out = {"num_shards": 0, "endianness": 0, "version": parse_version_def(b"")}
    for field, wt, value in iter_fields(buf, what):
        if field == 1:
            _expect(wt, 0, what, "num_shards")
            out["num_shards"] = to_int64(value)
        elif field == 2:
            _expect(wt, 0, what, "endianness")
            out["endianness"] = value
        elif field == 3:
            _expect(wt, 2, what, "version")
            out["version"] = parse_version_def(value)
    return out


def parse_tensor_shape(buf: bytes, what: str = "TensorShapeProto") -> tuple[int, ...]:
    """TensorShapeProto: 2 dim (repeated Dim{1 size, 2 name}), 3 unknown_rank.  Dims outermost first."""
    dims = []
    for field, wt, value in iter_fields(buf, what):
        if field == 2:
            _expect(wt, 2, what, "dim")
            size = 0
            for f2, wt2, v2 in iter_fields(value, what + ".Dim"):
                if f2 == 1:
                    _expect(wt2, 0, what, "dim.size")
                    size = to_int64(v2)
            dims.append(size)
        elif field == 3:
            _expect(wt, 0, what, "unknown_rank")
            if value:
                raise WeightsError(f"{what}: tensor has unknown rank")
    if any(d < 0 for d in dims):
        raise WeightsError(f"{what}: unknown (negative) dimension in shape {dims}")
    return tuple(dims)


def parse_bundle_entry(buf: bytes, name: str = "?") -> dict:
    """BundleEntryProto: 1 dtype, 2 shape, 3 shard_id, 4 offset, 5 size, 6 crc32c (fixed32), 7 slices."""
    what = f"BundleEntryProto of {name!r}"
    out = {"dtype": 0, "shape": (), "shard_id": 0, "offset": 0, "size": 0, "crc32c": None, "slices": 0}
    for field, wt, value in iter_fields(buf, what):
        if field == 1:
            _expect(wt, 0, what, "dtype")
            out["dtype"] = value
        elif field == 2:
            _expect(wt, 2, what, "shape")
            out["shape"] = parse_tensor_shape(value, what + ".shape")
        elif field in (3, 4, 5):
            _expect(wt, 0, what, ("shard_id", "offset", "size")[field - 3])
            out[("shard_id", "offset", "size")[field - 3]] = to_int64(value)
        elif field == 6:
            _expect(wt, 5, what, "crc32c")
            out["crc32c"] = value
        elif field == 7:
            out["slices"] += 1
    return out
