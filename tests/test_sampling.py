"""Logits processors and token drawing, against transformers' processors (fixture) and by properties."""

import json
import pathlib

import numpy as np
import pytest

from gpt2np.sampling import (
    apply_repetition_penalty,
    check_repetition_penalty,
    check_seed,
    check_temperature,
    check_top_k,
    check_top_p,
    apply_temperature,
    apply_top_k,
    apply_top_p,
    make_rng,
    next_token_probs,
    sample,
)


FIXTURES = pathlib.Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def processors():
    fixtures_dir = FIXTURES
    data = np.load(fixtures_dir / "sampling_processors.npz")
    meta = json.loads((fixtures_dir / "sampling_processors.json").read_text())
    ends = np.cumsum(data["previous_lengths"])
    flat = data["previous_ids"].tolist()
    previous = [flat[e - n:e] for e, n in zip(ends, data["previous_lengths"])]
    return data["logits"], previous, data["probs"], meta["settings"]


def test_fixture_records_its_maker(fixtures_dir):
    meta = json.loads((fixtures_dir / "sampling_processors.json").read_text())
    assert meta["made_by"] == "scripts/make_sampling_fixture.py"
    assert "transformers" in meta["versions"] and "torch" in meta["versions"]


def test_next_token_probs_match_transformers(processors):
    logits, previous, expected, settings = processors
    worst = (0.0, None)
    for setting, want in zip(settings, expected):
        got = next_token_probs(logits, previous_ids=previous, **setting)  # [B, V] at once
        assert got.dtype == np.float32 and got.shape == want.shape
        for b in range(len(logits)):
            assert_same_kept_tokens(logits[b], got[b], want[b], f"row {b}, {setting}")
        # the same probabilities (float32 rounding only), up to the order of tied tokens
        diff = float(np.max(np.abs(np.sort(got, axis=-1) - np.sort(want, axis=-1))))
        if diff > worst[0]:
            worst = (diff, setting)
    assert worst[0] < 2e-6, f"largest difference {worst[0]:.3g} at {worst[1]}"


def assert_same_kept_tokens(logits, got, want, where):
    """The same tokens survive, except where transformers' choice among tied logits at the
    top-p boundary is an accident of torch's unstable sort: there we keep the lower ids."""
    differ = (got > 0) != (want > 0)
    if not differ.any():
        return
    assert (got > 0).sum() == (want > 0).sum(), f"{where}: kept {(got > 0).sum()} tokens, transformers {(want > 0).sum()}"
    tied = logits[differ]
    assert np.all(tied == tied[0]), f"{where}: kept tokens differ beyond a tie: {np.flatnonzero(differ)}"
    ours, theirs = np.flatnonzero(differ & (got > 0)), np.flatnonzero(differ & (want > 0))
    assert ours.max() < theirs.min() or ours.size == 0, f"{where}: ties should keep the lower ids"


def test_tie_cases_are_in_the_fixture(processors):
    """The fixture does exercise ties at the top-p boundary (rows 3 and 4)."""
    logits, previous, expected, settings = processors
    i = settings.index({"temperature": 1.0, "top_k": None, "top_p": 0.5, "repetition_penalty": None})
    assert (expected[i][4] > 0).sum() == 2  # 4 tokens tied at probability 1/4: 2 of them kept
    got = next_token_probs(logits[4], top_p=0.5)
    assert np.flatnonzero(got).tolist() == sorted(np.flatnonzero(logits[4] == 0))[:2]


def test_each_row_alone_equals_the_batch(processors):
    logits, previous, expected, settings = processors
    for setting in settings[::7]:
        whole = next_token_probs(logits, previous_ids=previous, **setting)
        for b in range(len(logits)):
            got = next_token_probs(logits[b], previous_ids=previous[b], **setting)  # [V]
            np.testing.assert_array_equal(got, whole[b], err_msg=f"row {b}, {setting}")


def test_float64_stays_float64_and_float32_stays_float32():
    z = np.random.default_rng(0).normal(size=(3, 10))
    for dtype in (np.float32, np.float64):
        p = next_token_probs(z.astype(dtype), temperature=0.7, top_k=5, top_p=0.9, repetition_penalty=1.2,
                             previous_ids=[[1], [2, 2], []])
        assert p.dtype == dtype


def test_repetition_penalty_by_hand():
    z = np.array([2.0, -2.0, 1.0, -1.0, 0.5], dtype=np.float32)
    out = apply_repetition_penalty(z, [0, 1, 1, 1], 2.0)
    np.testing.assert_array_equal(out, np.array([1.0, -4.0, 1.0, -1.0, 0.5], dtype=np.float32))
    assert z[0] == 2.0  # the input is not changed in place


