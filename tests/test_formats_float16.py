"""The .npz's one deliberate float16 path: a file whose metadata says ``"storage": "float16"``
holds every weight as float16 and loads as float32 (the bundled model is stored so); a float16
weight anywhere else is still refused (tests/test_formats_crafted.py), and so is a float16 file
that mixes in other dtypes or names another storage."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from gpt2np import GPT2, Config
from gpt2np.formats import WeightsError, flatten, load_npz, read_tf_checkpoint, save_npz
from gpt2np.formats.npz import npz_metadata

from helpers import TF_TINY


def tiny():
    return read_tf_checkpoint(TF_TINY / "gpt2")


def member_dtypes(path) -> dict:
    with zipfile.ZipFile(path) as zf:
        out = {}
        for name in zf.namelist():
            with zf.open(name) as f:
                np.lib.format.read_magic(f)
                out[name[:-4]] = np.lib.format.read_array_header_1_0(f)[2]
    return out


def test_storage_float16_halves_the_file_and_loads_float32(tmp_path):
    hp, params = tiny()
    save_npz(tmp_path / "f32.npz", hp, params)
    save_npz(tmp_path / "f16.npz", hp, params, metadata={"storage": "float16", "note": "kept"})
    dtypes = member_dtypes(tmp_path / "f16.npz")
    assert {d for n, d in dtypes.items() if not n.startswith("hparams.")} == {np.dtype("<f2")}
    assert npz_metadata(tmp_path / "f16.npz") == {"storage": "float16", "note": "kept"}
    weights32 = sum(a.nbytes for a in flatten(params).values())
    assert (tmp_path / "f32.npz").stat().st_size - (tmp_path / "f16.npz").stat().st_size >= weights32 // 2 - 4096
    hp2, loaded = load_npz(tmp_path / "f16.npz")
    assert hp2 == hp
    for name, a in flatten(loaded).items():
        original = np.asarray(flatten(params)[name])
        assert a.dtype == np.float32 and a.flags.writeable and a.flags.owndata, name  # upcast once: own copies
        np.testing.assert_array_equal(a, original.astype(np.float16).astype(np.float32), err_msg=name)
    model = GPT2.load(tmp_path / "f16.npz")
    assert model.dtype == np.float32
    with np.load(tmp_path / "f16.npz") as z:  # still an ordinary .npz
        assert z["wte"].dtype == np.float16


def test_float16_weights_are_saved_as_they_are(tmp_path):
    hp, params = tiny()
    half = {k: np.asarray(v).astype(np.float16) for k, v in flatten(params).items()}
    from gpt2np.formats import unflatten

    save_npz(tmp_path / "h.npz", hp, unflatten(half, hp["n_layer"]), metadata={"storage": "float16"})
    _, loaded = load_npz(tmp_path / "h.npz")
    for name, a in flatten(loaded).items():
        np.testing.assert_array_equal(a, half[name].astype(np.float32))


def test_without_the_metadata_float16_is_still_refused(tmp_path):
    hp, params = tiny()
    flat = {k: np.asarray(v).astype(np.float16) for k, v in flatten(params).items()}
    path = tmp_path / "stray.npz"
    np.savez(path, **flat, **{f"hparams.{k}": np.int64(v) for k, v in hp.items()})
    with pytest.raises(WeightsError, match=r"stray\.npz: \S+ has dtype float16 \('<f2'\); gpt2np model files hold "
                                           r"float32 or float64 .*storage='float16'"):
        load_npz(path)


def with_comment(path, meta: dict):
    with zipfile.ZipFile(path, "a") as zf:
        zf.comment = json.dumps(meta).encode()


def test_a_float16_file_must_hold_only_float16(tmp_path):
    hp, params = tiny()
    flat = {k: np.asarray(v).astype(np.float16) for k, v in flatten(params).items()}
    flat["ln_f.g"] = flat["ln_f.g"].astype(np.float32)
    path = tmp_path / "mixed.npz"
    np.savez(path, **flat, **{f"hparams.{k}": np.int64(v) for k, v in hp.items()})
    with_comment(path, {"storage": "float16"})
    with pytest.raises(WeightsError, match=r"mixed\.npz: ln_f\.g has dtype float32 \('<f4'\), but the file's "
                                           r"metadata says storage float16: every weight must be"):
        load_npz(path)
    flat["ln_f.g"] = flat["ln_f.g"].astype(">f2")  # big-endian half: refused too
    np.savez(path, **flat, **{f"hparams.{k}": np.int64(v) for k, v in hp.items()})
    with_comment(path, {"storage": "float16"})
    with pytest.raises(WeightsError, match=r"ln_f\.g has dtype >f2"):
        load_npz(path)


def test_a_float16_file_of_np_savez_loads(tmp_path):
    """The metadata decides, not the writer: np.savez's file with the comment is the same file."""
    hp, params = tiny()
    flat = {k: np.asarray(v).astype(np.float16) for k, v in flatten(params).items()}
    path = tmp_path / "np.npz"
    np.savez(path, **flat, **{f"hparams.{k}": np.int64(v) for k, v in hp.items()})
    with_comment(path, {"storage": "float16"})
    _, loaded = load_npz(path)
    assert flatten(loaded)["wte"].dtype == np.float32


@pytest.mark.parametrize("storage", ["bfloat16", "float32", "", 16, ["float16"]])
def test_an_unknown_storage_is_refused(tmp_path, storage):
    hp, params = tiny()
    with pytest.raises(WeightsError, match=r"save_npz: unknown weight storage .* gpt2np knows only 'float16'"):
        save_npz(tmp_path / "x.npz", hp, params, metadata={"storage": storage})
    assert not list(tmp_path.iterdir())
    save_npz(tmp_path / "y.npz", hp, params)
    with_comment(tmp_path / "y.npz", {"storage": storage})
    with pytest.raises(WeightsError, match=r"y\.npz: unknown weight storage"):
        load_npz(tmp_path / "y.npz")


def test_a_weight_beyond_float16s_range_is_refused_by_name(tmp_path):
    hp, params = tiny()
    params["blocks"][0]["mlp"]["c_fc"]["b"] = np.asarray(params["blocks"][0]["mlp"]["c_fc"]["b"]).copy()
    params["blocks"][0]["mlp"]["c_fc"]["b"][3] = 70000.0
    with pytest.raises(WeightsError, match=r"save_npz: blocks\.0\.mlp\.c_fc\.b has values beyond float16's range"):
        save_npz(tmp_path / "x.npz", hp, params, metadata={"storage": "float16"})
    params["blocks"][0]["mlp"]["c_fc"]["b"][3] = np.nan
    with pytest.raises(WeightsError, match=r"blocks\.0\.mlp\.c_fc\.b holds values that are not finite"):
        save_npz(tmp_path / "x.npz", hp, params, metadata={"storage": "float16"})
    assert not list(tmp_path.iterdir())


def test_loading_the_bundled_shape_from_float16_is_fast(tmp_path):
    """The bundled model's shape (7.7 M weights): stored as float16, loaded as float32 quickly."""
    import time

    model = GPT2.random(Config.preset("gpt2np-mini"))
    save_npz(tmp_path / "m.npz", model.config.to_dict(), model.params, metadata={"storage": "float16"})
    assert (tmp_path / "m.npz").stat().st_size < 16_000_000
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        GPT2.load(tmp_path / "m.npz")
        times.append(time.perf_counter() - t0)
    assert min(times) < 0.5, times
