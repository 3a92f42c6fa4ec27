"""The backward pass (gpt2np.backward), checked against numbers it does not compute itself:

- every gradient function against central finite differences of the forward formula in float64
  (gpt2np.layers, or the model's forward), relative error within 1e-6 of the gradient's largest
  entry, on random inputs with causal and padding masks;
- ``loss_and_grads`` against transformers' autograd: ``tests/fixtures/grads_transformers.npz``,
  made by ``scripts/make_grad_reference.py`` (a 2-layer GPT-2 with every weight random; plain,
  labels with -100, a left-padded batch), float64 within 1e-10 and float32 within 1e-4 of each
  tensor's largest value.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from gpt2np import GPT2, Config
from gpt2np import backward as BW
from gpt2np import layers as L
from helpers import assert_within

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "grads_transformers.npz"
FD_RTOL = 1e-6
RTOL = {"f64": 1e-10, "f32": 1e-4}
DTYPES = {"f64": np.float64, "f32": np.float32}


def rng(seed=0):
    return np.random.default_rng(seed)


# ---- helpers -----------------------------------------------------------------------------------


def numeric_grad(f, x, h=1e-6):
    """Central differences (f(x + h·e_i) − f(x − h·e_i)) / 2h for every entry i of x (float64);
    x is changed in place and restored."""
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    assert np.shares_memory(flat, x)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        up = f()
        flat[i] = old - h
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * h)
    return g


def assert_grad_close(name, ours, ref, rtol):
    """|ours − ref| <= rtol · max|ref|; on failure name the tensor, show both sides and the worst entry."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape, f"{name}: shape {ours.shape}, reference {ref.shape}"
    scale = np.abs(ref).max() if ref.size else 0.0
    limit = rtol * scale
    worst = assert_within(name, ours, ref, limit, f"{rtol:g} x max|reference| = {limit:.3e}")
    return worst / scale if scale else 0.0


def check_fd(name, analytic, loss, x):
    """The analytic gradient of ``loss()`` with respect to x against central differences."""
    assert analytic.dtype == x.dtype, f"{name}: dtype {analytic.dtype}, expected {x.dtype}"
    assert_grad_close(name, analytic, numeric_grad(loss, x), FD_RTOL)


def _leaves(tree, path=""):
    """(path, array) of every array of a params tree, paths like ``blocks[1].attn.c_attn.w``."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _leaves(v, f"{path}.{k}" if path else k)
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            yield from _leaves(v, f"{path}[{i}]")
    else:
        yield path, tree


def param_shapes(c):
    """GPT-2's params tree with shapes for arrays, written out here."""
    d = c.n_embd

    def ln():
        return {"g": (d,), "b": (d,)}

    def lin(n_in, n_out):
        return {"w": (n_in, n_out), "b": (n_out,)}

    block = {"ln_1": ln(), "attn": {"c_attn": lin(d, 3 * d), "c_proj": lin(d, d)},
             "ln_2": ln(), "mlp": {"c_fc": lin(d, 4 * d), "c_proj": lin(4 * d, d)}}
    return {"wte": (c.n_vocab, d), "wpe": (c.n_ctx, d), "blocks": [block] * c.n_layer, "ln_f": ln()}


def random_params(config, seed=0, scale=0.3):
    """A params tree with every weight random (biases and layer norms too), float64."""
    r = rng(seed)

    def make(path, shape):
        if path.endswith(".g"):
            return 1.0 + 0.3 * r.standard_normal(shape)
        return scale * r.standard_normal(shape)

    def build(tree, path):
        if isinstance(tree, dict):
            return {k: build(v, f"{path}.{k}") for k, v in tree.items()}
        if isinstance(tree, list):
            return [build(v, f"{path}[{i}]") for i, v in enumerate(tree)]
        return make(path, tree)

    return build(param_shapes(config), "p")


