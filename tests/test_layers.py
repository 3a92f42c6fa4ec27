"""The formulas of gpt2np.layers, checked against their definitions and properties.

Expected values come from the math (scalar evaluations with Python's ``math``, identities, loops
written out here), not from the functions under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpt2np import layers as L


def rng(seed=0):
    return np.random.default_rng(seed)


# ---- gelu ----------------------------------------------------------------------------------------


def gelu_scalar(x: float) -> float:
    return 0.5 * x * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def test_gelu_is_the_tanh_approximation():
    xs = np.linspace(-6, 6, 121)
    expected = np.array([gelu_scalar(float(x)) for x in xs])
    np.testing.assert_allclose(L.gelu(xs), expected, rtol=1e-14, atol=1e-15)
    # and not the erf form: they differ by up to ~1e-3 (docs/formats.md §10)
    erf_gelu = np.array([0.5 * x * (1 + math.erf(x / math.sqrt(2))) for x in xs])
    assert 1e-4 < np.abs(L.gelu(xs) - erf_gelu).max() < 2e-3


def test_gelu_limits():
    assert L.gelu(np.array(0.0)) == 0.0
    np.testing.assert_allclose(L.gelu(np.array([30.0, -30.0])), [30.0, 0.0], atol=1e-12)


# ---- softmax / log_softmax ---------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-50, 50), min_size=1, max_size=12))
def test_softmax_matches_definition(values):
    x = np.array(values)
    e = [math.exp(v - max(values)) for v in values]
    np.testing.assert_allclose(L.softmax(x), np.array(e) / sum(e), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(L.log_softmax(x), np.log(np.array(e) / sum(e)), rtol=1e-10, atol=1e-12)


def test_softmax_is_stable_and_shift_invariant():
    x = np.array([1000.0, 1001.0, 999.0])
    p = L.softmax(x)
    assert np.isfinite(p).all() and abs(p.sum() - 1) < 1e-15
    np.testing.assert_allclose(p, L.softmax(x - 1000.0), rtol=1e-15)
    assert np.isfinite(L.log_softmax(np.array([0.0, -1e4]))).all()  # log(0) avoided


def test_softmax_axis_and_masked_entries():
    x = rng().standard_normal((2, 3, 4))
    p = L.softmax(x, axis=1)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-14)
    masked = L.softmax(np.array([0.3, 0.1 + L.MASKED, -0.2], dtype=np.float32))
    assert masked[1] == 0.0  # exactly zero weight for a masked entry


# ---- layer_norm --------------------------------------------------------------------------------------


def test_layer_norm_matches_definition_with_biased_variance_and_eps_inside_the_root():
    x = rng(1).standard_normal((3, 5)) * 2 + 1
    g, b = rng(2).standard_normal(5), rng(3).standard_normal(5)
    expected = np.empty_like(x)
    for r, row in enumerate(x.tolist()):
        mu = sum(row) / len(row)
        var = sum((v - mu) ** 2 for v in row) / len(row)  # biased: divide by n, not n - 1
        expected[r] = [(v - mu) / math.sqrt(var + 1e-5) for v in row]
    np.testing.assert_allclose(L.layer_norm(x, g, b), expected * g + b, rtol=1e-12, atol=1e-12)


def test_layer_norm_eps_matters_for_small_variance():
    # variance 1e-6: with eps inside the root the output is 1e-3/sqrt(1.1e-5) ≈ 0.3015, not 1
    x = np.array([[-1e-3, 1e-3]])
    out = L.layer_norm(x, np.ones(2), np.zeros(2))
    np.testing.assert_allclose(out, [[-1e-3 / math.sqrt(1e-6 + 1e-5), 1e-3 / math.sqrt(1e-6 + 1e-5)]], rtol=1e-12)


# ---- linear, heads, masks -----------------------------------------------------------------------------


def test_linear_is_x_w_plus_b_with_w_in_out():
    x, w, b = rng(4).standard_normal((2, 3, 4)), rng(5).standard_normal((4, 6)), rng(6).standard_normal(6)
    expected = np.einsum("bti,io->bto", x, w) + b
    np.testing.assert_allclose(L.linear(x, w, b), expected, rtol=1e-12)


def test_split_and_merge_heads():
    x = np.arange(2 * 3 * 8).reshape(2, 3, 8)  # [B, T, d], H = 2, dh = 4
    h = L.split_heads(x, 2)
    assert h.shape == (2, 2, 3, 4)
    np.testing.assert_array_equal(h[1, 1, 2], x[1, 2, 4:8])  # head j = features j*dh:(j+1)*dh
    np.testing.assert_array_equal(L.merge_heads(h), x)


def test_causal_mask_counts_from_the_lower_right_corner():
    m = L.causal_mask(2, 4)
    assert m.dtype == np.float32
    # queries are positions 2 and 3 of 4: the first sees keys 0..2, the second all
    np.testing.assert_array_equal(m == 0, [[1, 1, 1, 0], [1, 1, 1, 1]])
    assert (m[m != 0] == -1e10).all()
    np.testing.assert_array_equal(L.causal_mask(3, 3, np.float64) == 0, np.tri(3, dtype=bool))


# ---- attention -----------------------------------------------------------------------------------------


def test_attention_matches_the_formula_row_by_row():
    q, k, v = (rng(s).standard_normal(shape) for s, shape in [(7, (3, 5)), (8, (4, 5)), (9, (4, 2))])
    mask = L.causal_mask(3, 4, np.float64)
    out = L.attention(q, k, v, mask)
    for i in range(3):
        visible = range(i + 2)  # query i is position i + 1 of 4
        s = [float(q[i] @ k[j]) / math.sqrt(5) for j in visible]
        w = [math.exp(x - max(s)) for x in s]
        expected = sum(wj / sum(w) * v[j] for wj, j in zip(w, visible))
        np.testing.assert_allclose(out[i], expected, rtol=1e-12)


def test_attention_special_cases():
    v = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    q = np.zeros((1, 4))
    k = rng().standard_normal((3, 4))
    np.testing.assert_allclose(L.attention(q, k, v), [[3.0, 4.0]])  # q = 0: plain average
    mask = np.array([[L.MASKED, 0.0, L.MASKED]])
    np.testing.assert_allclose(L.attention(q + 5, k, v, mask), [[3.0, 4.0]])  # only key 1 visible


def test_multi_head_attention_equals_heads_computed_one_by_one():
    B, T, d, H = 2, 5, 12, 3
    r = rng(10)
    x = r.standard_normal((B, T, d))
    c_attn = {"w": r.standard_normal((d, 3 * d)) * 0.3, "b": r.standard_normal(3 * d) * 0.1}
    c_proj = {"w": r.standard_normal((d, d)) * 0.3, "b": r.standard_normal(d) * 0.1}
    mask = L.causal_mask(T, T, np.float64)
    out = L.multi_head_attention(x, c_attn, c_proj, H, mask)
    dh = d // H
    for bi in range(B):
        qkv = x[bi] @ c_attn["w"] + c_attn["b"]
        heads = []
        for j in range(H):  # the loop the library avoids, as an independent reference
            q = qkv[:, j * dh:(j + 1) * dh]
            k = qkv[:, d + j * dh:d + (j + 1) * dh]
            v = qkv[:, 2 * d + j * dh:2 * d + (j + 1) * dh]
            s = q @ k.T / math.sqrt(dh) + np.where(np.tri(T, dtype=bool), 0.0, -np.inf)
            w = np.exp(s - s.max(axis=1, keepdims=True))
            heads.append((w / w.sum(axis=1, keepdims=True)) @ v)
        expected = np.concatenate(heads, axis=1) @ c_proj["w"] + c_proj["b"]
        np.testing.assert_allclose(out[bi], expected, rtol=1e-10, atol=1e-12)


def test_multi_head_attention_kv_store_sees_new_keys_and_supplies_all():
    r = rng(11)
    d, H, T = 8, 2, 4
    x = r.standard_normal((T, d))
    c_attn = {"w": r.standard_normal((d, 3 * d)), "b": np.zeros(3 * d)}
    c_proj = {"w": np.eye(d), "b": np.zeros(d)}
    full = L.multi_head_attention(x, c_attn, c_proj, H, L.causal_mask(T, T, np.float64))
    store = {}

    def kv_store(k, v):  # a tiny cache: keep what came, return everything so far
        assert k.shape == (H, 1, d // H)
        store["k"] = np.concatenate([store["k"], k], axis=-2) if "k" in store else k
        store["v"] = np.concatenate([store["v"], v], axis=-2) if "v" in store else v
        return store["k"], store["v"]

    steps = [L.multi_head_attention(x[t:t + 1], c_attn, c_proj, H, None, kv_store) for t in range(T)]
    np.testing.assert_allclose(np.concatenate(steps), full, rtol=1e-12)


# ---- mlp and block -------------------------------------------------------------------------------------


def make_block_params(d, r, dtype=np.float64):
    def lin(i, o):
        return {"w": (r.standard_normal((i, o)) * 0.2).astype(dtype), "b": (r.standard_normal(o) * 0.1).astype(dtype)}

    def ln():
        return {"g": (1 + 0.1 * r.standard_normal(d)).astype(dtype), "b": (0.1 * r.standard_normal(d)).astype(dtype)}

    return {"ln_1": ln(), "attn": {"c_attn": lin(d, 3 * d), "c_proj": lin(d, d)},
            "ln_2": ln(), "mlp": {"c_fc": lin(d, 4 * d), "c_proj": lin(4 * d, d)}}


def test_mlp_is_gelu_between_two_linears():
    r = rng(12)
    p = make_block_params(6, r)["mlp"]
    x = r.standard_normal((3, 6))
    h = x @ p["c_fc"]["w"] + p["c_fc"]["b"]
    expected = np.vectorize(gelu_scalar)(h) @ p["c_proj"]["w"] + p["c_proj"]["b"]
    np.testing.assert_allclose(L.mlp(x, **p), expected, rtol=1e-12)


def test_block_is_pre_ln_with_two_residuals():
    r = rng(13)
    d, H, T = 8, 2, 5
    p = make_block_params(d, r)
    x = r.standard_normal((T, d))
    mask = L.causal_mask(T, T, np.float64)
    h = x + L.multi_head_attention(L.layer_norm(x, **p["ln_1"]), **p["attn"], n_head=H, mask=mask)
    expected = h + L.mlp(L.layer_norm(h, **p["ln_2"]), **p["mlp"])
    np.testing.assert_allclose(L.block(x, p, H, mask), expected, rtol=1e-12)


def test_block_accepts_any_leading_batch_shape():
    r = rng(14)
    d, H, T = 8, 2, 3
    p = make_block_params(d, r)
    x = r.standard_normal((2, 3, T, d))
    mask = L.causal_mask(T, T, np.float64)
    out = L.block(x, p, H, mask)
    assert out.shape == x.shape
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(out[i, j], L.block(x[i, j], p, H, mask), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_formula_keeps_the_dtype(dtype):
    r = rng(15)
    d, H, T = 8, 2, 3
    p = make_block_params(d, r, dtype)
    x = r.standard_normal((T, d)).astype(dtype)
    mask = L.causal_mask(T, T, dtype)
    results = {
        "gelu": L.gelu(x), "softmax": L.softmax(x), "log_softmax": L.log_softmax(x),
        "layer_norm": L.layer_norm(x, **p["ln_1"]), "linear": L.linear(x, **p["attn"]["c_proj"]),
        "attention": L.attention(x, x, x, mask), "mlp": L.mlp(x, **p["mlp"]),
        "mha": L.multi_head_attention(x, **p["attn"], n_head=H, mask=mask),
        "block": L.block(x, p, H, mask),
    }
    for name, out in results.items():
        assert out.dtype == dtype, f"{name} returned {out.dtype} for {np.dtype(dtype)} input"


def test_layers_imports_only_numpy():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(L))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"numpy", "__future__"}, imported
