"""The weight-file readers: CRC32C, the TF checkpoint V2 reader, safetensors, .npz, name maps.

Expected values come from the committed fixtures written by TensorFlow and by the
`safetensors` library (scripts/make_*_fixture.py), from published test vectors, or from
properties; corrupted copies are made here.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import shutil
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from gpt2np.formats import (
    WeightsError, crc32c, crc32c_serial, flatten, load_npz, mask, read_bundle, read_safetensors,
    read_safetensors_model, read_tf_checkpoint, save_npz, unmask, write_safetensors,
)
import importlib
crc_mod = importlib.import_module("gpt2np.formats.crc32c")  # the package re-exports a function of that name
from gpt2np.formats.names import expected_shapes, flat_to_tf, from_tf_names, hf_to_flat, tf_to_flat
from gpt2np.formats.protobuf import read_varint

from helpers import FIXTURES as FIX, TF_TINY as TF, TINY_HP, header_proto, write_bundle

ST = FIX / "st_tiny"


def assert_same(got, want, name=""):
    """Exact equality, dtype included; on failure show both sides and the largest difference."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != {want.dtype}"
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    if not np.array_equal(got, want):
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64)).max()
        raise AssertionError(f"{name}: max |diff| {diff}; got {got.ravel()[:4]} want {want.ravel()[:4]}")


def tf_copy(tmp_path, name="gpt2") -> pathlib.Path:
    dst = tmp_path / name
    shutil.copytree(TF / name, dst)
    return dst


# ---- CRC32C ---------------------------------------------------------------------------

@pytest.mark.parametrize("data, crc", [
    (b"123456789", 0xE3069283), (bytes(32), 0x8A9136AA), (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E), (b"", 0),
])
def test_crc32c_vectors(data, crc):
    assert crc32c_serial(data) == crc
    assert crc32c(data) == crc
    assert crc32c(np.frombuffer(data, np.uint8)) == crc


def test_crc32c_is_not_zlib_crc32():
    assert crc32c(b"123456789") != zlib.crc32(b"123456789")


def test_mask_unmask():
    assert mask(0xE3069283) == 0xC78AB0E5
    for v in (0, 1, 0xFFFFFFFF, 0x12345678):
        assert unmask(mask(v)) == v


@pytest.mark.parametrize("n", [4095, 4096, 4096 * 3 + 1, 65536 + 17, 300_001])
def test_crc32c_lanes_equal_serial(n):
    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8)
    assert crc32c(data) == crc32c_serial(data)


def test_crc32c_lanes_across_blocks_and_tails(monkeypatch):
    """Several lanes passes joined by crc32c_combine, then a tail with fewer lanes (small sizes: fast)."""
    monkeypatch.setattr(crc_mod, "LANES", 1024)
    monkeypatch.setattr(crc_mod, "BLOCK", 1024 * 100)
    data = np.random.default_rng(0).integers(0, 256, 1024 * 64 * 5 + 9000, dtype=np.uint8)
    assert crc32c(data) == crc32c_serial(data)


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=200), st.binary(max_size=200))
def test_crc32c_continuation_and_combine(a, b):
    whole = crc32c_serial(a + b)
    assert crc32c_serial(b, crc32c_serial(a)) == whole
    assert crc_mod.crc32c_combine(crc32c_serial(a), crc32c_serial(b), len(b)) == whole


def test_varint_rejects_overlong_and_truncated():
    assert read_varint(b"\xac\x02", 0) == (300, 2)
    with pytest.raises(WeightsError, match="truncated varint"):
        read_varint(b"\x80\x80", 0)
    with pytest.raises(WeightsError, match="longer than"):
        read_varint(b"\xff" * 11, 0)


# ---- TF checkpoint: the fixture written by TensorFlow ------------------------------------

def test_tf_bundle_reproduces_tensorflow_values():
    got = read_bundle(TF / "gpt2" / "model.ckpt")
    want = np.load(TF / "gpt2_expected.npz")
    assert sorted(got) == sorted(want.files) and len(got) == 12 * 2 + 4
    for name in want.files:
        assert_same(got[name], want[name], name)