def padding_mask(lengths, T, dtype=np.float64):
    """The model's additive mask [B, 1, T, T] for left-padded rows (causal, padded keys hidden),
    written out here: query i of row r sees key j iff j <= i and j is one of the last lengths[r]."""
    B = len(lengths)
    m = np.full((B, 1, T, T), L.MASKED, dtype=dtype)
    for r, n in enumerate(lengths):
        for i in range(T):
            for j in range(T - n, i + 1):
                m[r, 0, i, j] = 0.0
    return m


def tree_get(tree, path):
    for key in path:
        tree = tree[key]
    return tree


# ---- elementwise and per-row formulas ------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1 << 16, 5])  # one block; blocks of 5 (the last one shorter)
def test_gelu(chunk):
    x = rng(1).standard_normal((3, 7)) * 2.5
    dy = rng(2).standard_normal(x.shape)
    check_fd("gelu dx", BW.gelu(dy, x, chunk=chunk), lambda: (dy * L.gelu(x)).sum(), x)


def test_gelu_of_views_and_float32():
    x = rng(3).standard_normal((4, 6)) * 2
    dy = rng(4).standard_normal((6, 4)).T  # not contiguous
    expected = BW.gelu(np.ascontiguousarray(dy), x)
    np.testing.assert_array_equal(BW.gelu(dy, x, chunk=7), expected)
    np.testing.assert_array_equal(BW.gelu(dy[:, ::2], x[:, ::2], chunk=5), expected[:, ::2])
    out32 = BW.gelu(dy.astype(np.float32), x.astype(np.float32))
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, expected, rtol=1e-5, atol=1e-6)


def test_gelu_derivative_at_known_points():
    # GELU'(0) = ½ exactly; far out the curve is x (derivative 1) or 0
    np.testing.assert_allclose(BW.gelu(np.ones(3), np.array([0.0, 20.0, -20.0])), [0.5, 1.0, 0.0], atol=1e-12)


@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax(axis):
    x = rng(3).standard_normal((4, 5)) * 2
    dy = rng(4).standard_normal(x.shape)
    y = L.softmax(x, axis=axis)
    dx = BW.softmax(dy, y, axis=axis)
    check_fd("softmax dx", dx, lambda: (dy * L.softmax(x, axis=axis)).sum(), x)
    np.testing.assert_allclose(dx.sum(axis=axis), 0.0, atol=1e-14)


def test_layer_norm():
    d = 6
    x = rng(5).standard_normal((2, 3, d)) * 3 + 1
    g, b = 1 + 0.3 * rng(6).standard_normal(d), rng(7).standard_normal(d)
    dy = rng(8).standard_normal(x.shape)
    dx, grads = BW.layer_norm(dy, x, g, b)
    assert set(grads) == {"g", "b"}
    loss = lambda: (dy * L.layer_norm(x, g, b)).sum()  # noqa: E731
    check_fd("layer_norm dx", dx, loss, x)
    check_fd("layer_norm dg", grads["g"], loss, g)
    check_fd("layer_norm db", grads["b"], loss, b)


def test_linear():
    x = rng(9).standard_normal((2, 3, 4))
    w, b = rng(10).standard_normal((4, 5)), rng(11).standard_normal(5)
    dy = rng(12).standard_normal((2, 3, 5))
    dx, grads = BW.linear(dy, x, w, b)
    loss = lambda: (dy * L.linear(x, w, b)).sum()  # noqa: E731
    check_fd("linear dx", dx, loss, x)
    check_fd("linear dw", grads["w"], loss, w)
    check_fd("linear db", grads["b"], loss, b)


def ce_loss(logits, targets):
    """Mean −log softmax(logits)[target], written out with Python floats."""
    total = 0.0
    for row, t in zip(logits, targets):
        m = max(row)
        total += -(row[t] - m - np.log(sum(np.exp(v - m) for v in row)))
    return float(total / len(targets))


