"""The fast block (gpt2np.kernels, what the model runs) against the readable formulas (gpt2np.layers).

Random weights and inputs; every case the model meets: a prompt with the causal mask, a
left-padded batch, decode steps over a cache, query tiles that skip masked keys.  float64 must
agree to rounding (1e-12), float32 to float32 rounding.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpt2np import kernels, layers
from gpt2np.layers import MASKED

D, H = 64, 4  # dh = 16: the 1/sqrt(dh) scale is not a power of two here, so rounding is exercised


def random_block(rng, dtype, d=D):
    def w(*shape, std=0.2):
        return (rng.standard_normal(shape) * std).astype(dtype)

    def lin(n_in, n_out):
        return {"w": w(n_in, n_out), "b": w(n_out, std=0.1)}

    return {
        "ln_1": {"g": 1 + w(d, std=0.1), "b": w(d, std=0.1)},
        "attn": {"c_attn": lin(d, 3 * d), "c_proj": lin(d, d)},
        "ln_2": {"g": 1 + w(d, std=0.1), "b": w(d, std=0.1)},
        "mlp": {"c_fc": lin(d, 4 * d), "c_proj": lin(4 * d, d)},
    }


def mask_for(real, T):
    """Additive mask [B, 1, T, S] (causal and padding), as the model builds it."""
    S = real.shape[1]
    visible = np.tri(T, S, k=S - T, dtype=bool) & real[:, None, :]
    return np.where(visible, 0.0, MASKED)[:, None]


def store(past_k, past_v):
    """A kv_store that prepends fixed past keys/values (what a KV cache returns)."""
    def kv(k, v):
        return np.concatenate([past_k, k], axis=-2), np.concatenate([past_v, v], axis=-2)
    return kv


TOL = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: dict(rtol=2e-5, atol=2e-5)}


def check(x, params, mask, kv_store_fn, dtype, real_queries=None):
    """kernels.block == layers.block at every query that is a real token (``real_queries``
    [B, T], default all).  A padding query sees no real key: both give it some finite
    average of values that nothing reads (the readable version over all its keys, a tile
    over the keys in the tile), so it is only checked to be finite."""
    expected = layers.block(x, params, H, None if mask is None else mask.astype(dtype), kv_store_fn())
    work = x.copy()
    got = kernels.block(work, params, H, None if mask is None else mask.astype(dtype), kv_store_fn())
    assert got is work, "kernels.block updates x in place and returns it"
    assert got.dtype == dtype
    assert np.isfinite(got).all()
    real = np.ones(x.shape[:2], bool) if real_queries is None else real_queries
    np.testing.assert_allclose(got[real], expected[real], **TOL[dtype])
    assert np.abs(got - x).max() > 1e-3  # the block changed something (the test can fail)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_prompt_with_causal_mask(dtype):
    rng = np.random.default_rng(1)
    params, x = random_block(rng, dtype), rng.standard_normal((1, 9, D)).astype(dtype)
    check(x, params, layers.causal_mask(9, 9, np.float64), lambda: None, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_left_padded_batch(dtype):
    rng = np.random.default_rng(2)
    params, x = random_block(rng, dtype), rng.standard_normal((3, 7, D)).astype(dtype)
    real = np.ones((3, 7), bool)
    real[1, :3] = False  # row 1: three padding tokens on the left
    real[2, :6] = False  # row 2: one real token
    check(x, params, mask_for(real, 7), lambda: None, dtype, real)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_decode_step_over_a_cache(dtype):
    rng = np.random.default_rng(3)
    params, x = random_block(rng, dtype), rng.standard_normal((2, 1, D)).astype(dtype)
    past_k, past_v = (rng.standard_normal((2, H, 11, D // H)).astype(dtype) for _ in range(2))
    check(x, params, None, lambda: store(past_k, past_v), dtype)  # no mask: every key visible
    real = np.ones((2, 12), bool)
    real[0, :4] = False  # padding in the cache of row 0
    check(x, params, mask_for(real, 1), lambda: store(past_k, past_v), dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_query_tiles_with_cache_and_padding(dtype, monkeypatch):
    monkeypatch.setattr(kernels, "TILE_ELEMENTS", 1)  # tiles of MIN_TILE = 16 queries: 40 -> 3 tiles
    rng = np.random.default_rng(4)
    params, x = random_block(rng, dtype), rng.standard_normal((2, 40, D)).astype(dtype)
    past_k, past_v = (rng.standard_normal((2, H, 5, D // H)).astype(dtype) for _ in range(2))
    real = np.ones((2, 45), bool)
    real[1, :9] = False
    check(x, params, mask_for(real, 40), lambda: store(past_k, past_v), dtype, real[:, 5:])


def test_attention_tiles_skip_only_hidden_keys(monkeypatch):
    """Tiled attention equals the readable one for every tile size, T < S and T = S."""
    rng = np.random.default_rng(5)
    for T, S in ((33, 33), (20, 50)):
        q = rng.standard_normal((1, 2, T, 8))
        k, v = rng.standard_normal((2, 1, 2, S, 8))
        mask = layers.causal_mask(T, S, np.float64)
        expected = layers.attention(q, k, v, mask)
        for tile in (1, 2, 7, T):
            monkeypatch.setattr(kernels, "TILE_ELEMENTS", tile * 2 * S)  # B·H·tile·S
            monkeypatch.setattr(kernels, "MIN_TILE", 1)
            got = kernels.attention(q, k, v, mask)
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_layer_norm_matches_layers():
    rng = np.random.default_rng(7)
    for dtype in (np.float32, np.float64):
        x = (rng.standard_normal((2, 3, 50)) * 3 + 1).astype(dtype)
        g, b = rng.standard_normal((2, 50)).astype(dtype)
        got = kernels.layer_norm(x, g, b)
        assert got.dtype == dtype and got.shape == x.shape
        np.testing.assert_allclose(got, layers.layer_norm(x, g, b), **TOL[dtype])


def test_gelu_and_softmax_match_layers():
    rng = np.random.default_rng(6)
    for dtype in (np.float32, np.float64):
        x = (rng.standard_normal((5, 300)) * 4).astype(dtype)
        b = rng.standard_normal(300).astype(dtype)
        for chunk in (1, 700, 1 << 16):  # one row, blocks that do not divide the rows, all rows
            f = x.copy()
            got = kernels.bias_gelu_(f, b, chunk=chunk)
            assert got is f and got.dtype == dtype
            np.testing.assert_allclose(got, layers.gelu(x + b), **TOL[dtype])
        with pytest.raises(ValueError, match="C-contiguous"):
            kernels.bias_gelu_(x.T.copy().T, b)
        s = x.copy()
        out = kernels.softmax_(s)
        assert out is s and out.dtype == dtype
        np.testing.assert_allclose(out, layers.softmax(x), **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_model_forward_equals_the_readable_trace(dtype, monkeypatch):
    """End to end: GPT2.__call__ (kernels, in tiles of 16 queries) against GPT2.trace (layers)."""
    from gpt2np import GPT2, Config

    monkeypatch.setattr(kernels, "TILE_ELEMENTS", 1)  # every call with a mask runs in tiles
    model = GPT2.random(Config(n_vocab=97, n_ctx=64, n_embd=32, n_head=4, n_layer=2), seed=3, dtype=dtype)
    ids = np.random.default_rng(8).integers(0, 97, 50)
    expected = model.trace(ids)["logits"]  # [50, V], the readable formulas
    np.testing.assert_allclose(model(ids), expected, **TOL[dtype])
    cache = model.new_cache(1, 50)
    got = [model(ids[None, :37], cache=cache)[0]]  # a prompt of 37 (3 tiles), then one token at a time
    got += [model(ids[None, t:t + 1], cache=cache)[0] for t in range(37, 50)]
    np.testing.assert_allclose(np.concatenate(got), expected, **TOL[dtype])