def test_tf_bundle_dtype_table():
    got = read_bundle(TF / "dtypes" / "model.ckpt")
    want = np.load(TF / "dtypes_expected.npz")
    assert sorted(got) == sorted(want.files)
    for name in want.files:  # bf16 is widened to float32, exactly
        assert_same(got[name], want[name], name)


def test_tf_checkpoint_tree_and_views():
    hp, params = read_tf_checkpoint(TF / "gpt2")
    want = np.load(TF / "gpt2_expected.npz")
    assert hp == json.loads((TF / "gpt2" / "hparams.json").read_text())
    assert len(params["blocks"]) == 2
    w = params["blocks"][1]["attn"]["c_attn"]["w"]
    assert_same(w, want["model/h1/attn/c_attn/w"][0], "c_attn.w")
    assert_same(params["ln_f"]["g"], want["model/ln_f/g"])
    assert_same(params["wte"], want["model/wte"])
    flat = flatten(params)
    assert {k: v.shape for k, v in flat.items()} == expected_shapes(hp)
    assert not w.flags.writeable and not w.flags.owndata  # a view of the memory map, no copy


def test_tf_checkpoint_accepts_index_file_and_prefix():
    a = read_bundle(TF / "gpt2" / "model.ckpt")
    hp, _ = read_tf_checkpoint(TF / "gpt2" / "model.ckpt.index")
    hp2, _ = read_tf_checkpoint(TF / "gpt2" / "model.ckpt")
    assert hp == hp2 == TINY_HP and len(a) == 28


def test_tf_checkpoint_relative_state_file(tmp_path):
    folder = tf_copy(tmp_path)
    (folder / "checkpoint").write_text('model_checkpoint_path: "model.ckpt"\n'
                                       'all_model_checkpoint_paths: "model.ckpt"\n')
    hp, params = read_tf_checkpoint(folder)
    assert hp == TINY_HP


# ---- TF checkpoint: corrupted copies -------------------------------------------------------

def _data_file(folder):
    return folder / "model.ckpt.data-00000-of-00001"


def _offset_of(name):
    """Byte offset of a tensor in TF's data file: TF 2.x wrote them in sorted-name order."""
    want = np.load(TF / "gpt2_expected.npz")
    off = 0
    for n in sorted(want.files):
        if n == name:
            return off
        off += want[n].nbytes
    raise KeyError(name)


def test_flipped_data_byte_names_the_tensor(tmp_path):
    folder = tf_copy(tmp_path)
    raw = bytearray(_data_file(folder).read_bytes())
    raw[_offset_of("model/h1/mlp/c_fc/b") + 5] ^= 0x10
    _data_file(folder).write_bytes(bytes(raw))
    with pytest.raises(WeightsError, match=r"model/h1/mlp/c_fc/b fails its CRC32C"):
        read_tf_checkpoint(folder)
    # verify=False skips the check and returns the (corrupt) bytes
    _, params = read_tf_checkpoint(folder, verify=False)
    want = np.load(TF / "gpt2_expected.npz")["model/h1/mlp/c_fc/b"]
    assert not np.array_equal(params["blocks"][1]["mlp"]["c_fc"]["b"], want)


def test_truncated_data_file(tmp_path):
    folder = tf_copy(tmp_path)
    raw = _data_file(folder).read_bytes()
    _data_file(folder).write_bytes(raw[:-10])
    with pytest.raises(WeightsError, match=r"truncated"):
        read_tf_checkpoint(folder, verify=False)