def test_cross_entropy():
    z = rng(13).standard_normal((5, 7)) * 2
    t = np.array([0, 6, 3, 3, 1])
    loss, dz = BW.cross_entropy(z, t)
    assert abs(loss - ce_loss(z, t)) < 1e-13
    check_fd("cross_entropy dz", dz, lambda: ce_loss(z, t), z)


def test_tied_head():
    x, wte = rng(14).standard_normal((2, 3, 4)), rng(15).standard_normal((7, 4))
    dlogits = rng(16).standard_normal((2, 3, 7))
    dx, dwte = BW.tied_head(dlogits, x, wte)
    loss = lambda: (dlogits * L.tied_head(x, wte)).sum()  # noqa: E731
    check_fd("tied_head dx", dx, loss, x)
    check_fd("tied_head dwte", dwte, loss, wte)


@pytest.mark.parametrize("chunk_elements", [1, 2 * 11 + 5, 1 << 22])  # one row at a time, uneven chunks, one chunk
def test_tied_head_cross_entropy(chunk_elements):
    x, wte = rng(17).standard_normal((9, 4)), rng(18).standard_normal((11, 4))
    t = rng(19).integers(0, 11, size=9)
    loss, dx, dwte = BW.tied_head_cross_entropy(x, wte, t, chunk_elements=chunk_elements)
    assert isinstance(loss, float)
    f = lambda: ce_loss(x @ wte.T, t)  # noqa: E731
    assert abs(loss - f()) < 1e-13
    check_fd("head+CE dx", dx, f, x)
    check_fd("head+CE dwte", dwte, f, wte)


def test_add_product_in_blocks_of_rows():
    out, a, b = rng(26).standard_normal((7, 3)), rng(27).standard_normal((7, 4)), rng(28).standard_normal((4, 3))
    expected = out + np.einsum("ik,kj->ij", a, b)
    BW._add_product(out, a, b, rows=3)  # blocks of 3, 3, 1 rows
    np.testing.assert_allclose(out, expected, rtol=1e-14)


def test_tied_head_cross_entropy_keeps_float32_and_large_logits_finite():
    x = rng(20).standard_normal((6, 8)).astype(np.float32) * 30  # logits of hundreds: exp would overflow
    wte = rng(21).standard_normal((13, 8)).astype(np.float32)
    t = rng(22).integers(0, 13, size=6)
    loss, dx, dwte = BW.tied_head_cross_entropy(x, wte, t, chunk_elements=26)
    assert dx.dtype == dwte.dtype == np.float32
    assert abs(loss - ce_loss(x.astype(np.float64) @ wte.T.astype(np.float64), t)) < 1e-4 * abs(loss)
    assert np.isfinite(dx).all() and np.isfinite(dwte).all()


def test_embedding_adds_repeated_ids_and_positions():
    V, C, d = 7, 5, 3
    wte, wpe = rng(23).standard_normal((V, d)), rng(24).standard_normal((C, d))
    ids = np.array([[1, 4, 1, 1], [6, 4, 0, 0]])  # repeats within and across rows, unused ids
    positions = np.array([[0, 1, 2, 3], [0, 0, 0, 1]])  # as left padding makes them
    dx = rng(25).standard_normal((2, 4, d))
    g = BW.embedding(dx, ids, positions, wte, wpe)
    loss = lambda: (dx * L.embedding(ids, positions, wte, wpe)).sum()  # noqa: E731
    check_fd("embedding dwte", g["wte"], loss, wte)
    check_fd("embedding dwpe", g["wpe"], loss, wpe)
    other = rng(26).standard_normal((V, d))  # wte's gradient from the tied head
    into = other.copy()
    g2 = BW.embedding(dx, ids, positions, wte, wpe, dwte=into)
    assert g2["wte"] is into
    np.testing.assert_allclose(into, other + g["wte"], rtol=1e-15, atol=1e-15)


