"""Crafted and broken weight files: one clear WeightsError, memory bounded, never a traceback.

Each file here is built by hand (``zipfile`` and ``struct``), the way someone crafting a file
would: headers that claim far more than the file holds, members that inflate, duplicate
names, integer overflows, nesting that exhausts a recursive parser.
"""

from __future__ import annotations

import io
import json
import re
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest

from gpt2np.formats import WeightsError, flatten, load_npz, read_safetensors, read_tf_checkpoint, save_npz

from helpers import TF_TINY, TINY_HP


def tiny():
    return read_tf_checkpoint(TF_TINY / "gpt2")


def npy_header(dtype: str, shape: tuple) -> bytes:
    """The bytes ``np.save`` writes before an array's data (version 1.0)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def members(hp=TINY_HP, params=None, skip=()) -> dict[str, bytes]:
    """name.npy -> the .npy bytes of a valid tiny model file."""
    params = tiny()[1] if params is None else params
    arrays = {**flatten(params), **{f"hparams.{k}": np.int64(v) for k, v in hp.items()}}
    out = {}
    for name, arr in arrays.items():
        if name in skip:
            continue
        buf = io.BytesIO()
        np.save(buf, np.asarray(arr), allow_pickle=False)
        out[name + ".npy"] = buf.getvalue()
    return out


def write_zip(path, entries, compression=zipfile.ZIP_DEFLATED):
    """``entries``: (name, bytes or an iterable of byte chunks) in order, duplicates allowed."""
    with zipfile.ZipFile(path, "w", compression=compression, allowZip64=True) as zf:
        for name, body in entries:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = compression
            with zf.open(info, "w", force_zip64=True) as w:
                for chunk in ([body] if isinstance(body, bytes) else body):
                    w.write(chunk)


def peak_of(fn):
    tracemalloc.start()
    try:
        try:
            fn()
        finally:
            peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak


# ---- .npz: nothing is read before the names, shapes and sizes are checked ---------------------

def test_compressed_member_claiming_1e11_floats_is_refused_without_reading(tmp_path):
    """The header says 10^11 floats; the zip holds 1 MB of them.  Reading first: MemoryError."""
    path = tmp_path / "claims.npz"
    body = npy_header("<f4", (10**11,)) + bytes(1 << 20)
    write_zip(path, [*members(skip={"wte"}).items(), ("wte.npy", body)])
    box = {}

    def load():
        with pytest.raises(WeightsError) as e:
            load_npz(path)
        box["e"] = e

    assert peak_of(load) < 4 << 20
    msg = str(box["e"].value)
    assert str(path) in msg and "wte" in msg and "(20, 8)" in msg and "\n" not in msg


def test_a_compressed_bomb_is_refused_before_it_inflates(tmp_path):
    """64 MiB of zeros under an unexpected name, compressed to ~64 KB: refused by its name,
    with no more than a few MB held (reading first held all 64 MiB)."""
    path = tmp_path / "bomb.npz"
    n = 64 << 20
    chunks = [npy_header("<f4", (n // 4,))] + [bytes(1 << 20)] * (n >> 20)
    write_zip(path, [*members().items(), ("junk.npy", chunks)])
    assert path.stat().st_size < 1 << 20

    def load():
        with pytest.raises(WeightsError, match=r"unexpected tensors junk"):
            load_npz(path)

    assert peak_of(load) < 8 << 20


def test_a_member_larger_than_its_header_says_is_refused_unread(tmp_path):
    """wte's header is right ((20, 8) float32) but 64 MiB of zeros follow: the zip's declared
    size is checked against the header's before the member is inflated."""
    path = tmp_path / "size.npz"
    body = [members()["wte.npy"]] + [bytes(1 << 20)] * 64
    write_zip(path, [*members(skip={"wte"}).items(), ("wte.npy", body)])

    def load():
        with pytest.raises(WeightsError, match=r"size\.npz: member wte holds \d+ bytes, its header describes 768"):
            load_npz(path)

    assert peak_of(load) < 8 << 20


def test_hparams_member_with_a_huge_shape_is_refused(tmp_path):
    path = tmp_path / "hp.npz"
    ok = members(skip={"hparams.n_vocab"})
    write_zip(path, [*ok.items(), ("hparams.n_vocab.npy", npy_header("<i8", (2**62, 4)) + bytes(8))])
    with pytest.raises(WeightsError, match=r"hparams\.n_vocab.*integer scalar"):
        load_npz(path)