def test_top_k_keeps_ties_and_top_p_keeps_the_best():
    z = np.array([1.0, 3.0, 3.0, 2.0, 3.0])
    assert np.isfinite(apply_top_k(z, 2)).tolist() == [False, True, True, False, True]
    assert np.isfinite(apply_top_k(z, 100)).all()
    assert np.isfinite(apply_top_p(np.array([0.0, 10.0, 0.0]), 1e-9)).tolist() == [False, True, False]
    np.testing.assert_array_equal(apply_temperature(z, 2.0), z / 2)


def test_greedy_is_one_hot_at_first_argmax():
    z = np.array([[0.0, 5.0, 5.0, 1.0], [9.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    p = next_token_probs(z, temperature=0)
    np.testing.assert_array_equal(p, [[0, 1, 0, 0], [1, 0, 0, 0]])
    # the penalty acts before the argmax
    p = next_token_probs(np.array([9.0, 0.5, 0.0]), temperature=0, repetition_penalty=100.0, previous_ids=[0])
    assert p.argmax() == 1


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"repetition_penalty": 0.0, "previous_ids": [1]}, "repetition_penalty"),
        ({"repetition_penalty": 1.2}, "previous_ids"),
        ({"repetition_penalty": 1.2, "previous_ids": [99]}, "vocabulary"),
    ],
)
def test_bad_arguments_say_what_is_wrong(kwargs, word):
    with pytest.raises(ValueError, match=word):
        next_token_probs(np.zeros(5, dtype=np.float32), **kwargs)


def test_bad_logits_shape():
    with pytest.raises(ValueError, match="shape"):
        next_token_probs(np.zeros((2, 3, 4)))


def test_sampled_frequencies_match_the_distribution():
    """Chi-square goodness of fit: 20000 draws, fixed seed; the bound is the 99.99% quantile."""
    rng = np.random.default_rng(11)
    z = rng.normal(0, 1.5, 12).astype(np.float32)
    probs = next_token_probs(z, temperature=0.9, top_k=8, top_p=0.95)
    draws = make_rng(123)
    n = 20000
    counts = np.bincount([sample(probs, draws) for _ in range(n)], minlength=len(z))
    kept = probs > 0
    assert counts[~kept].sum() == 0, "a filtered-out token was drawn"
    expected = n * probs[kept].astype(np.float64)
    chi2 = float(np.sum((counts[kept] - expected) ** 2 / expected))
    dof = int(kept.sum()) - 1
    assert dof == 5  # top-k 8, then top-p leaves 6 tokens
    assert chi2 < 25.7, f"chi2 = {chi2:.1f} with {dof} degrees of freedom"  # 99.99% quantile: 25.74


def test_seeds_reproduce():
    probs = next_token_probs(np.random.default_rng(3).normal(size=50))
    a = [sample(probs, make_rng(42)) for _ in range(1)] + [sample(probs, g) for g in [make_rng(42)] for _ in range(20)]
    b = [sample(probs, make_rng(42)) for _ in range(1)] + [sample(probs, g) for g in [make_rng(42)] for _ in range(20)]
    c = [sample(probs, g) for g in [make_rng(43)] for _ in range(20)]
    assert a == b and a[1:] != c
    g = np.random.default_rng(5)
    assert make_rng(g) is g
    with pytest.raises(ValueError, match="seed"):
        make_rng("abc")


class FixedDraws:
    """Stands in for a Generator: random() returns the given numbers in turn."""

    def __init__(self, *values):
        self.values = list(values)

    def random(self):
        return self.values.pop(0)


def test_sample_inverts_the_cumulative_distribution():
    probs = np.array([0.0, 0.25, 0.0, 0.5, 0.25, 0.0], dtype=np.float32)
    # cumulative: 0, .25, .25, .75, 1, 1 -> u in [0, .25) gives 1, [.25, .75) gives 3, [.75, 1) gives 4
    draws = FixedDraws(0.0, 0.2499, 0.25, 0.7, 0.75, 0.999999)
    assert [sample(probs, draws) for _ in range(6)] == [1, 1, 3, 3, 4, 4]  # never a zero-probability id


def test_top_p_always_keeps_the_most_likely_token_in_float32():
    z = np.array([0.0, 3.0, 1.0], dtype=np.float32)
    # 1 - 1e-9 rounds to 1.0 in float32, so every cumulative sum is <= 1 - top_p
    assert np.isfinite(apply_top_p(z, 1e-9)).tolist() == [False, True, False]


