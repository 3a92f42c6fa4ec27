"""The fast block (gpt2np.kernels, what the model runs) against the readable formulas (gpt2np.layers),
and the threads that share a long input (gpt2np.parallel).

Random weights and inputs; every case the model meets: a prompt with the causal mask, a
left-padded batch, decode steps over a cache, query tiles that skip masked keys.  float64 must
agree to rounding (1e-12), float32 to float32 rounding.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from gpt2np import kernels, layers, parallel
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


def check(x, params, mask, kv_store_fn, dtype, real_queries=None, kernel_mask="same", causal=False):
    """kernels.block == layers.block at every query that is a real token (``real_queries``
    [B, T], default all).  layers gets ``mask`` (causal and padding in one); kernels gets
    ``kernel_mask`` (default the same) and ``causal``.  A padding query sees no real key: both
    give it some finite average of values that nothing reads (the readable version over all
    its keys, a tile over the keys in the tile), so it is only checked to be finite."""
    expected = layers.block(x, params, H, None if mask is None else mask.astype(dtype), kv_store_fn())
    work = x.copy()
    kmask = mask if isinstance(kernel_mask, str) else kernel_mask
    got = kernels.block(work, params, H, None if kmask is None else kmask.astype(dtype), kv_store_fn(), causal)
    assert got is work, "kernels.block updates x in place and returns it"
    assert got.dtype == dtype
    assert np.isfinite(got).all()
    real = np.ones(x.shape[:2], bool) if real_queries is None else real_queries
    np.testing.assert_allclose(got[real], expected[real], **TOL[dtype])
    assert np.abs(got - x).max() > 1e-3  # the block changed something (the test can fail)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("tile", [None, 1])
def test_prompt_causal(dtype, tile, monkeypatch):
    """What the model runs for a prompt with no padding: no mask, causal=True (the kernel
    hides later keys itself), in one tile or in tiles of MIN_TILE = 16 queries."""
    if tile:
        monkeypatch.setattr(kernels, "TILE_ELEMENTS", tile)
    rng = np.random.default_rng(1)
    params, x = random_block(rng, dtype), rng.standard_normal((2, 37, D)).astype(dtype)
    causal = layers.causal_mask(37, 37, np.float64)
    check(x, params, causal, lambda: None, dtype, kernel_mask=None, causal=True)
    check(x, params, causal, lambda: None, dtype, causal=True)  # the mask given as well
    check(x, params, causal, lambda: None, dtype)  # the mask alone (causal=False: one tile)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_left_padded_batch(dtype):
    rng = np.random.default_rng(2)
    params, x = random_block(rng, dtype), rng.standard_normal((3, 7, D)).astype(dtype)
    real = np.ones((3, 7), bool)
    real[1, :3] = False  # row 1: three padding tokens on the left
    real[2, :6] = False  # row 2: one real token
    check(x, params, mask_for(real, 7), lambda: None, dtype, real, causal=True)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_decode_step_over_a_cache(dtype):
    rng = np.random.default_rng(3)
    params, x = random_block(rng, dtype), rng.standard_normal((2, 1, D)).astype(dtype)
    past_k, past_v = (rng.standard_normal((2, H, 11, D // H)).astype(dtype) for _ in range(2))
    check(x, params, None, lambda: store(past_k, past_v), dtype)  # no mask: every key visible
    check(x, params, None, lambda: store(past_k, past_v), dtype, causal=True)  # the same for T = 1
    real = np.ones((2, 12), bool)
    real[0, :4] = False  # padding in the cache of row 0
    check(x, params, mask_for(real, 1), lambda: store(past_k, past_v), dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_query_tiles_with_cache(dtype, monkeypatch):
    monkeypatch.setattr(kernels, "TILE_ELEMENTS", 1)  # tiles of MIN_TILE = 16 queries: 40 -> 3 tiles
    rng = np.random.default_rng(4)
    params, x = random_block(rng, dtype), rng.standard_normal((2, 40, D)).astype(dtype)
    past_k, past_v = (rng.standard_normal((2, H, 5, D // H)).astype(dtype) for _ in range(2))
    real = np.ones((2, 45), bool)
    check(x, params, mask_for(real, 40), lambda: store(past_k, past_v), dtype, kernel_mask=None, causal=True)
    real[1, :9] = False
    check(x, params, mask_for(real, 40), lambda: store(past_k, past_v), dtype, real[:, 5:], causal=True)


def test_attention_tiles_skip_only_hidden_keys(monkeypatch):
    """Tiled attention equals the readable one for every tile size, T < S and T = S, with the
    causal part applied by the kernel (mask None) or given in the mask."""
    rng = np.random.default_rng(5)
    for T, S in ((33, 33), (20, 50)):
        q = rng.standard_normal((1, 2, T, 8))
        k, v = rng.standard_normal((2, 1, 2, S, 8))
        mask = layers.causal_mask(T, S, np.float64)
        expected = layers.attention(q, k, v, mask)
        for tile in (1, 2, 7, T):
            monkeypatch.setattr(kernels, "TILE_ELEMENTS", tile * 2 * S)  # B·H·tile·S
            monkeypatch.setattr(kernels, "MIN_TILE", 1)
            for kernel_mask in (None, mask):
                got = kernels.attention(q, k, v, kernel_mask, causal=True)
                np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert kernels.MASKED == layers.MASKED


class FakeBLAS:
    """Stands in for NumPy's OpenBLAS thread control: records every count it is set to."""

    def __init__(self, threads):
        self.count, self.calls = threads, []

    def get(self):
        return self.count

    def set(self, n):
        self.calls.append(n)
        self.count = n