# ---- attention, MLP, block, transformer -----------------------------------------------------------


def attention_inputs(B=2, H=3, T=5, S=5, dh=4, seed=30):
    r = rng(seed)
    return r.standard_normal((B, H, T, dh)), r.standard_normal((B, H, S, dh)), r.standard_normal((B, H, S, dh))


def attention_cases():
    """(name, T, S, mask, which query rows get an upstream gradient)."""
    T = 5
    key_mask = np.where(rng(31).random((2, 3, T, T)) < 0.4, L.MASKED, 0.0)
    key_mask[..., 0] = 0.0  # every query sees at least key 0
    return [
        ("no mask", T, T, None, None),
        ("causal", T, T, L.causal_mask(T, T, np.float64), None),
        ("causal, 3 new queries over 5 keys", 3, T, L.causal_mask(3, T, np.float64), None),
        # padded queries see no key; their output is never used, so they get no gradient
        ("left padding", T, T, padding_mask([5, 3], T), np.array([[1] * 5, [0, 0, 1, 1, 1]], bool)),
        ("random keys hidden, per head", T, T, key_mask, None),
    ]


@pytest.mark.parametrize("name, T, S, mask, used", attention_cases(), ids=[c[0] for c in attention_cases()])
def test_attention(name, T, S, mask, used):
    q, k, v = attention_inputs(T=T, S=S)
    dout = rng(32).standard_normal(q.shape[:-1] + (v.shape[-1],))
    if used is not None:
        dout *= used[:, None, :, None]
    rec = L.Record()
    L.attention(q, k, v, mask, rec)
    dq, dk, dv = BW.attention(dout, q, k, v, mask, rec)
    loss = lambda: (dout * L.attention(q, k, v, mask)).sum()  # noqa: E731
    check_fd(f"{name}: dq", dq, loss, q)
    check_fd(f"{name}: dk", dk, loss, k)
    check_fd(f"{name}: dv", dv, loss, v)
    for ours, again in zip((dq, dk, dv), BW.attention(dout, q, k, v, mask)):  # recomputed, no record
        np.testing.assert_array_equal(ours, again)


def test_attention_hidden_keys_get_no_gradient():
    q, k, v = attention_inputs()
    T = q.shape[-2]
    # the last key is seen only by the last query: its gradient comes from that row alone
    dout = np.zeros(q.shape)
    dout[..., :-1, :] = 1.0
    _, dk, dv = BW.attention(dout, q, k, v, L.causal_mask(T, T, np.float64))
    assert (dk[..., -1, :] == 0).all() and (dv[..., -1, :] == 0).all()


def mha_params(d, seed):
    r = rng(seed)
    return ({"w": 0.4 * r.standard_normal((d, 3 * d)), "b": 0.2 * r.standard_normal(3 * d)},
            {"w": 0.4 * r.standard_normal((d, d)), "b": 0.2 * r.standard_normal(d)})


MASKS = {
    "causal": (None, None),
    "left padding": (padding_mask([6, 4], 6), np.array([[1] * 6, [0, 0, 1, 1, 1, 1]], bool)),
}


@pytest.mark.parametrize("mask_name", MASKS)
def test_multi_head_attention(mask_name):
    B, T, d, H = 2, 6, 8, 2
    mask, used = MASKS[mask_name]
    mask = L.causal_mask(T, T, np.float64) if mask is None else mask
    x = rng(40).standard_normal((B, T, d))
    c_attn, c_proj = mha_params(d, 41)
    dy = rng(42).standard_normal((B, T, d)) * (1 if used is None else used[..., None])
    dx, grads = BW.multi_head_attention(dy, x, c_attn, c_proj, H, mask)
    loss = lambda: (dy * L.multi_head_attention(x, c_attn, c_proj, H, mask)).sum()  # noqa: E731
    check_fd(f"mha {mask_name}: dx", dx, loss, x)
    for part, p in (("c_attn", c_attn), ("c_proj", c_proj)):
        for leaf in ("w", "b"):
            check_fd(f"mha {mask_name}: d{part}.{leaf}", grads[part][leaf], loss, p[leaf])