def test_missing_data_file(tmp_path):
    folder = tf_copy(tmp_path)
    _data_file(folder).unlink()
    with pytest.raises(WeightsError, match=r"data file not found"):
        read_tf_checkpoint(folder)


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:-1] + b"\x00", "bad magic"),
    (lambda b: b[:30], "too short"),
    (lambda b: b"", "too short"),
    (lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:], "block CRC mismatch"),
])
def test_corrupt_index(tmp_path, damage, message):
    folder = tf_copy(tmp_path)
    index = folder / "model.ckpt.index"
    index.write_bytes(damage(index.read_bytes()))
    with pytest.raises(WeightsError, match=message):
        read_tf_checkpoint(folder)


def test_compressed_or_unknown_block_type(tmp_path):
    folder = tf_copy(tmp_path)
    index = folder / "model.ckpt.index"
    raw = bytearray(index.read_bytes())
    # the data block starts at 0; its trailer type byte follows its contents (size from the index handle)
    first_block_size = _first_block_size(bytes(raw))
    for typ, msg in ((1, "Snappy"), (7, "compression type 7")):
        raw[first_block_size] = typ
        index.write_bytes(bytes(raw))
        with pytest.raises(WeightsError, match=msg):
            read_tf_checkpoint(folder)


def _first_block_size(index: bytes) -> int:
    from gpt2np.formats.sstable import read_block, iter_block
    foot = index[-48:]
    _, p = read_varint(foot, 0)
    _, p = read_varint(foot, p)
    off, p = read_varint(foot, p)
    size, p = read_varint(foot, p)
    (_, handle), = list(iter_block(read_block(index, off, size, "x"), "x"))
    return read_varint(handle, read_varint(handle, 0)[1])[0]


def _tiny_arrays():
    return dict(np.load(TF / "gpt2_expected.npz"))


def _bundle(tmp_path, tensors=None, hparams=TINY_HP, **kw):
    folder = tmp_path / "ckpt"
    write_bundle(folder / "model.ckpt", _tiny_arrays() if tensors is None else tensors, **kw)
    (folder / "hparams.json").write_text(json.dumps(hparams))
    return folder


def test_written_bundle_reads_back(tmp_path):
    hp, params = read_tf_checkpoint(_bundle(tmp_path))
    assert hp == TINY_HP


@pytest.mark.parametrize("code, label", [(7, "DT_STRING"), (0, "DT_INVALID"), (99, "DataType 99")])
def test_unknown_dtype(tmp_path, code, label):
    folder = _bundle(tmp_path, dtype_override={"model/wpe": code})
    with pytest.raises(WeightsError, match=f"model/wpe has unsupported dtype {label}"):
        read_tf_checkpoint(folder)


@pytest.mark.parametrize("edit, exc, message", [
    (lambda f: {**f, "size": f["size"] - 4}, WeightsError, "does not match shape"),
    (lambda f: {**f, "shard_id": 3}, WeightsError, "shard 3"),
    (lambda f: {**f, "offset": 10**6}, WeightsError, "needs bytes"),
    (lambda f: {**f, "slices": 1}, NotImplementedError, "partitioned"),
    (lambda f: {**f, "crc": None}, WeightsError, "no crc32c"),
])
def test_bad_entries(tmp_path, edit, exc, message):
    folder = _bundle(tmp_path, entry_edit=lambda name, f: edit(f) if name == "model/wpe" else f)
    with pytest.raises(exc, match=message):
        read_tf_checkpoint(folder)


@pytest.mark.parametrize("header, message", [
    (header_proto(num_shards=0), "num_shards=0"),
    (header_proto(min_consumer=2), "too new"),
    (header_proto(bad_consumers=(1,)), "too new"),
    (b"\x08", "truncated varint"),
])
def test_bad_header(tmp_path, header, message):
    with pytest.raises(WeightsError, match=message):
        read_tf_checkpoint(_bundle(tmp_path, header=header))


def test_big_endian_bundle(tmp_path):
    arrays = _tiny_arrays()
    _, params = read_tf_checkpoint(_bundle(tmp_path, arrays, endianness=1))
    assert_same(params["wte"], arrays["model/wte"])
    assert params["wte"].dtype == np.dtype("<f4")