def test_stored_member_whose_shape_overflows_int64_is_refused(tmp_path):
    """hparams.n_vocab = 2**62, so wte's header (2**62, 8) float32 passes the shape check; it
    describes 2**67 bytes, which is 0 in int64 (2**62 * 8 wraps to 0), and the member holds its
    header alone: a size check in int64 would pass it and read 2**62 rows from nothing.  In
    exact integers the sizes disagree."""
    path = tmp_path / "wrap.npz"
    ok = members(hp={**TINY_HP, "n_vocab": 2**62}, skip={"wte"})
    header = npy_header("<f4", (2**62, 8))
    assert np.prod(np.array([2**62, 8], dtype=np.int64)) * 4 == 0  # what int64 arithmetic would say
    write_zip(path, [*ok.items(), ("wte.npy", header)], compression=zipfile.ZIP_STORED)
    with pytest.raises(WeightsError) as e:
        load_npz(path)
    msg = str(e.value)
    assert msg == (f"{path}: member wte holds {len(header)} bytes, its header describes {len(header) + 2**67}; "
                   f"the file is corrupt or not a gpt2np model file")


def test_n_layer_of_a_billion_is_refused_at_once(tmp_path):
    """The names are checked against hparams, but 12 * 10^9 expected names are never built."""
    path = tmp_path / "layers.npz"
    write_zip(path, members(hp={**TINY_HP, "n_layer": 10**9}).items())

    def load():
        with pytest.raises(WeightsError, match=r"n_layer=1000000000 needs at least 12000000000 tensors, the file has 28"):
            load_npz(path)

    assert peak_of(load) < 4 << 20


def test_duplicate_member_is_refused(tmp_path):
    """Two members named wte.npy: np.load takes the last one; which is meant is unknowable."""
    hp, params = tiny()
    save_npz(tmp_path / "m.npz", hp, params)
    other = io.BytesIO()
    np.save(other, np.zeros((20, 8), np.float32))
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(tmp_path / "m.npz", "a") as zf:
        zf.writestr("wte.npy", other.getvalue())
    with pytest.raises(WeightsError, match=r"m\.npz: member wte\.npy appears twice"):
        load_npz(tmp_path / "m.npz")


