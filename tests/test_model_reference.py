"""The forward pass against Hugging Face transformers, tensor by tensor.

The fixture ``reference_gpt2_tiny.npz`` was made by ``scripts/make_reference.py``: a 3-layer GPT-2
(n_embd 64, 4 heads, n_ctx 32, 97 tokens) with random weights, run by transformers in float64 and
in float32, every intermediate recorded with hooks.  Tolerances: float64 within 1e-10 absolute;
float32 within 1e-5 of the tensor's largest magnitude (float32 rounding, ~6e-8 per operation).
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers import ATOL_F64, assert_close, ref, reference_model  # noqa: F401  (ref: a fixture)

DTYPES = {"f64": np.float64, "f32": np.float32}


# ---- helpers (assert_close, the fixture and the model built from it are in helpers.py) ---------


def assert_scores_close(name, ours, ref, dtype):
    """Attention scores: compare the visible (causal) entries; masked ones must be hugely
    negative on both sides (transformers uses finfo.min, we use OpenAI's -1e10)."""
    T = ours.shape[-1]
    visible = np.tri(T, dtype=bool)
    for side, arr in (("ours", ours), ("reference", ref)):
        hidden = arr[..., ~visible]
        assert (hidden <= -1e9).all(), f"{name}: {side} has a masked score above -1e9: {hidden.max()}"
    return assert_close(name, ours[..., visible], ref[..., visible], dtype)


# ---- the tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("tag", DTYPES)
def test_every_traced_tensor_matches_transformers(ref, tag):
    dtype = DTYPES[tag]
    model = reference_model(ref, dtype)
    trace = model.trace(ref["ids/a"])
    expected = sorted(k.split("/", 2)[2] for k in ref if k.startswith(f"{tag}/trace/"))
    assert sorted(trace) == expected  # same names, nothing missing, nothing extra
    L = model.config.n_layer
    assert len(trace) == 1 + 13 * L + 2  # embed, 13 per block, ln_f, logits
    for name in expected:
        ours, theirs = trace[name], ref[f"{tag}/trace/{name}"]
        assert ours.dtype == dtype, f"{name}: dtype {ours.dtype}, expected {np.dtype(dtype)}"
        if name.endswith("attn.scores"):
            assert_scores_close(name, ours, theirs, dtype)
        else:
            assert_close(name, ours, theirs, dtype)


@pytest.mark.parametrize("tag", DTYPES)
def test_forward_logits_match_transformers(ref, tag):
    dtype = DTYPES[tag]
    model = reference_model(ref, dtype)
    assert_close("logits a", model(ref["ids/a"]), ref[f"{tag}/trace/logits"], dtype)
    assert_close("logits b", model(ref["ids/b"]), ref[f"{tag}/logits/b"], dtype)
    # last_only is the final row of the full result
    assert_close("last_only a", model(ref["ids/a"], last_only=True), ref[f"{tag}/trace/logits"][-1], dtype)


def test_float64_loss_matches_torch_cross_entropy(ref):
    model = reference_model(ref, np.float64)
    for key in ("a", "b"):
        assert abs(model.loss(ref[f"ids/{key}"]) - float(ref[f"f64/ce/{key}"])) < ATOL_F64


@pytest.mark.parametrize("tag", DTYPES)
def test_loss_matches_transformers_labels_loss(ref, tag):
    # transformers computes its labels=ids loss in float32 even for a float64 model
    model = reference_model(ref, DTYPES[tag])
    for key in ("a", "b"):
        ours, theirs = model.loss(ref[f"ids/{key}"]), float(ref[f"{tag}/loss/{key}"])
        assert abs(ours - theirs) <= 1e-5 * abs(theirs), (key, ours, theirs)


@pytest.mark.parametrize("tag", DTYPES)
def test_left_padded_batch_matches_transformers(ref, tag):
    dtype = DTYPES[tag]
    model = reference_model(ref, dtype)
    ids, mask = ref["batch/ids"], ref["batch/mask"]
    logits = model(ids, attention_mask=mask)
    assert logits.shape == ids.shape + (model.config.n_vocab,) and logits.dtype == dtype
    for r in range(len(ids)):
        real = mask[r].astype(bool)
        assert_close(f"padded row {r} vs transformers' padded batch",
                     logits[r, real], ref[f"{tag}/batch/logits"][r, real], dtype)
        assert_close(f"padded row {r} vs transformers' row alone",
                     logits[r, real], ref[f"{tag}/batch/single{r}"], dtype)


@pytest.mark.parametrize("tag", DTYPES)
def test_greedy_generate_matches_transformers(ref, tag):
    model = reference_model(ref, DTYPES[tag])
    for key in ("a", "b"):
        expected = ref[f"{tag}/greedy/{key}"]
        out = model.generate_ids(ref[f"ids/{key}"], max_new_tokens=len(expected))
        np.testing.assert_array_equal(np.asarray(out), expected, err_msg=f"prompt {key}")


@pytest.mark.parametrize("tag", DTYPES)
def test_cached_decoding_matches_transformers(ref, tag):
    dtype = DTYPES[tag]
    model = reference_model(ref, dtype)
    ids = ref["ids/a"]
    cache = model.new_cache()
    steps = [model(ids[t:t + 1], cache=cache) for t in range(len(ids))]
    assert_close("token-by-token logits", np.concatenate(steps), ref[f"{tag}/trace/logits"], dtype)


def test_assert_close_reports_name_values_and_difference():
    a = np.array([1.0, 2.0, 3.0])
    with pytest.raises(pytest.fail.Exception) as e:
        assert_close("h7.attn.q", a + [0, 0, 1e-6], a)
    text = str(e.value)
    assert "h7.attn.q" in text and "1.000e-06" in text and "first values" in text and "index (2,)" in text
    with pytest.raises(pytest.fail.Exception):
        assert_close("nan", np.array([np.nan]), np.array([1.0]))
    assert_close("f32 ok", np.float32([1.0, 2.0]), np.float32([1.0, 2.0 + 1e-5]), np.float32)