def test_tf_names_exact_set_and_shapes(tmp_path):
    arrays = _tiny_arrays()
    del arrays["model/h1/ln_2/b"]
    with pytest.raises(WeightsError, match=r"missing tensors model/h1/ln_2/b"):
        read_tf_checkpoint(_bundle(tmp_path / "a", arrays))
    arrays = _tiny_arrays()
    arrays["model/h2/ln_1/g"] = arrays["model/h1/ln_1/g"]
    with pytest.raises(WeightsError, match=r"unexpected tensors model/h2/ln_1/g"):
        read_tf_checkpoint(_bundle(tmp_path / "b", arrays))
    arrays = _tiny_arrays()
    arrays["global_step"] = np.array(1, np.int64)
    with pytest.raises(WeightsError, match=r"unexpected tensors global_step"):
        read_tf_checkpoint(_bundle(tmp_path / "c", arrays))
    with pytest.raises(WeightsError, match=r"model/wte: expected shape \(21, 8\) from hparams, found \(20, 8\)"):
        read_tf_checkpoint(_bundle(tmp_path / "d", hparams={**TINY_HP, "n_vocab": 21}))
    arrays = _tiny_arrays()
    arrays["model/h0/mlp/c_fc/w"] = arrays["model/h0/mlp/c_fc/w"][0]
    with pytest.raises(WeightsError, match=r"model/h0/mlp/c_fc/w: expected a Conv1D weight of shape \[1, nx, nf\]"):
        read_tf_checkpoint(_bundle(tmp_path / "e", arrays))


def test_bad_hparams_json(tmp_path):
    folder = tf_copy(tmp_path)
    (folder / "hparams.json").write_text('{"n_vocab": 20}')
    with pytest.raises(WeightsError, match="missing n_ctx"):
        read_tf_checkpoint(folder)
    (folder / "hparams.json").write_text('{not json')
    with pytest.raises(WeightsError, match="not valid JSON"):
        read_tf_checkpoint(folder)
    (folder / "hparams.json").unlink()
    with pytest.raises(WeightsError, match="hparams.json: file not found"):
        read_tf_checkpoint(folder)


def test_hparams_json_with_other_keys_refused(tmp_path):
    folder = tf_copy(tmp_path)
    (folder / "hparams.json").write_text(json.dumps({**TINY_HP, "n_positions": 8}))
    with pytest.raises(WeightsError, match=r"hparams\.json: unexpected keys n_positions \(expected only the keys "
                                           r"n_vocab, n_ctx, n_embd, n_head, n_layer\)$"):
        read_tf_checkpoint(folder)


def test_safetensors_without_blocks_is_a_weights_error(tmp_path):
    """The inferred n_layer = 0 is checked like any hparams: a WeightsError, not another exception."""
    d = np.zeros(64, np.float32)
    write_safetensors(tmp_path / "none.safetensors", {"wte.weight": np.zeros((5, 64), np.float32),
                                                      "wpe.weight": np.zeros((4, 64), np.float32),
                                                      "ln_f.weight": d, "ln_f.bias": d})
    with pytest.raises(WeightsError, match=r"none\.safetensors: n_layer must be a positive integer, found 0$"):
        read_safetensors_model(tmp_path / "none.safetensors")


def test_not_a_checkpoint_folder(tmp_path):
    with pytest.raises(WeightsError, match="no TensorFlow checkpoint"):
        read_tf_checkpoint(tmp_path)


def test_non_float_weights_refused(tmp_path):
    arrays = _tiny_arrays()
    arrays["model/wpe"] = arrays["model/wpe"].astype(np.float64)
    with pytest.raises(WeightsError, match="model/wpe has dtype float64"):
        read_tf_checkpoint(_bundle(tmp_path, arrays))


# ---- name maps -----------------------------------------------------------------------------