@pytest.mark.parametrize("dtype, words", [
    (np.float16, r"float16"),
    (np.dtype(">f4"), r"big-endian"),
    (np.dtype(">f8"), r"big-endian"),
    (np.int32, r"int32"),
])
def test_unsupported_dtypes_name_the_file_the_tensor_and_what_is_supported(tmp_path, dtype, words):
    hp, params = tiny()
    flat = flatten(params)
    flat["ln_f.g"] = np.asarray(flat["ln_f.g"]).astype(dtype)
    path = tmp_path / "odd.npz"
    np.savez(path, **flat, **{f"hparams.{k}": np.int64(v) for k, v in hp.items()})
    with pytest.raises(WeightsError) as e:
        load_npz(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ln_f.g ") and "float32 or float64" in msg and "little-endian" in msg
    assert re.search(words, msg)


def test_save_refuses_what_load_would_refuse(tmp_path):
    hp, params = tiny()
    params["ln_f"]["g"] = np.asarray(params["ln_f"]["g"]).astype(np.float16)
    with pytest.raises(WeightsError, match=r"ln_f\.g.*float16.*float32 or float64"):
        save_npz(tmp_path / "x.npz", hp, params)
    assert not list(tmp_path.iterdir())


def test_other_compressions_are_refused_by_name(tmp_path):
    """Only what np.savez and np.savez_compressed write: bzip2 or lzma inflate without a bound
    per read in zipfile (a few KB can become hundreds of MB in one call)."""
    path = tmp_path / "bz.npz"
    write_zip(path, members().items(), compression=zipfile.ZIP_BZIP2)
    with pytest.raises(WeightsError, match=r"bz\.npz: member .* compression method 12; supported: stored or deflate"):
        load_npz(path)


def test_unknown_compression_is_one_line(tmp_path):
    path = tmp_path / "lz.npz"
    write_zip(path, members().items(), compression=zipfile.ZIP_STORED)
    raw = bytearray(path.read_bytes())
    i = 0
    while True:  # mark every member as compressed with method 99 (unknown)
        i = raw.find(b"PK\x03\x04", i)
        if i < 0:
            break
        raw[i + 8:i + 10] = struct.pack("<H", 99)
        i += 4
    i = 0
    while True:
        i = raw.find(b"PK\x01\x02", i)
        if i < 0:
            break
        raw[i + 10:i + 12] = struct.pack("<H", 99)
        i += 4
    path.write_bytes(bytes(raw))
    with pytest.raises(WeightsError) as e:
        load_npz(path)
    msg = str(e.value)
    assert re.fullmatch(rf"{re.escape(str(path))}: member \S+\.npy uses zip compression method 99; supported: "
                        rf"stored or deflate \(np\.savez, np\.savez_compressed\)", msg), msg
    assert "\n" not in msg and len(msg.splitlines()) == 1


def test_valid_compressed_and_stored_files_still_load(tmp_path):
    hp, params = tiny()
    for compression in (zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED):
        path = tmp_path / f"ok{compression}.npz"
        write_zip(path, members().items(), compression=compression)
        hp2, got = load_npz(path)
        assert hp2 == hp
        for k, v in flatten(params).items():
            np.testing.assert_array_equal(flatten(got)[k], v, err_msg=k)


def test_corrupt_compressed_member_fails_its_crc(tmp_path):
    path = tmp_path / "crc.npz"
    write_zip(path, members().items(), compression=zipfile.ZIP_DEFLATED)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("wpe.npy")
    raw = bytearray(path.read_bytes())
    # keep the stream decodable: change the CRC recorded in the central directory instead
    at = raw.rindex(struct.pack("<I", info.CRC))
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(WeightsError, match=r"crc\.npz.*wpe.*(CRC|corrupt)"):
        load_npz(path)


# ---- safetensors: exact integers, bounded nesting ------------------------------------------

def raw_st(header_text: str, data: bytes = b"") -> bytes:
    h = header_text.encode()
    return struct.pack("<Q", len(h)) + h + data


@pytest.mark.parametrize("header, data, message", [
    ('{"a": {"dtype": "F32", "shape": [18446744073709551616], "data_offsets": [0, 0]}}', b"", r"needs 73786976294838206464"),
    ('{"a": {"dtype": "F32", "shape": [4611686018427387904, 4], "data_offsets": [0, 0]}}', b"", r"needs 73786976294838206464"),
    ('{"a": {"dtype": "U8", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}}', b"", r"needs 18446744073709551616"),
    ('{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 18446744073709551620]}}', bytes(4), r"hold 18446744073709551620 bytes"),
    ('{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "__metadata__": ' + "[" * 100_000 + "]" * 100_000 + "}",
     bytes(8), r"nested deeper than"),
    ('{"a": ' + '{"b": ' * 100_000 + "1" + "}" * 100_000 + "}", b"", r"nested deeper than"),
    ('["' + "x" * 10 + '"]', b"", r"must be a JSON object"),
])
def test_crafted_safetensors_headers(tmp_path, header, data, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(raw_st(header, data))
    with pytest.raises(WeightsError, match=message) as e:
        read_safetensors(path)
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


def test_brackets_inside_strings_are_not_nesting(tmp_path):
    """A name or a metadata value may hold any characters, brackets and escaped quotes included."""
    name = 'x[[[{{{"\\\\' * 50
    header = {name: {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "__metadata__": {"note": "[[[[[[" * 100 + '"'}}
    path = tmp_path / "ok.safetensors"
    path.write_bytes(raw_st(json.dumps(header), np.arange(2, dtype="<f4").tobytes()))
    got = read_safetensors(path)
    assert list(got) == [name] and got[name].tolist() == [0.0, 1.0]


def test_safetensors_header_of_many_entries_is_fine(tmp_path):
    """The bounds do not get in the way of an ordinary large header (a few thousand tensors)."""
    header = {f"t{i}": {"dtype": "U8", "shape": [1], "data_offsets": [i, i + 1]} for i in range(5000)}
    path = tmp_path / "many.safetensors"
    path.write_bytes(raw_st(json.dumps(header), bytes(range(256)) * 19 + bytes(136)))
    assert len(read_safetensors(path)) == 5000