def test_mlp():
    x = rng(50).standard_normal((2, 3, 4))
    r = rng(51)
    c_fc = {"w": 0.5 * r.standard_normal((4, 16)), "b": 0.3 * r.standard_normal(16)}
    c_proj = {"w": 0.5 * r.standard_normal((16, 4)), "b": 0.3 * r.standard_normal(4)}
    dy = rng(52).standard_normal((2, 3, 4))
    dx, grads = BW.mlp(dy, x, c_fc, c_proj)
    loss = lambda: (dy * L.mlp(x, c_fc, c_proj)).sum()  # noqa: E731
    check_fd("mlp dx", dx, loss, x)
    for part, p in (("c_fc", c_fc), ("c_proj", c_proj)):
        for leaf in ("w", "b"):
            check_fd(f"mlp d{part}.{leaf}", grads[part][leaf], loss, p[leaf])


CONFIG = Config(n_vocab=11, n_ctx=8, n_embd=8, n_head=2, n_layer=2)


@pytest.mark.parametrize("mask_name", MASKS)
def test_block(mask_name):
    B, T, d, H = 2, 6, CONFIG.n_embd, CONFIG.n_head
    mask, used = MASKS[mask_name]
    mask = L.causal_mask(T, T, np.float64) if mask is None else mask
    params = random_params(CONFIG, seed=60)["blocks"][0]
    x = rng(61).standard_normal((B, T, d))
    dy = rng(62).standard_normal((B, T, d)) * (1 if used is None else used[..., None])
    rec = L.Record(drop={"scores"})
    L.block(x, params, H, mask, record=rec)
    dx, grads = BW.block(dy, x, params, H, mask, rec)
    loss = lambda: (dy * L.block(x, params, H, mask)).sum()  # noqa: E731
    check_fd(f"block {mask_name}: dx", dx, loss, x)
    flat = dict(_leaves(params))
    assert sorted(p for p, _ in _leaves(grads)) == sorted(flat)
    for path, g in _leaves(grads):
        check_fd(f"block {mask_name}: d{path}", g, loss, flat[path])


@pytest.mark.parametrize("mask_name", MASKS)
def test_transformer(mask_name):
    T = 6
    mask, used = MASKS[mask_name]
    ids = rng(70).integers(0, CONFIG.n_vocab, size=(2, T))
    if used is None:
        positions = None
    else:  # the model's rule for left padding: max(cumsum(mask) - 1, 0)
        positions = np.maximum(np.cumsum(used, axis=1) - 1, 0)
    params = random_params(CONFIG, seed=71)
    dh = rng(72).standard_normal((2, T, CONFIG.n_embd)) * (1 if used is None else used[..., None])
    rec = L.Record(drop={"scores"})
    L.transformer(ids, params, CONFIG.n_head, positions, mask, rec)
    grads = BW.transformer(dh, ids, params, CONFIG.n_head, positions, mask, rec)
    loss = lambda: (dh * L.transformer(ids, params, CONFIG.n_head, positions, mask)).sum()  # noqa: E731
    flat = dict(_leaves(params))
    assert [p for p, _ in _leaves(grads)] == list(flat)  # the same tree, in the same order
    for path, g in _leaves(grads):
        check_fd(f"transformer {mask_name}: d{path}", g, loss, flat[path])


# ---- loss_and_grads ---------------------------------------------------------------------------------


def np_loss(model, ids, targets, attention_mask=None):
    """Mean −log p(target) over the entries of targets [B, T] that are not −100 (target of
    position t), from the model's forward logits, written out here."""
    logits = model(ids, attention_mask=attention_mask).astype(np.float64)
    total, n = 0.0, 0
    for b, t in zip(*np.nonzero(targets != -100)):
        row = logits[b, t]
        m = row.max()
        total += -(row[targets[b, t]] - m - np.log(np.exp(row - m).sum()))
        n += 1
    return total / n