def test_tf_name_map():
    assert tf_to_flat("model/h11/attn/c_attn/w") == "blocks.11.attn.c_attn.w"
    assert tf_to_flat("model/wte") == "wte" and tf_to_flat("model/ln_f/b") == "ln_f.b"
    assert tf_to_flat("model/h01/ln_1/g") is None and tf_to_flat("other/wte") is None
    for name in expected_shapes(TINY_HP):
        assert tf_to_flat(flat_to_tf(name)) == name


def test_hf_name_map():
    assert hf_to_flat("h.3.attn.c_attn.weight") == "blocks.3.attn.c_attn.w"
    assert hf_to_flat("h.0.ln_2.weight") == "blocks.0.ln_2.g"
    assert hf_to_flat("h.0.mlp.c_proj.bias") == "blocks.0.mlp.c_proj.b"
    assert hf_to_flat("ln_f.weight") == "ln_f.g" and hf_to_flat("wpe.weight") == "wpe"
    assert hf_to_flat("h.0.attn.bias") is None and hf_to_flat("lm_head.weight") is None


def test_only_the_leading_axis_is_dropped():
    """n_embd = 1 makes other axes size 1 too: a blanket squeeze would break these shapes."""
    hp = {"n_vocab": 1, "n_ctx": 1, "n_embd": 1, "n_head": 1, "n_layer": 1}
    tensors = {}
    for name, shape in expected_shapes(hp).items():
        shape = (1,) + shape if name.endswith(".w") else shape
        tensors[flat_to_tf(name)] = np.ones(shape, np.float32)
    params = from_tf_names(tensors, hp, "test")
    assert params["blocks"][0]["attn"]["c_proj"]["w"].shape == (1, 1)
    assert params["blocks"][0]["mlp"]["c_fc"]["w"].shape == (1, 4)
    assert params["wte"].shape == (1, 1)


# ---- safetensors ---------------------------------------------------------------------------

def _expected_flat(name):
    z = np.load(ST / f"{name}_expected.npz")
    return {k: z[k] for k in z.files if not k.startswith("hparams.")}, \
        {k[len("hparams."):]: int(z[k]) for k in z.files if k.startswith("hparams.")}


def test_safetensors_model_inferred_config():
    want, hp = _expected_flat("gpt2")
    got_hp, params = read_safetensors_model(ST / "gpt2.safetensors")
    assert got_hp == hp == {"n_vocab": 20, "n_ctx": 8, "n_embd": 64, "n_head": 1, "n_layer": 2}
    flat = flatten(params)
    assert sorted(flat) == sorted(want)
    for k in want:
        assert_same(flat[k], want[k], k)
    w = params["blocks"][0]["mlp"]["c_fc"]["w"]
    assert not w.flags.owndata and w.flags.aligned  # zero-copy view of the map (the writer pads to 8)


def test_safetensors_prefixed_with_buffers_and_tied_head():
    want, hp = _expected_flat("gpt2_prefixed")
    got_hp, params = read_safetensors_model(ST / "gpt2_prefixed.safetensors", hp)
    assert got_hp == hp
    flat = flatten(params)
    assert sorted(flat) == sorted(want)
    for k in want:
        assert_same(flat[k], want[k], k)
    with pytest.raises(WeightsError, match="n_head cannot be inferred"):
        read_safetensors_model(ST / "gpt2_prefixed.safetensors")


def test_safetensors_f16_model_becomes_float32():
    want, _ = _expected_flat("gpt2_f16")
    _, params = read_safetensors_model(ST / "gpt2_f16.safetensors", TINY_HP)
    flat = flatten(params)
    for k in want:
        assert_same(flat[k], want[k], k)


def test_safetensors_dtypes_from_torch():
    got = read_safetensors(ST / "mixed.safetensors")
    want = np.load(ST / "mixed_expected.npz")
    assert sorted(got) == sorted(want.files)
    for k in want.files:
        assert_same(got[k], want[k], k)


