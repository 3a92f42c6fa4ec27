"""CRC32C (Castagnoli), the checksum of TensorFlow checkpoints, in NumPy.

CRC-32C uses the reflected polynomial 0x82F63B78 with initial value and final
XOR 0xFFFFFFFF.  It is *not* ``zlib.crc32`` (that one is CRC-32/IEEE).

Two implementations:

- :func:`crc32c_serial`, the textbook byte-at-a-time table loop
  (``crc = T[(crc ^ byte) & 0xFF] ^ (crc >> 8)``); a few MB/s in Python,
  used for small inputs and as the reference in tests.
- :func:`crc32c`, "lanes + combine": the input is cut into ``K`` equal chunks
  whose CRCs are computed *simultaneously* (one NumPy step advances all ``K``
  registers by one byte), then the chunk CRCs are joined with the identity
  ``crc(A || B) = Z_len(B)(crc(A)) ^ crc(B)``, where ``Z_n`` pushes a register
  through ``n`` zero bytes.  ``Z_n`` is linear over GF(2), so it is stored as
  the images of the 32 one-bit registers (a 32x32 bit matrix) and applied by
  XOR-ing the columns of the set bits.

Stored checksums (SSTable block trailers, ``BundleEntryProto.crc32c``) are
*masked*: :func:`mask` / :func:`unmask`.
"""

from __future__ import annotations

import functools

import numpy as np

POLY = 0x82F63B78
MASK_DELTA = 0xA282EAD8
_M32 = 0xFFFFFFFF

LANES = 1 << 18  # K at most: registers advanced together; a power of two for the tree fold
BLOCK = 1 << 25  # bytes handled per lanes pass (bounds the transposed copy to 32 MiB)
SERIAL_BELOW = 4096  # shorter inputs go byte by byte (under a millisecond)


def _make_table() -> np.ndarray:
    """T[i] = i pushed through 8 one-bit steps of the reflected CRC register."""
    t = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t = np.where(t & 1, (t >> 1) ^ np.uint32(POLY), t >> 1).astype(np.uint32)
    return t


TABLE = _make_table()
_TABLE_LIST = [int(v) for v in TABLE]


def _as_bytes_array(data) -> np.ndarray:
    """Any bytes-like object or array -> flat uint8 view (no copy when possible)."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)


def crc32c_serial(data, crc: int = 0) -> int:
    """Byte-at-a-time CRC32C; ``crc`` continues a previous result (0 to start)."""
    c = crc ^ _M32
    t = _TABLE_LIST
    for b in bytes(_as_bytes_array(data)):
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ _M32


# ---- the zero-byte operator Z_n as a 32x32 GF(2) matrix --------------------------
# A matrix is a uint32 array of 32 columns: column k is the image of register 1 << k.

def _apply(mat: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Z(v) for an array of registers ``v`` (uint32, any shape): XOR of the columns of set bits."""
    v = np.asarray(v, dtype=np.uint32)
    out = np.zeros_like(v)
    for k in range(32):
        out ^= np.where((v >> np.uint32(k)) & np.uint32(1), mat[k], np.uint32(0)).astype(np.uint32)
    return out


def _one_zero_byte() -> np.ndarray:
    r = np.uint32(1) << np.arange(32, dtype=np.uint32)
    return TABLE[r & 0xFF] ^ (r >> np.uint32(8))


@functools.lru_cache(maxsize=64)
def _zeros_operator(n: int) -> np.ndarray:
    """Columns of Z_n (square-and-multiply over powers of two of the one-byte step)."""
    result = np.uint32(1) << np.arange(32, dtype=np.uint32)  # identity
    power = _one_zero_byte()
    while n:
        if n & 1:
            result = _apply(power, result)  # Z_power o Z_result (they commute)
        n >>= 1
        if n:
            power = _apply(power, power)
    return result


def crc32c_combine(crc_a: int, crc_b: int, len_b: int) -> int:
    """CRC of ``A || B`` from ``crc(A)``, ``crc(B)`` and ``len(B)``."""
    if len_b == 0:
        return crc_a
    return int(_apply(_zeros_operator(len_b), np.uint32(crc_a))) ^ crc_b


def _lanes_crc(chunk: np.ndarray, lanes: int) -> int:
    """CRC32C of ``chunk`` (uint8, length a multiple of ``lanes``) by ``lanes`` parallel registers."""
    m = chunk.size // lanes
    cols = chunk.reshape(lanes, m).T.copy()  # [m, K]: row j = byte j of every lane, contiguous
    state = np.full(lanes, _M32, dtype=np.uint32)
    low = np.empty(lanes, dtype=np.uint8)
    for j in range(m):
        np.bitwise_xor(state.astype(np.uint8), cols[j], out=low)  # (state ^ byte) & 0xFF
        state >>= np.uint32(8)
        state ^= TABLE[low]
    state ^= np.uint32(_M32)
    # tree fold: neighbours (A, B) of equal length n -> Z_n(crc A) ^ crc B
    n = m
    while state.size > 1:
        state = _apply(_zeros_operator(n), state[0::2]) ^ state[1::2]
        n *= 2
    return int(state[0])


def crc32c(data, crc: int = 0) -> int:
    """CRC32C of a bytes-like object or array, fast for large inputs (lanes + combine).

    ``crc`` continues a previous result, so ``crc32c(b, crc32c(a)) == crc32c(a + b)``.
    """
    buf = _as_bytes_array(data)
    n = buf.size
    if n < SERIAL_BELOW:
        return crc32c_serial(buf, crc)
    # K lanes: a power of two with at least 64 bytes per lane (fewer, longer steps cost more)
    lanes = min(LANES, 1 << ((n // 64).bit_length() - 1))
    pos = 0
    while n - pos >= lanes:
        take = min(max(BLOCK // lanes, 1) * lanes, (n - pos) // lanes * lanes)
        crc = crc32c_combine(crc, _lanes_crc(buf[pos:pos + take], lanes), take)
        pos += take
    if pos < n:  # the tail (< lanes bytes) with fewer lanes, down to a short serial rest
        crc = crc32c(buf[pos:], crc)
    return crc


def mask(crc: int) -> int:
    """LevelDB/TF masking of a stored CRC: rotate right by 15, add 0xA282EAD8."""
    crc &= _M32
    return ((((crc >> 15) | (crc << 17)) & _M32) + MASK_DELTA) & _M32


def unmask(masked: int) -> int:
    """Inverse of :func:`mask`."""
    r = (masked - MASK_DELTA) & _M32
    return ((r >> 17) | (r << 15)) & _M32