def fd_entries(model, grads, loss, n_random=2, seed=80):
    """Check a few entries of every tensor (its largest gradient and ``n_random`` random ones)
    against central differences of ``loss()`` with that one weight moved."""
    r = rng(seed)
    flat = dict(_leaves(model.params))
    for path, g in _leaves(grads):
        w = flat[path]
        picks = [np.unravel_index(np.argmax(np.abs(g)), g.shape)]
        picks += [tuple(int(r.integers(0, s)) for s in g.shape) for _ in range(n_random)]
        fd = []
        for at in picks:
            old = w[at]
            w[at] = old + 1e-6
            up = loss()
            w[at] = old - 1e-6
            down = loss()
            w[at] = old
            fd.append((up - down) / 2e-6)
        assert_grad_close(f"d{path} at {picks}", np.array([g[at] for at in picks]), np.array(fd), FD_RTOL)


@pytest.fixture
def tiny():
    return GPT2(CONFIG, random_params(CONFIG, seed=90))


def test_loss_and_grads_against_finite_differences(tiny):
    ids = rng(91).integers(0, CONFIG.n_vocab, size=(2, 7))
    loss, grads = BW.loss_and_grads(tiny, ids)
    assert abs(loss - tiny.loss(ids)) < 1e-12
    assert [p for p, _ in _leaves(grads)] == [p for p, _ in _leaves(tiny.params)]
    fd_entries(tiny, grads, lambda: tiny.loss(ids))


def test_loss_and_grads_with_labels_against_finite_differences(tiny):
    ids = rng(92).integers(0, CONFIG.n_vocab, size=(2, 7))
    labels = rng(93).integers(0, CONFIG.n_vocab, size=(2, 7))
    labels[0, 3] = labels[1, 1] = labels[1, 6] = -100
    targets = np.full(ids.shape, -100)
    targets[:, :-1] = labels[:, 1:]  # position t predicts labels[t + 1]
    loss, grads = BW.loss_and_grads(tiny, ids, labels=labels)
    assert abs(loss - np_loss(tiny, ids, targets)) < 1e-12
    fd_entries(tiny, grads, lambda: np_loss(tiny, ids, targets), seed=94)


def test_loss_and_grads_with_padding_against_finite_differences(tiny):
    T = 7
    ids = rng(95).integers(0, CONFIG.n_vocab, size=(3, T))
    mask = np.array([[1] * 7, [0, 0, 0, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1, 1]])
    # without labels: counted where a real token predicts a real token
    targets = np.full(ids.shape, -100)
    for b in range(3):
        for t in range(T - 1):
            if mask[b, t] and mask[b, t + 1]:
                targets[b, t] = ids[b, t + 1]
    loss, grads = BW.loss_and_grads(tiny, ids, attention_mask=mask)
    assert abs(loss - np_loss(tiny, ids, targets, mask)) < 1e-12
    fd_entries(tiny, grads, lambda: np_loss(tiny, ids, targets, mask), seed=96)


def test_padding_changes_nothing_but_the_count(tiny):
    """A left-padded batch gives the counted-weighted sum of what each row gives alone."""
    rows = [rng(97).integers(0, CONFIG.n_vocab, size=n) for n in (7, 4)]
    T = 7
    ids = np.zeros((2, T), dtype=np.int64)
    mask = np.zeros((2, T), dtype=np.int64)
    for b, row in enumerate(rows):
        ids[b, T - len(row):], mask[b, T - len(row):] = row, 1
        ids[b, :T - len(row)] = 5  # junk in the padding
    loss, grads = BW.loss_and_grads(tiny, ids, attention_mask=mask)
    alone = [BW.loss_and_grads(tiny, row) for row in rows]
    counts = [len(row) - 1 for row in rows]
    assert abs(loss - sum(c * a[0] for c, a in zip(counts, alone)) / sum(counts)) < 1e-12
    g_alone = [dict(_leaves(a[1])) for a in alone]
    for path, g in _leaves(grads):
        expected = sum(c * ga[path] for c, ga in zip(counts, g_alone)) / sum(counts)
        assert_grad_close(f"padded batch d{path}", g, expected, 1e-12)