def test_safetensors_model_errors(tmp_path):
    tensors = read_safetensors(ST / "gpt2_prefixed.safetensors")
    bad = dict(tensors)
    bad["lm_head.weight"] = bad["lm_head.weight"] + 1
    write_safetensors(tmp_path / "untied.safetensors", bad)
    with pytest.raises(WeightsError, match="lm_head.weight differs from wte"):
        read_safetensors_model(tmp_path / "untied.safetensors", TINY_HP)
    bad = dict(tensors)
    del bad["transformer.h.1.mlp.c_fc.bias"]
    write_safetensors(tmp_path / "missing.safetensors", bad)
    with pytest.raises(WeightsError, match=r"missing tensors blocks\.1\.mlp\.c_fc\.b"):
        read_safetensors_model(tmp_path / "missing.safetensors", TINY_HP)
    bad = dict(tensors)
    bad["transformer.h.0.attn.rotary"] = np.zeros(2, np.float32)
    write_safetensors(tmp_path / "extra.safetensors", bad)
    with pytest.raises(WeightsError, match=r"unexpected tensors transformer\.h\.0\.attn\.rotary"):
        read_safetensors_model(tmp_path / "extra.safetensors", TINY_HP)
    with pytest.raises(WeightsError, match=r"transformer\.wpe\.weight: expected shape \(16, 8\)"):
        read_safetensors_model(ST / "gpt2_prefixed.safetensors", {**TINY_HP, "n_ctx": 16})
    with pytest.raises(WeightsError, match="unexpected tensors"):
        read_safetensors_model(ST / "mixed.safetensors")


def _raw_st(header: dict, data: bytes, pad: int = 0) -> bytes:
    h = json.dumps(header).encode() + b" " * pad
    return struct.pack("<Q", len(h)) + h + data


GOOD = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "I16", "shape": [1, 2], "data_offsets": [8, 12]}}


