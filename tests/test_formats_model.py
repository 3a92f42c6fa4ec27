"""End to end through GPT2's loaders and savers: from_tf_checkpoint, from_safetensors, save/load."""

from __future__ import annotations

import numpy as np
import pytest

from gpt2np import GPT2, Config
from gpt2np.formats import WeightsError, flatten, write_safetensors

from helpers import FIXTURES as FIX, assert_matches_tf_fixture, assert_same_tree, hf_name


def test_from_tf_checkpoint_matches_tensorflow_values():
    model = GPT2.from_tf_checkpoint(FIX / "tf_tiny" / "gpt2")
    assert model.config == Config(n_vocab=20, n_ctx=8, n_embd=8, n_head=2, n_layer=2)
    assert_matches_tf_fixture(model.params)
    logits = model(np.array([1, 2, 3]))
    assert logits.shape == (3, 20) and logits.dtype == np.float32 and np.isfinite(logits).all()


def test_from_safetensors_inferred_config_and_save_load(tmp_path):
    model = GPT2.from_safetensors(FIX / "st_tiny" / "gpt2.safetensors")
    assert model.config == Config(n_vocab=20, n_ctx=8, n_embd=64, n_head=1, n_layer=2)
    model.save(tmp_path / "m.npz")
    again = GPT2.load(tmp_path / "m.npz")
    assert again.config == model.config
    assert_same_tree(again.params, model.params)
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
    assert_same_tree(again.params, model.params)


def test_random_model_through_hf_names(tmp_path):
    """Our safetensors writer with Hugging Face names -> from_safetensors gives the same model."""
    model = GPT2.random(Config(n_vocab=30, n_ctx=16, n_embd=64, n_head=1, n_layer=3), seed=5)
    hf = {"transformer." + hf_name(name): arr for name, arr in flatten(model.params).items()}
    hf["lm_head.weight"] = model.params["wte"]
    write_safetensors(tmp_path / "m.safetensors", hf)
    again = GPT2.from_safetensors(tmp_path / "m.safetensors")
    assert again.config == model.config
    assert_same_tree(again.params, model.params)