def test_float32_grads_stay_float32_and_match_float64(tiny):
    ids = rng(98).integers(0, CONFIG.n_vocab, size=(2, 7))
    loss64, g64 = BW.loss_and_grads(tiny, ids)
    loss32, g32 = BW.loss_and_grads(tiny.astype(np.float32), ids)
    assert abs(loss32 - loss64) < 1e-5 * loss64
    ref = dict(_leaves(g64))
    for path, g in _leaves(g32):
        assert g.dtype == np.float32, f"d{path}: {g.dtype}"
        assert_grad_close(f"float32 d{path}", g, ref[path], 1e-4)


def test_read_only_weights_from_a_file(tiny, tmp_path):
    tiny.save(tmp_path / "m.npz")
    model = GPT2.load(tmp_path / "m.npz")
    assert not any(a.flags.writeable for _, a in _leaves(model.params))  # memory-mapped, read-only
    before = {p: a.copy() for p, a in _leaves(model.params)}
    ids = rng(99).integers(0, CONFIG.n_vocab, size=(2, 7))
    loss, grads = BW.loss_and_grads(model, ids)
    loss_ref, grads_ref = BW.loss_and_grads(tiny, ids)
    assert loss == loss_ref
    ref = dict(_leaves(grads_ref))
    for path, g in _leaves(grads):
        assert type(g) is np.ndarray and g.flags.writeable, f"d{path} should be a plain writable array"
        np.testing.assert_array_equal(g, ref[path], err_msg=path)
    for path, a in _leaves(model.params):
        np.testing.assert_array_equal(a, before[path], err_msg=f"{path} was changed")


def test_the_whole_logits_never_exist_at_once(monkeypatch):
    import tracemalloc

    config = Config(n_vocab=4000, n_ctx=64, n_embd=8, n_head=2, n_layer=1)
    model = GPT2(config, random_params(config, seed=101, scale=0.1))
    ids = rng(102).integers(0, config.n_vocab, size=(2, 64))
    whole = ids.size * config.n_vocab * 8  # the [B·T, V] float64 logits: 4 MB
    monkeypatch.setattr(BW, "HEAD_CHUNK_ELEMENTS", 16 * config.n_vocab)  # 16 rows per chunk
    tracemalloc.start()  # NumPy reports its arrays' memory to tracemalloc
    try:
        loss, _ = BW.loss_and_grads(model, ids)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert abs(loss - model.loss(ids)) < 1e-12
    assert peak < whole / 2, f"peak {peak:,} bytes, the whole logits are {whole:,}"


def test_single_sequence_is_a_batch_of_one(tiny):
    ids = rng(100).integers(0, CONFIG.n_vocab, size=6)
    loss1, g1 = BW.loss_and_grads(tiny, ids)
    loss2, g2 = BW.loss_and_grads(tiny, ids[None])
    assert loss1 == loss2
    for (path, a), (_, b) in zip(_leaves(g1), _leaves(g2)):
        np.testing.assert_array_equal(a, b, err_msg=path)


