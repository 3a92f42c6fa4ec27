"""The ``.index`` file of a TensorFlow checkpoint: a LevelDB-style SSTable (string -> string map).

Layout (TF writes no filter blocks and no compression)::

    [data block][trailer] ... [metaindex block][trailer] [index block][trailer] [footer: 48 bytes]

- footer: two block handles (varint64 offset, varint64 size) padded to 40 bytes, then the
  magic 0xDB4775248B80FB57 as a fixed64 (bytes ``57 FB 80 8B 24 75 47 DB``);
- trailer (5 bytes): compression type (0 = none) and the masked CRC32C of contents + type byte;
- block: prefix-compressed entries ``shared, non_shared, value_len (varint32), key_delta, value``,
  then ``restarts: fixed32[num_restarts]``, ``num_restarts: fixed32``;
- the index block maps a separator key per data block to that block's handle.
"""

from __future__ import annotations

import struct

from .crc32c import crc32c_serial, crc32c, unmask
from .errors import WeightsError
from .protobuf import read_varint

FOOTER_SIZE = 48
MAGIC = bytes.fromhex("57fb808b247547db")
TRAILER_SIZE = 5


def _handle(buf: bytes, pos: int, end: int, what: str) -> tuple[int, int, int]:
    """Decode a BlockHandle (offset, size) at ``pos``; returns (offset, size, new_pos)."""
    try:
        off, pos = read_varint(buf, pos, end)
        size, pos = read_varint(buf, pos, end)
    except WeightsError as e:
        raise WeightsError(f"{what}: bad block handle ({e})") from None
    return off, size, pos


def read_block(data: bytes, offset: int, size: int, what: str) -> bytes:
    """Return a block's contents after checking its bounds, trailer type and CRC."""
    if offset < 0 or size < 0 or offset + size + TRAILER_SIZE > len(data):
        raise WeightsError(f"{what}: block ({offset}, {size}) runs past the end of the file ({len(data)} bytes)")
    ctype = data[offset + size]
    if ctype == 1:
        raise WeightsError(f"{what}: Snappy-compressed block (TF has not written these since TF 1.2); not supported")
    if ctype != 0:
        raise WeightsError(f"{what}: unknown block compression type {ctype} at offset {offset}")
    stored = struct.unpack_from("<I", data, offset + size + 1)[0]
    span = data[offset:offset + size + 1]  # contents || type byte
    actual = crc32c_serial(span) if size < 65536 else crc32c(span)
    if unmask(stored) != actual:
        raise WeightsError(f"{what}: block CRC mismatch at offset {offset} "
                           f"(stored {unmask(stored):#010x}, computed {actual:#010x}); the file is corrupt")
    return data[offset:offset + size]


def iter_block(block: bytes, what: str):
    """Yield ``(key, value)`` of a block, rebuilding prefix-compressed keys with bounds checks."""
    n = len(block)
    if n < 4:
        raise WeightsError(f"{what}: block of {n} bytes is too short for its restart count")
    num_restarts = struct.unpack_from("<I", block, n - 4)[0]
    if num_restarts > (n - 4) // 4:
        raise WeightsError(f"{what}: {num_restarts} restart points do not fit in a block of {n} bytes")
    limit = n - 4 - 4 * num_restarts  # entries end where the restart array starts
    restarts = set(struct.unpack_from(f"<{num_restarts}I", block, limit))
    pos, prev = 0, b""
    while pos < limit:
        start = pos
        shared, pos = read_varint(block, pos, limit, 5)
        non_shared, pos = read_varint(block, pos, limit, 5)
        vlen, pos = read_varint(block, pos, limit, 5)
        if start in restarts and shared != 0:
            raise WeightsError(f"{what}: entry at restart point {start} shares {shared} key bytes")
        if shared > len(prev):
            raise WeightsError(f"{what}: entry at {start} shares {shared} bytes of a {len(prev)}-byte key")
        if pos + non_shared + vlen > limit:
            raise WeightsError(f"{what}: entry at {start} runs into the restart array")
        key = prev[:shared] + block[pos:pos + non_shared]
        pos += non_shared
        yield key, block[pos:pos + vlen]
        pos += vlen
        prev = key


def read_table(data: bytes, what: str = "index") -> dict[bytes, bytes]:
    """Read a whole SSTable into ``{key: value}``; every block CRC is checked, keys must increase."""
    if len(data) < FOOTER_SIZE:
        raise WeightsError(f"{what}: {len(data)} bytes is too short for an SSTable (footer is {FOOTER_SIZE} bytes)")
    footer_at = len(data) - FOOTER_SIZE
    if data[footer_at + 40:] != MAGIC:
        raise WeightsError(f"{what}: bad magic {data[footer_at + 40:].hex()} "
                           f"(expected {MAGIC.hex()}); not a TensorFlow checkpoint index")
    _, _, pos = _handle(data, footer_at, footer_at + 40, what)  # metaindex: unused (no filters)
    index_off, index_size, _ = _handle(data, pos, footer_at + 40, what)
    index = read_block(data, index_off, index_size, what + " (index block)")
    table: dict[bytes, bytes] = {}
    last = None
    for sep, handle in iter_block(index, what + " (index block)"):
        off, size, _ = _handle(handle, 0, len(handle), what)
        block = read_block(data, off, size, what + " (data block)")
        for key, value in iter_block(block, what + " (data block)"):
            if last is not None and key <= last:
                raise WeightsError(f"{what}: keys out of order ({last!r} then {key!r})")
            if key > sep:
                raise WeightsError(f"{what}: key {key!r} is past its block's separator {sep!r}")
            table[key] = value
            last = key
    return table
