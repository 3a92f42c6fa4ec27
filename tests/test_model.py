"""GPT2: KV cache, padded batches, dtypes, errors, shape checks (Config and the sizes: test_config.py).

Most tests use the tiny reference model of ``reference_gpt2_tiny.npz`` (random weights from
transformers, nonzero biases, n_ctx 32), compared with itself through a different route (full
forward vs cached, padded vs alone) and with the fixture's transformers results.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from gpt2np import GPT2, Config, KVCache

from helpers import assert_close, ref, reference_config, reference_model, reference_params  # noqa: F401  (ref: a fixture)

DTYPES = [np.float64, np.float32]


@pytest.fixture(scope="module")
def models(ref):  # noqa: F811
    return {np.dtype(dt): reference_model(ref, dt) for dt in DTYPES}


def ids_of(ref, n, seed=0):  # noqa: F811
    return np.random.default_rng(seed).integers(0, int(ref["hparams"][0]), size=n)


# ---- KV cache ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_token_by_token_and_chunked_decoding_equal_the_full_forward(ref, models, dtype):  # noqa: F811
    model = models[np.dtype(dtype)]
    ids = ids_of(ref, 30, seed=1)
    full = model(ids)
    cache = model.new_cache()
    steps = np.concatenate([model(ids[t:t + 1], cache=cache) for t in range(len(ids))])
    assert_close("token by token", steps, full, dtype)
    assert cache.length == 30
    for chunks in ([5, 1, 7, 2, 15], [29, 1], [1, 29]):
        cache = model.new_cache(max_len=30)
        bounds = np.cumsum([0] + chunks)
        parts = [model(ids[a:b], cache=cache) for a, b in zip(bounds[:-1], bounds[1:])]
        assert_close(f"chunks {chunks}", np.concatenate(parts), full, dtype)


def test_cache_is_preallocated_and_filled_in_place(models):
    model = models[np.dtype(np.float32)]
    cache = model.new_cache(batch_size=2, max_len=10)
    c = model.config
    assert isinstance(cache, KVCache)
    assert cache.keys.shape == (c.n_layer, 2, c.n_head, 10, c.head_dim) == cache.values.shape
    assert cache.keys.dtype == np.float32 and cache.length == 0
    keys, values = cache.keys, cache.values
    model(np.array([[1, 2, 3], [4, 5, 6]]), cache=cache)
    for t in range(4):
        model(np.array([[7 + t], [8 + t]]), cache=cache)
    assert cache.keys is keys and cache.values is values  # never re-allocated or concatenated
    assert cache.length == 7
    assert (np.abs(cache.keys[:, :, :, :7]).sum(axis=-1) > 0).all()  # every stored key written
    assert (cache.keys[:, :, :, 7:] == 0).all()  # nothing written past the stored tokens
    assert cache.mask[:, :7].all() and not cache.mask[:, 7:].any()
    np.testing.assert_array_equal(cache.next_position, [7, 7])
    cache.reset()
    assert cache.length == 0 and not cache.mask.any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_left_padded_rows_equal_each_sequence_alone(ref, models, dtype):  # noqa: F811
    model = models[np.dtype(dtype)]
    lengths = [9, 4, 1, 6]
    T = max(lengths)
    rows = [ids_of(ref, n, seed=10 + n) for n in lengths]
    ids = np.array([np.r_[np.full(T - len(r), 13), r] for r in rows])  # junk id 13 as padding
    mask = np.array([[0] * (T - len(r)) + [1] * len(r) for r in rows])
    logits = model(ids, attention_mask=mask)
    last = model(ids, attention_mask=mask, last_only=True)
    assert np.isfinite(logits).all()
    for r, row in enumerate(rows):
        alone = model(row)
        assert_close(f"row {r}", logits[r, T - len(row):], alone, dtype)
        assert_close(f"row {r} last_only", last[r], alone[-1], dtype)
    # the padding ids do not matter
    other = np.where(mask == 1, ids, 77)
    assert_close("other padding ids", model(other, attention_mask=mask)[mask == 1], logits[mask == 1], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_padded_prefill_then_cached_steps_equal_each_sequence_alone(ref, models, dtype):  # noqa: F811
    model = models[np.dtype(dtype)]
    rows = [ids_of(ref, 8, seed=3), ids_of(ref, 3, seed=4)]
    new = ids_of(ref, 2 * 6, seed=5).reshape(2, 6)  # 6 more tokens for each row
    T = 8
    ids = np.array([np.r_[np.zeros(T - len(r), int), r] for r in rows])
    mask = np.array([[0] * (T - len(r)) + [1] * len(r) for r in rows])
    cache = model.new_cache(batch_size=2, max_len=T + 6)
    out = [model(ids, attention_mask=mask, cache=cache, last_only=True)]
    for t in range(6):
        mask_t = np.ones((2, 1), int) if t % 2 else None  # an all-ones mask may be omitted
        out.append(model(new[:, t:t + 1], attention_mask=mask_t, cache=cache, last_only=True))
    out = np.stack(out, axis=1)  # [B, 7, V]
    np.testing.assert_array_equal(cache.next_position, [8 + 6, 3 + 6])
    for r, row in enumerate(rows):
        alone = model(np.r_[row, new[r]])[len(row) - 1:]
        assert_close(f"row {r} cached", out[r], alone, dtype)


def test_cached_call_with_padding_inside_a_chunk(ref, models):  # noqa: F811
    # a second chunk that still holds padding for one row (e.g. a ragged prompt fed in two parts)
    model = models[np.dtype(np.float64)]
    rows = [ids_of(ref, 7, seed=6), ids_of(ref, 2, seed=7)]
    ids = np.array([rows[0], np.r_[np.zeros(5, int), rows[1]]])
    mask = np.array([[1] * 7, [0] * 5 + [1] * 2])
    cache = model.new_cache(batch_size=2)
    first = model(ids[:, :4], attention_mask=mask[:, :4], cache=cache)
    second = model(ids[:, 4:], attention_mask=mask[:, 4:], cache=cache)
    both = np.concatenate([first, second], axis=1)
    assert_close("row 0", both[0], model(rows[0]))
    assert_close("row 1", both[1, 5:], model(rows[1]))


# ---- dtypes --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtype_is_preserved_everywhere(ref, models, dtype):  # noqa: F811
    model = models[np.dtype(dtype)]
    assert model.dtype == dtype
    ids = ids_of(ref, 6).astype(np.int32)
    assert model(ids).dtype == dtype
    assert model(ids[None], attention_mask=np.array([[0, 1, 1, 1, 1, 1]])).dtype == dtype
    assert model(ids, last_only=True).dtype == dtype
    for name, value in model.trace(ids).items():
        assert value.dtype == dtype, f"trace {name}: {value.dtype}"
    cache = model.new_cache()
    assert cache.keys.dtype == dtype and model(ids, cache=cache).dtype == dtype
    assert model(ids[:1], cache=cache).dtype == dtype
    assert isinstance(model.loss(ids), float)


def test_astype_converts_and_float32_is_close_to_float64(ref, models):  # noqa: F811
    m32 = models[np.dtype(np.float32)]
    m64 = m32.astype(np.float64)
    assert m64.dtype == np.float64 and m32.dtype == np.float32
    assert all(a.dtype == np.float64 for a in [m64.params["wte"], m64.params["blocks"][0]["mlp"]["c_fc"]["w"]])
    ids = ids_of(ref, 10)
    assert_close("float32 vs float64", m32(ids), m64(ids), np.float32)
    assert m32.astype(np.float32).params["wte"] is m32.params["wte"]  # nothing copied needlessly
    with pytest.raises(ValueError, match="float32 or float64"):
        m32.astype(np.float16)


def test_random_model_is_deterministic_and_gpt2_like():
    cfg = Config(n_vocab=50, n_ctx=16, n_embd=32, n_head=4, n_layer=2)
    a, b = GPT2.random(cfg, seed=3), GPT2.random(cfg, seed=3)
    c = GPT2.random(cfg, seed=4)
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a.params["wte"], b.params["wte"])
    assert not np.array_equal(a.params["wte"], c.params["wte"])
    d = GPT2.random(cfg, seed=3, dtype=np.float64)
    np.testing.assert_array_equal(d.params["wte"].astype(np.float32), a.params["wte"])
    blk = a.params["blocks"][1]
    assert (blk["ln_1"]["g"] == 1).all() and (blk["ln_2"]["b"] == 0).all() and (blk["attn"]["c_attn"]["b"] == 0).all()
    assert 0.018 < a.params["wte"].std() < 0.022
    assert 0.008 < blk["mlp"]["c_proj"]["w"].std() < 0.012  # 0.02 / sqrt(2 * n_layer) = 0.01
    assert a.num_params() == cfg.num_params()


# ---- errors --------------------------------------------------------------------------------------------


def test_errors_name_the_limit_and_the_value(models):
    model = models[np.dtype(np.float32)]
    with pytest.raises(ValueError, match="empty"):
        model([])
    with pytest.raises(ValueError, match="empty"):
        model(np.zeros((2, 0), int))
    with pytest.raises(ValueError, match=r"token id 97 .*n_vocab=97"):
        model([1, 97])
    with pytest.raises(ValueError, match=r"token id -1 .*n_vocab=97"):
        model([[1, -1]])
    with pytest.raises(ValueError, match="integer"):
        model(np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="left-pad"):
        model([[1, 2, 3], [4]])
    with pytest.raises(ValueError, match=r"\[T\] or \[B, T\]"):
        model(np.zeros((1, 2, 3), int))
    with pytest.raises(ValueError, match=r"33 tokens.*n_ctx=32"):
        model(np.ones(33, int))
    cache = model.new_cache()
    model(np.ones(30, int), cache=cache)
    with pytest.raises(ValueError, match=r"30 cached \+ 3 new = 33.*n_ctx=32"):
        model(np.ones(3, int), cache=cache)
    small = model.new_cache(max_len=4)
    with pytest.raises(ValueError, match=r"max_len=4"):
        model(np.ones(5, int), cache=small)
    with pytest.raises(ValueError, match="n_ctx=32"):
        model.new_cache(max_len=33)
    with pytest.raises(ValueError, match="2 rows"):
        model(np.ones(3, int), cache=model.new_cache(batch_size=2))
    with pytest.raises(ValueError, match="dtype"):
        model(np.ones(3, int), cache=models[np.dtype(np.float64)].new_cache())
    for not_a_cache in ({"keys": None}, "cache", 0, object()):
        with pytest.raises(TypeError, match=r"cache must be a KVCache .*found"):
            model(np.ones(3, int), cache=not_a_cache)


def test_attention_mask_errors(models):
    model = models[np.dtype(np.float32)]
    ids = np.ones((2, 4), int)
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 3\); expected \(2, 4\)"):
        model(ids, attention_mask=np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"attention_mask has shape \(4,\)"):
        model(ids, attention_mask=np.ones(4))
    with pytest.raises(ValueError, match="only 0"):
        model(ids, attention_mask=np.full((2, 4), 2))
    # a single sequence may give its mask as [T] or [1, T]
    np.testing.assert_array_equal(model(ids[0], attention_mask=np.ones(4)), model(ids[0]))
    np.testing.assert_array_equal(model(ids[0], attention_mask=np.ones((1, 4))), model(ids[0]))


def test_trace_loss_generate_errors(models):
    model = models[np.dtype(np.float32)]
    with pytest.raises(ValueError, match="one sequence"):
        model.trace(np.ones((2, 3), int))
    with pytest.raises(ValueError, match="n_ctx=32"):
        model.trace(np.ones(40, int))
    with pytest.raises(ValueError, match="at least 2 tokens"):
        model.loss([5])
    with pytest.raises(ValueError):
        model.generate_ids(np.ones(20, int), max_new_tokens=13)  # 33 > n_ctx


# ---- parameter validation ----------------------------------------------------------------------------


def test_shape_validation_names_the_first_wrong_tensor(ref):  # noqa: F811
    cfg = reference_config(ref)

    def broken(edit):
        params = copy.deepcopy(reference_params(ref, np.float32))
        edit(params)
        return params

    def check(edit, pattern):
        with pytest.raises(ValueError, match=pattern):
            GPT2(cfg, broken(edit))

    GPT2(cfg, broken(lambda p: None))  # the unedited tree is fine
    check(lambda p: p["blocks"][1]["attn"]["c_attn"].update(w=np.zeros((64, 191), np.float32)),
          r"^blocks\[1\]\.attn\.c_attn\.w: expected \(64, 192\), found \(64, 191\)$")
    check(lambda p: p.update(wte=np.zeros((96, 64), np.float32)), r"^wte: expected \(97, 64\), found \(96, 64\)$")
    check(lambda p: p["blocks"][2]["ln_2"].pop("b"), r"^blocks\[2\]\.ln_2\.b: missing \(expected shape \(64,\)\)$")
    check(lambda p: p.pop("ln_f"), r"^ln_f: missing")
    check(lambda p: p["blocks"].pop(), r"^blocks: expected 3 blocks \(n_layer\), found 2$")
    check(lambda p: p["ln_f"].update(g=p["ln_f"]["g"].astype(np.float16)), r"^ln_f\.g: dtype float16 is not supported")
    check(lambda p: p["blocks"][0]["mlp"]["c_fc"].update(b=p["blocks"][0]["mlp"]["c_fc"]["b"].astype(np.float64)),
          r"^blocks\[0\]\.mlp\.c_fc\.b: dtype float64 differs from wte's float32")
    check(lambda p: p["blocks"][0]["attn"].update(bias=np.zeros(3)), r"^blocks\[0\]\.attn: unexpected entries \['bias'\]")
    check(lambda p: p.update(wpe=p["wpe"].tolist()), r"^wpe: expected a NumPy array of shape \(32, 64\), found list")
    with pytest.raises(TypeError, match="Config"):
        GPT2(cfg.to_dict(), reference_params(ref))


# ---- misc ----------------------------------------------------------------------------------------------


def test_trace_names_shapes_and_agreement_with_forward(ref, models):  # noqa: F811
    model = models[np.dtype(np.float64)]
    c = model.config
    ids = ids_of(ref, 7)
    t = model.trace(ids)
    H, T, dh, d = c.n_head, 7, c.head_dim, c.n_embd
    assert t["embed"].shape == (T, d) and t["logits"].shape == (T, c.n_vocab)
    for i in range(c.n_layer):
        for n in ("q", "k", "v"):
            assert t[f"h{i}.attn.{n}"].shape == (H, T, dh)
        assert t[f"h{i}.attn.scores"].shape == t[f"h{i}.attn.probs"].shape == (H, T, T)
        assert t[f"h{i}.mlp.fc"].shape == t[f"h{i}.mlp.gelu"].shape == (T, 4 * d)
        np.testing.assert_allclose(t[f"h{i}.attn.probs"].sum(-1), 1.0, rtol=1e-12)
        assert (np.triu(t[f"h{i}.attn.probs"], 1) == 0).all()  # no peeking at the future
        np.testing.assert_allclose(t[f"h{i}.resid"] + t[f"h{i}.mlp.out"], t[f"h{i}.out"], rtol=1e-14)
    assert_close("trace logits vs forward", t["logits"], model(ids))
    assert_close("trace [1, T]", model.trace(ids[None])["logits"], t["logits"])


def test_batched_forward_equals_rows_and_loss_definition(ref, models):  # noqa: F811
    model = models[np.dtype(np.float64)]
    ids = np.stack([ids_of(ref, 6, seed=s) for s in (1, 2)])
    logits = model(ids)
    assert logits.shape == (2, 6, model.config.n_vocab)
    for r in range(2):
        assert_close(f"row {r}", logits[r], model(ids[r]))
    # loss = mean over rows and positions of -log softmax(logits)[next id]
    nll = []
    for r in range(2):
        for t in range(5):
            row = logits[r, t]
            nll.append(np.log(np.exp(row - row.max()).sum()) + row.max() - row[ids[r, t + 1]])
    assert abs(model.loss(ids) - np.mean(nll)) < 1e-12


def test_generate_greedy_batch_and_zero(ref, models):  # noqa: F811
    model = models[np.dtype(np.float64)]
    expected = ref["f64/greedy/a"]  # transformers' greedy tokens
    prompt = ref["ids/a"]
    both = model.generate_ids(np.stack([prompt, prompt]), max_new_tokens=5)
    np.testing.assert_array_equal(np.asarray(both), np.stack([expected[:5]] * 2))
    assert len(model.generate_ids(prompt, max_new_tokens=0)) == 0
    # generation must not change the model or leave state behind
    np.testing.assert_array_equal(np.asarray(model.generate_ids(prompt, max_new_tokens=16)), expected)


def test_repr_and_num_params(models):
    model = models[np.dtype(np.float32)]
    assert model.num_params() == model.config.num_params()
    assert "n_layer=3" in repr(model) and "float32" in repr(model)
    assert "length=0" in repr(model.new_cache())
