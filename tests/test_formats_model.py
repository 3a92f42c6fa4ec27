"""End-to-end through the GPT2 doors: from_tf_checkpoint, from_safetensors, save/load."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from gpt2np import GPT2, Config
from gpt2np.formats import WeightsError, flatten, write_safetensors
from gpt2np.formats.names import flat_to_tf

FIX = pathlib.Path(__file__).parent / "fixtures"


def _same_tree(a, b):
    fa, fb = flatten(a), flatten(b)
    assert sorted(fa) == sorted(fb)
    for k in fa:
        assert fa[k].dtype == fb[k].dtype and np.array_equal(fa[k], fb[k]), k


def test_from_tf_checkpoint_matches_tensorflow_values():
    model = GPT2.from_tf_checkpoint(FIX / "tf_tiny" / "gpt2")
    assert model.config == Config(n_vocab=20, n_ctx=8, n_embd=8, n_head=2, n_layer=2)
    want = np.load(FIX / "tf_tiny" / "gpt2_expected.npz")
    for name, arr in flatten(model.params).items():
        tf = want[flat_to_tf(name)]
        np.testing.assert_array_equal(arr, tf[0] if name.endswith(".w") else tf, err_msg=name)
    logits = model(np.array([1, 2, 3]))
    assert logits.shape == (3, 20) and logits.dtype == np.float32 and np.isfinite(logits).all()


def test_from_safetensors_inferred_config_and_save_load(tmp_path):
    model = GPT2.from_safetensors(FIX / "st_tiny" / "gpt2.safetensors")
    assert model.config == Config(n_vocab=20, n_ctx=8, n_embd=64, n_head=1, n_layer=2)
    model.save(tmp_path / "m.npz")
    again = GPT2.load(tmp_path / "m.npz")
    assert again.config == model.config
    _same_tree(again.params, model.params)
    ids = np.array([[3, 1, 4, 1]])
    np.testing.assert_array_equal(again(ids), model(ids))


def test_from_safetensors_with_config():
    config = Config(n_vocab=20, n_ctx=8, n_embd=8, n_head=2, n_layer=2)
    model = GPT2.from_safetensors(FIX / "st_tiny" / "gpt2_prefixed.safetensors", config=config)
    assert model.config == config
    with pytest.raises(WeightsError, match="expected shape"):
        GPT2.from_safetensors(FIX / "st_tiny" / "gpt2_prefixed.safetensors",
                              config=Config(n_vocab=20, n_ctx=8, n_embd=16, n_head=2, n_layer=2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_random_model_npz_round_trip(tmp_path, dtype):
    model = GPT2.random(Config(n_vocab=30, n_ctx=16, n_embd=16, n_head=2, n_layer=3), seed=3, dtype=dtype)
    model.save(tmp_path / "r.npz")
    again = GPT2.load(tmp_path / "r.npz")
    assert again.config == model.config and again.dtype == np.dtype(dtype)
    _same_tree(again.params, model.params)


def test_random_model_through_hf_names(tmp_path):
    """Our safetensors writer with Hugging Face names -> from_safetensors gives the same model."""
    model = GPT2.random(Config(n_vocab=30, n_ctx=16, n_embd=64, n_head=1, n_layer=3), seed=5)
    hf = {}
    for name, arr in flatten(model.params).items():
        parts = name.split(".")
        if parts[0] == "blocks":
            parts = ["h", parts[1]] + parts[2:]
        leaf = {"g": "weight", "w": "weight", "b": "bias"}.get(parts[-1], parts[-1])
        key = ".".join(parts[:-1] + [leaf]) if parts[-1] in "gwb" else name + ".weight"
        hf["transformer." + key] = arr
    hf["lm_head.weight"] = model.params["wte"]
    write_safetensors(tmp_path / "m.safetensors", hf)
    again = GPT2.from_safetensors(tmp_path / "m.safetensors")
    assert again.config == model.config
    _same_tree(again.params, model.params)