def count_threads(monkeypatch):
    """A list that grows by one for every thread gpt2np.parallel starts."""
    started, real = [], parallel.threading.Thread
    monkeypatch.setattr(parallel.threading, "Thread", lambda **kw: started.append(kw) or real(**kw))
    return started


def test_in_parts_covers_every_index_once_in_as_many_threads(monkeypatch):
    started = count_threads(monkeypatch)
    for n, workers in ((10, 1), (10, 2), (10, 3), (7, 7), (3, 8), (1, 2)):
        del started[:]
        seen, together = [], threading.Barrier(min(workers, n), timeout=10)

        def run(part):
            seen.extend(range(n)[part])
            together.wait()  # every part waits for all the others: they run at the same time

        parallel.in_parts(n, run, workers)
        assert sorted(seen) == list(range(n))
        assert len(started) == min(workers, n) - 1  # the caller runs the first part itself


def test_an_error_in_a_helper_thread_reaches_the_caller():
    def run(part):
        if part.start > 0:
            raise RuntimeError(f"rows {part.start}..{part.stop}")

    with pytest.raises(RuntimeError, match="rows 6..12"):
        parallel.in_parts(12, run, 2)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_heads_in_threads_give_the_same_result(dtype, monkeypatch):
    """Attention with its heads split over 2, 3, 5 or 8 threads equals the one-thread result
    (to the bit when the tiles are the same; otherwise to rounding) and the readable one."""
    rng = np.random.default_rng(9)
    q, k, v = (rng.standard_normal((2, 5, 70, 16)).astype(dtype) for _ in range(3))
    pad = np.where(rng.random((2, 1, 70, 70)) < 0.2, layers.MASKED, 0.0).astype(dtype)
    pad[..., 0] = 0.0  # every query sees a key
    pad += layers.causal_mask(70, 70, dtype)
    started = count_threads(monkeypatch)
    for tiles in (1, 1 << 20):  # tiles of MIN_TILE queries whatever the heads, or tiles by size
        monkeypatch.setattr(kernels, "TILE_ELEMENTS", tiles)
        for mask in (None, pad, np.repeat(pad, 5, axis=1)):  # no mask, one for all heads, one per head
            serial = kernels.attention(q, k, v, mask, causal=True)
            readable_mask = layers.causal_mask(70, 70, dtype) if mask is None else mask
            np.testing.assert_allclose(serial, layers.attention(q, k, v, readable_mask),
                                       **TOL[dtype])
            for workers in (2, 3, 5, 8):
                del started[:]
                got = kernels.attention(q, k, v, mask, causal=True, workers=workers)
                assert len(started) == min(workers, 5) - 1
                if tiles == 1:
                    assert np.array_equal(got, serial), workers
                else:
                    np.testing.assert_allclose(got, serial, **TOL[dtype])