@pytest.mark.parametrize("blob, message", [
    (b"\x01\x02", "too short"),
    (struct.pack("<Q", 10**9) + b"{}", "exceeds the limit"),
    (struct.pack("<Q", 50) + b"{}", "runs past the end"),
    (struct.pack("<Q", 2) + b"\xff\xfe", "not valid UTF-8 JSON"),
    (struct.pack("<Q", 5) + b"{nope", "not valid UTF-8 JSON"),
    (_raw_st({"a": {"dtype": "X9", "shape": [2], "data_offsets": [0, 8]}}, bytes(8)), "unknown dtype 'X9'"),
    (_raw_st({"a": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}}, bytes(2)), "no NumPy equivalent"),
    (_raw_st({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8)), r"needs 12"),
    (_raw_st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12)), "overlaps"),
    (_raw_st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12)), "leaves a gap"),
    (_raw_st(GOOD, bytes(11)), "truncated or trailing"),
    (_raw_st(GOOD, bytes(13)), "truncated or trailing"),
    (_raw_st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8], "x": 1}}, bytes(8)), "exactly the keys"),
    (_raw_st({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, bytes(8)), "non-negative"),
    (_raw_st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, bytes(8)), "begin <= end"),
    (_raw_st({"__metadata__": {"k": 1}}, b""), "__metadata__"),
    (struct.pack("<Q", 14) + b'{"a":1, "a":2}', "duplicate key"),
])
def test_bad_safetensors(tmp_path, blob, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(blob)
    with pytest.raises(WeightsError, match=message):
        read_safetensors(path)


def test_unaligned_safetensors_copied(tmp_path):
    a = np.arange(2, dtype=np.float32) + 0.5
    b = np.array([[7, -8]], np.int16)
    path = tmp_path / "odd.safetensors"
    blob = _raw_st(GOOD, a.tobytes() + b.tobytes())
    path.write_bytes(blob)
    assert (len(blob) - 12) % 4 != 0  # the data start is not 4-aligned
    got = read_safetensors(path)
    assert_same(got["a"], a)
    assert_same(got["b"], b)
    assert got["a"].flags.aligned


def test_safetensors_write_read_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    tensors = {"w": rng.standard_normal((3, 5)).astype(np.float32), "h": rng.standard_normal(7).astype(np.float16),
               "d": rng.standard_normal((2, 2)), "i": np.arange(5, dtype=np.int64), "u": np.arange(3, dtype=np.uint8),
               "flag": np.array([True, False]), "s": np.float32(1.5), "e": np.zeros((0, 2), np.float32),
               "be": np.arange(3, dtype=">i4")}
    path = tmp_path / "rt.safetensors"
    write_safetensors(path, tensors, metadata={"format": "np"})
    got = read_safetensors(path)
    for k, v in tensors.items():
        assert_same(got[k], np.asarray(v).astype(np.asarray(v).dtype.newbyteorder("<")), k)
    # the layout, checked by hand: 8-aligned data start, offsets tile the buffer, raw bytes as numpy has them
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    assert (8 + n) % 8 == 0
    header = json.loads(raw[8:8 + n])
    assert header["__metadata__"] == {"format": "np"}
    assert header["w"]["dtype"] == "F32" and header["h"]["dtype"] == "F16" and header["flag"]["dtype"] == "BOOL"
    b0, b1 = header["d"]["data_offsets"]
    assert raw[8 + n + b0:8 + n + b1] == tensors["d"].tobytes()
    assert [p.name for p in tmp_path.iterdir()] == ["rt.safetensors"]


def test_safetensors_writer_refuses_unstorable(tmp_path):
    with pytest.raises(WeightsError, match="cannot be stored"):
        write_safetensors(tmp_path / "x.safetensors", {"s": np.array(["a"])})
    assert list(tmp_path.iterdir()) == []


def test_our_writer_matches_the_library_layout(tmp_path):
    """Rewrite the library's file with our writer; reading both gives the same tensors."""
    src = read_safetensors(ST / "mixed.safetensors")
    src.pop("bf16")  # numpy cannot hold bfloat16 to write it back
    write_safetensors(tmp_path / "m.safetensors", src)
    again = read_safetensors(tmp_path / "m.safetensors")
    for k in src:
        assert_same(again[k], src[k], k)


# ---- .npz ------------------------------------------------------------------------------------

def test_npz_round_trip(tmp_path):
    hp, params = read_tf_checkpoint(TF / "gpt2")
    path = tmp_path / "m.npz"
    save_npz(path, hp, params)
    hp2, params2 = load_npz(path)
    assert hp2 == hp
    a, b = flatten(params), flatten(params2)
    assert sorted(a) == sorted(b)
    for k in a:
        assert_same(b[k], a[k], k)
    with np.load(path, allow_pickle=False) as z:  # the documented member names
        assert "blocks.1.attn.c_attn.w" in z.files and int(z["hparams.n_layer"]) == 2
        assert z["hparams.n_embd"].dtype == np.int64
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]


def test_npz_is_a_plain_npz_with_aligned_zero_copy_members(tmp_path):
    hp, params = read_tf_checkpoint(TF / "gpt2")
    save_npz(tmp_path / "m.npz", hp, params)
    _, got = load_npz(tmp_path / "m.npz")
    flat = flatten(got)
    with np.load(tmp_path / "m.npz", allow_pickle=False) as z:  # NumPy's own reader agrees
        for k, v in flatten(params).items():
            assert_same(z[k], v, k)
            assert_same(flat[k], v, k)
    for k, v in flat.items():
        assert v.flags.aligned and not v.flags.owndata and not v.flags.writeable, k
        assert v.__array_interface__["data"][0] % 64 == 0, k  # 64-byte aligned in the file


def test_npz_flipped_byte_fails_crc(tmp_path):
    hp, params = read_tf_checkpoint(TF / "gpt2")
    save_npz(tmp_path / "m.npz", hp, params)
    raw = bytearray((tmp_path / "m.npz").read_bytes())
    want = np.asarray(params["wpe"]).tobytes()
    at = bytes(raw).index(want)
    raw[at + 7] ^= 0x40
    (tmp_path / "m.npz").write_bytes(bytes(raw))
    with pytest.raises(WeightsError, match="member wpe fails its CRC-32"):
        load_npz(tmp_path / "m.npz")
    _, got = load_npz(tmp_path / "m.npz", verify=False)
    assert not np.array_equal(got["wpe"], params["wpe"])