def test_full_vocabulary_cuts_match_transformers():
    """At 50257 tokens the top-p cut must be computed as precisely as transformers does it:
    every setting keeps exactly transformers' tokens."""
    data = np.load(FIXTURES / "sampling_full_vocab.npz")
    settings = json.loads((FIXTURES / "sampling_full_vocab.json").read_text())["settings"]
    logits = data["logits"]
    previous = [data[f"previous_{b}"].tolist() for b in range(len(logits))]
    V = logits.shape[-1]
    for setting, packed in zip(settings, data["kept"]):
        want = np.unpackbits(packed, axis=-1, count=V).astype(bool)
        got = next_token_probs(logits, previous_ids=previous, **setting)
        for b in range(len(logits)):
            n_diff = int(np.sum((got[b] > 0) != want[b]))
            assert n_diff == 0, f"row {b}, {setting}: {n_diff} tokens kept differently (of {want[b].sum()} kept)"
        np.testing.assert_allclose(got.sum(axis=-1), 1.0, rtol=1e-5)


# --- issue 15: settings that would overflow the logits' dtype ---------------------------


def test_repetition_penalty_that_rounds_to_zero_in_float32_is_refused():
    """1e-50 is 0 in float32: z / 0 turned a positive logit into +inf (and greedy chose it)."""
    z = np.array([2.0, -1.0, 0.5], dtype=np.float32)
    for call in (lambda: apply_repetition_penalty(z, [0, 1], 1e-50),
                 lambda: next_token_probs(z, temperature=0, repetition_penalty=1e-50, previous_ids=[0])):
        with pytest.raises(ValueError, match=r"repetition_penalty 1e-50 rounds to 0\.0 in float32"):
            call()
    with pytest.raises(ValueError, match="rounds to inf in float32"):
        apply_repetition_penalty(z, [0], 1e39)
    # a penalty float32 can hold but whose quotient it cannot: refused, naming the token
    extreme = r"too extreme for float32 logits: it turns the logit 2\.0 of token 0 into inf"
    with pytest.raises(ValueError, match=extreme):
        apply_repetition_penalty(z, [0, 1], 5e-39)
    # the same numbers are fine in float64, and a tiny negative-only penalty is fine in float32
    np.testing.assert_array_equal(apply_repetition_penalty(z.astype(np.float64), [0], 1e-50), [2e50, -1.0, 0.5])
    assert np.isfinite(apply_repetition_penalty(z, [1], 1e-30)).all()
    with pytest.raises(ValueError, match="too extreme for float64 logits"):
        apply_repetition_penalty(z.astype(np.float64), [0], 5e-324)


def test_temperature_that_overflows_the_logits_is_refused():
    """Dividing by a temperature that is 0 in float32 (or tiny) made every logit inf or NaN."""
    z = np.array([2.0, -1.0, 0.5], dtype=np.float32)
    with pytest.raises(ValueError, match=r"temperature 1e-50 rounds to 0\.0 in float32.*temperature=0 for greedy"):
        next_token_probs(z, temperature=1e-50)
    too_small = r"temperature 5e-39 is too small for float32 logits: the logit 2\.0 becomes inf"
    with pytest.raises(ValueError, match=too_small):
        apply_temperature(z, 5e-39)
    p = next_token_probs(z.astype(np.float64), temperature=1e-50)  # float64: effectively greedy
    np.testing.assert_array_equal(p, [1.0, 0.0, 0.0])


def test_sample_refuses_probabilities_without_a_finite_total():
    """NaN probabilities used to give the last id (<|endoftext|> for GPT-2's vocabulary)."""
    for probs in (np.array([np.nan, 0.5, 0.5]), np.array([0.0, 0.0, 0.0]), np.array([np.inf, 0.0, 1.0])):
        with pytest.raises(ValueError, match="probs must be finite"):
            sample(probs, make_rng(0))


@pytest.mark.parametrize(
    "check, value, words",
    [
        (check_temperature, -1, "temperature"),
        (check_top_k, 0, "top_k"),
        (check_top_p, 2, "top_p"),
        (check_repetition_penalty, float("inf"), "repetition_penalty"),
        (check_seed, 1.5, "seed"),
    ],
)
def test_the_checks_are_public_and_say_what_is_wrong(check, value, words):
    with pytest.raises(ValueError, match=words):
        check(value)