def test_bad_inputs_get_clear_errors(tiny):
    ids = np.array([[1, 2, 3]])
    with pytest.raises(ValueError, match="at least 2 tokens"):
        BW.loss_and_grads(tiny, ids[:, :1])
    with pytest.raises(ValueError, match="no target is counted"):
        BW.loss_and_grads(tiny, ids, labels=np.full((1, 3), -100))
    with pytest.raises(ValueError, match="labels has shape"):
        BW.loss_and_grads(tiny, ids, labels=np.array([[1, 2]]))
    with pytest.raises(ValueError, match="out of range"):
        BW.loss_and_grads(tiny, ids, labels=np.array([[1, 2, CONFIG.n_vocab]]))
    with pytest.raises(ValueError, match="attention_mask"):
        BW.loss_and_grads(tiny, ids, attention_mask=np.array([[1, 1]]))


# ---- against transformers' autograd ------------------------------------------------------------------


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURE) as z:
        return {k: z[k] for k in z.files}


def ref_tree(ref, prefix, dtype=np.float64):
    """The fixture's flat ``<prefix>blocks/0/attn/c_attn/w`` arrays as a params tree."""
    tree: dict = {"blocks": []}
    for key, value in ref.items():
        if not key.startswith(prefix):
            continue
        parts = key[len(prefix):].split("/")
        node = tree
        if parts[0] == "blocks":
            i = int(parts[1])
            while len(tree["blocks"]) <= i:
                tree["blocks"].append({})
            node, parts = tree["blocks"][i], parts[2:]
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value.astype(dtype)
    return tree


@pytest.mark.parametrize("case", ["plain", "labels", "padded"])
@pytest.mark.parametrize("tag", DTYPES)
def test_loss_and_grads_match_transformers(ref, tag, case, monkeypatch):
    monkeypatch.setattr(BW, "HEAD_CHUNK_ELEMENTS", 2 * int(ref["hparams"][0]) + 1)  # 2 rows per chunk
    config = Config(**dict(zip(["n_vocab", "n_ctx", "n_embd", "n_head", "n_layer"], ref["hparams"].tolist())))
    model = GPT2(config, ref_tree(ref, "params/", DTYPES[tag]))
    kwargs = {"labels": ref[f"{case}/labels"]}
    if f"{case}/mask" in ref:
        kwargs["attention_mask"] = ref[f"{case}/mask"]
    loss, grads = BW.loss_and_grads(model, ref[f"{case}/ids"], **kwargs)

    expected = float(ref[f"{tag}/{case}/loss"])
    assert abs(loss - expected) <= RTOL[tag] * abs(expected), f"{case} loss: ours {loss!r}, transformers {expected!r}"
    hf = float(ref[f"{tag}/{case}/hf_loss"])  # transformers' labels= loss, computed in float32
    assert abs(loss - hf) <= 1e-6 * abs(hf), f"{case} loss: ours {loss!r}, transformers' labels= loss {hf!r}"

    theirs = dict(_leaves(ref_tree(ref, f"{tag}/{case}/grads/")))
    ours = dict(_leaves(grads))
    assert sorted(ours) == sorted(theirs)  # every parameter, nothing extra
    for path in theirs:
        assert ours[path].dtype == DTYPES[tag], f"d{path}: dtype {ours[path].dtype}"
        assert_grad_close(f"{case} {tag} d{path}", ours[path], theirs[path], RTOL[tag])


def test_fixture_gradients_are_not_trivial(ref):
    # every weight matters in the reference: no gradient is all zeros (a missed branch would
    # otherwise pass against a reference that is zero too)
    for key, value in ref.items():
        if "/grads/" in key:
            assert np.abs(value).max() > 1e-3, key


def test_assert_grad_close_names_the_tensor_and_shows_both_sides():
    a = np.array([1.0, 2.0, 3.0])
    with pytest.raises(pytest.fail.Exception) as e:
        assert_grad_close("blocks[1].attn.c_attn.w", a + [0, 0, 1e-6], a, 1e-10)
    text = str(e.value)
    assert "blocks[1].attn.c_attn.w" in text and "index (2,)" in text and "first values" in text
    with pytest.raises(pytest.fail.Exception):
        assert_grad_close("nan", np.array([np.nan]), np.array([1.0]), 1e-4)