@pytest.mark.parametrize("writer", [np.savez, np.savez_compressed])
def test_npz_written_by_numpy_loads(tmp_path, writer):
    hp, params = read_tf_checkpoint(TF / "gpt2")
    writer(tmp_path / "n.npz", **flatten(params), **{f"hparams.{k}": np.int64(v) for k, v in hp.items()})
    hp2, got = load_npz(tmp_path / "n.npz")
    assert hp2 == hp
    for k, v in flatten(params).items():
        assert_same(flatten(got)[k], v, k)


def test_npz_errors(tmp_path):
    hp, params = read_tf_checkpoint(TF / "gpt2")
    save_npz(tmp_path / "m.npz", hp, params)
    raw = (tmp_path / "m.npz").read_bytes()
    (tmp_path / "trunc.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        load_npz(tmp_path / "trunc.npz")
    np.savez(tmp_path / "pickled.npz", **{f"hparams.{k}": v for k, v in hp.items()}, obj=np.array([{}], dtype=object))
    with pytest.raises(WeightsError, match="member obj holds Python objects; refusing to unpickle"):
        load_npz(tmp_path / "pickled.npz")
    np.savez(tmp_path / "nohp.npz", wte=np.zeros((2, 2), np.float32))
    with pytest.raises(WeightsError, match="not a gpt2np model file"):
        load_npz(tmp_path / "nohp.npz")
    flat = flatten(params)
    flat["wpe"] = flat["wpe"][:4]
    np.savez(tmp_path / "shape.npz", **flat, **{f"hparams.{k}": v for k, v in hp.items()})
    with pytest.raises(WeightsError, match=r"wpe: expected shape \(8, 8\)"):
        load_npz(tmp_path / "shape.npz")
    with pytest.raises(WeightsError, match="file not found"):
        load_npz(tmp_path / "nothing.npz")


def test_npz_save_is_atomic(tmp_path, monkeypatch):
    hp, params = read_tf_checkpoint(TF / "gpt2")

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="disk full while writing"):
        save_npz(tmp_path / "m.npz", hp, params)
    assert list(tmp_path.iterdir()) == []  # neither the final name nor the temp file
    with pytest.raises(WeightsError, match="missing tensors"):
        save_npz(tmp_path / "m.npz", hp, {"wte": params["wte"]})


def test_written_files_get_the_usual_mode(tmp_path):
    """Not the 0600 of the temp file they were written as: umask 022 gives 0644, 002 gives 0664."""
    hp, params = read_tf_checkpoint(TF / "gpt2")
    for umask in (0o022, 0o002):
        old = os.umask(umask)
        try:
            save_npz(tmp_path / f"m{umask:o}.npz", hp, params)
            write_safetensors(tmp_path / f"t{umask:o}.safetensors", {"w": np.zeros(2, np.float32)})
        finally:
            os.umask(old)
        for name in (f"m{umask:o}.npz", f"t{umask:o}.safetensors"):
            assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_our_safetensors_file_read_by_the_library(tmp_path):
    """Optional cross-check with Hugging Face's reader (dev only); the fixtures check the same layout."""
    st_np = pytest.importorskip("safetensors.numpy")
    rng = np.random.default_rng(7)
    tensors = {"w": rng.standard_normal((4, 3)).astype(np.float32), "h": np.arange(5, dtype=np.float16),
               "i": np.arange(3, dtype=np.int64), "flag": np.array([True, False])}
    write_safetensors(tmp_path / "ours.safetensors", tensors, metadata={"format": "np"})
    got = st_np.load_file(str(tmp_path / "ours.safetensors"))
    for k, v in tensors.items():
        assert_same(got[k], v, k)