def test_block_refuses_an_x_it_cannot_update_in_place():
    rng = np.random.default_rng(12)
    params, x = random_block(rng, np.float64), rng.standard_normal((7, 2, D))
    with pytest.raises(ValueError, match="C-contiguous"):
        kernels.block(x.transpose(1, 0, 2), params, H)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_block_with_rows_in_threads(dtype):
    rng = np.random.default_rng(10)
    params, x = random_block(rng, dtype), rng.standard_normal((2, 21, D)).astype(dtype)
    past_k, past_v = (rng.standard_normal((2, H, 3, D // H)).astype(dtype) for _ in range(2))
    real = np.ones((2, 24), bool)
    real[0, :5] = False
    expected = layers.block(x, params, H, mask_for(real, 21).astype(dtype), store(past_k, past_v))
    for workers in (1, 2, 3, 7):
        got = kernels.block(x.copy(), params, H, mask_for(real, 21).astype(dtype), store(past_k, past_v),
                            causal=True, workers=workers)
        np.testing.assert_allclose(got[real[:, 3:]], expected[real[:, 3:]], **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_model_shares_a_long_input_among_threads_with_one_blas_thread(dtype, monkeypatch):
    """GPT2.__call__ on an input of at least PARALLEL_MIN_ROWS tokens: OpenBLAS set to one
    thread for the pass and restored after, as many Python threads as it had, the logits
    those of the readable trace; below the threshold, nothing changes."""
    from gpt2np import GPT2, Config

    model = GPT2.random(Config(n_vocab=97, n_ctx=64, n_embd=32, n_head=4, n_layer=2), seed=4, dtype=dtype)
    ids = np.random.default_rng(11).integers(0, 97, 40)
    expected = model.trace(ids)["logits"]
    fake = FakeBLAS(3)
    monkeypatch.setattr(parallel, "_openblas", lambda: parallel._OpenBLAS(fake.get, fake.set))
    monkeypatch.setattr(parallel, "PARALLEL_MIN_ROWS", 40)
    started = count_threads(monkeypatch)
    np.testing.assert_allclose(model(ids), expected, **TOL[dtype])
    assert fake.calls == [1, 3] and fake.count == 3
    assert len(started) == 2 * (3 * 2 + 1)  # 2 helpers for each of 3 stages x 2 blocks, and the head
    del started[:], fake.calls[:]
    np.testing.assert_allclose(model(ids[:39]), expected[:39], **TOL[dtype])  # 39 < 40 rows
    assert fake.calls == [] and started == []


def test_threads_sets_blas_to_one_and_restores_it_once(monkeypatch):
    fake = FakeBLAS(4)
    blas = parallel._OpenBLAS(fake.get, fake.set)
    monkeypatch.setattr(parallel, "_openblas", lambda: blas)
    with parallel.threads(4):
        assert fake.count == 1 and blas.threads() == 4  # the count outside the block
        with parallel.threads(2):  # nested (or another thread at the same time)
            assert fake.count == 1
        assert fake.count == 1
    assert fake.calls == [1, 4] and blas.threads() == 4
    with parallel.threads(1):  # one worker: BLAS keeps its threads
        pass
    assert fake.calls == [1, 4]
    assert parallel.threads_for(parallel.PARALLEL_MIN_ROWS) == 4
    assert parallel.threads_for(parallel.PARALLEL_MIN_ROWS - 1) == 1
    monkeypatch.setattr(parallel, "_openblas", lambda: None)  # no BLAS whose threads can be set
    assert parallel.threads_for(10 ** 6) == 1


def test_numpys_openblas_thread_count_can_be_read_and_set():
    """On a NumPy built with OpenBLAS (the PyPI wheels), gpt2np finds its thread control; on a
    NumPy with another BLAS (and no OpenBLAS loaded), it finds none and runs in one thread."""
    config = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    if "openblas" not in config.get("name", "").lower():
        assert parallel._openblas() is None, f"NumPy uses {config.get('name')}, yet an OpenBLAS was found"
        assert parallel.threads_for(10 ** 6) == 1
        return
    blas = parallel._openblas()
    assert blas is not None, "NumPy's OpenBLAS was not found among the loaded libraries"
    before = blas.get()
    assert before >= 1
    with parallel.threads(2):
        assert blas.get() == 1
    assert blas.get() == before


def test_layer_norm_matches_layers():
    rng = np.random.default_rng(7)
    for dtype in (np.float32, np.float64):
        x = (rng.standard_normal((2, 3, 50)) * 3 + 1).astype(dtype)
        g, b = rng.standard_normal((2, 50)).astype(dtype)
        got = kernels.layer_norm(x, g, b)
        assert got.dtype == dtype and got.shape == x.shape
        np.testing.assert_allclose(got, layers.layer_norm(x, g, b), **TOL[dtype])


def test_gelu_matches_layers():
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


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_model_forward_equals_the_readable_forward(dtype, monkeypatch):
    """End to end: GPT2.__call__ (kernels, in tiles of 16 queries) against layers.gpt2, the
    readable forward: one prompt, the same prompt fed through the KV cache, and a left-padded batch."""
    from gpt2np import GPT2, Config

    monkeypatch.setattr(kernels, "TILE_ELEMENTS", 1)  # every call with a mask runs in tiles
    model = GPT2.random(Config(n_vocab=97, n_ctx=64, n_embd=32, n_head=4, n_layer=2), seed=3, dtype=dtype)
    ids = np.random.default_rng(8).integers(0, 97, 50)
    expected = layers.gpt2(ids, model.params, 4)  # [50, V], the readable formulas
    assert expected.dtype == dtype
    np.testing.assert_allclose(model(ids), expected, **TOL[dtype])
    cache = model.new_cache(1, 50)
    got = [model(ids[None, :37], cache=cache)[0]]  # a prompt of 37 (3 tiles), then one token at a time
    got += [model(ids[None, t:t + 1], cache=cache)[0] for t in range(37, 50)]
    np.testing.assert_allclose(np.concatenate(got), expected, **TOL[dtype])

    real = np.ones((2, 50), bool)
    real[1, :13] = False  # row 1: 13 tokens of left padding
    positions = np.maximum(np.cumsum(real, axis=1) - 1, 0)
    readable = layers.gpt2(np.stack([ids, ids]), model.params, 4, positions, mask_for(real, 50).astype(dtype))
    got = model(np.stack([ids, ids]), attention_mask=real.astype(int))
    np.testing.assert_allclose(got[real], readable[real], **TOL[dtype])
    np.testing.assert_allclose(got[1, 13:], layers.gpt2(ids[13:], model.params, 4), **TOL[dtype])
