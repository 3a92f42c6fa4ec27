"""The generation loop: transformers' greedy output, ragged batches, seeds, stop ids, n_ctx, scoring."""

import dataclasses
import json
import math
import pathlib

import numpy as np
import pytest

from gpt2np import GPT2, Config
from gpt2np.generation import GenerationSettings, generate_ids, iter_ids
from gpt2np.sampling import next_token_probs
from gpt2np.scoring import perplexity, sliding_windows

from helpers import tree_from_flat

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def tiny():
    data = dict(np.load(FIXTURES / "sampling_tiny_model.npz"))
    meta = json.loads((FIXTURES / "sampling_tiny_model.json").read_text())
    model = GPT2(Config(**meta["hparams"]), tree_from_flat(data))
    prompts = [data[f"prompt_{b}"].tolist() for b in range(meta["greedy"]["n_prompts"])]
    greedy = [data[f"greedy_{b}"].tolist() for b in range(meta["greedy"]["n_prompts"])]
    return model, prompts, greedy, data, meta


@pytest.fixture(scope="module")
def small():
    """A random model with GPT-2's init and a small vocabulary, float32."""
    return GPT2.random(Config(n_vocab=64, n_ctx=32, n_embd=32, n_head=2, n_layer=2), seed=3)


def test_greedy_matches_transformers_one_prompt_at_a_time(tiny):
    model, prompts, greedy, _, _ = tiny
    assert model.dtype == np.float64
    for prompt, want in zip(prompts, greedy):
        assert generate_ids(model, prompt, len(want), stop_ids=()) == want


def test_greedy_ragged_batch_matches_transformers(tiny):
    model, prompts, greedy, _, _ = tiny
    assert len({len(p) for p in prompts}) == len(prompts)  # really ragged
    assert generate_ids(model, prompts, 20, stop_ids=()) == greedy


def test_greedy_batch_equals_single_in_float32(small):
    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, 64, n).tolist() for n in (5, 1, 9, 3)]
    alone = [generate_ids(small, p, 12, stop_ids=()) for p in prompts]
    assert generate_ids(small, prompts, 12, stop_ids=()) == alone
    # a numpy [B, T] array (no padding) is a batch too
    same = np.array([prompts[0], prompts[0]])
    assert generate_ids(small, same, 12, stop_ids=()) == [alone[0], alone[0]]


def test_stop_id_ends_a_row_and_is_not_returned(tiny):
    model, prompts, greedy, _, _ = tiny
    want = greedy[2]
    stop = want[5]
    first = want.index(stop)
    assert generate_ids(model, prompts[2], 20, stop_ids=(stop,)) == want[:first]
    # in a batch, only the rows that draw the stop id end
    out = generate_ids(model, prompts, 20, stop_ids=(stop,))
    for got, row in zip(out, greedy):
        assert got == (row[: row.index(stop)] if stop in row else row)


def test_iter_ids_streams_the_same_ids(tiny):
    model, prompts, greedy, _, _ = tiny
    it = iter_ids(model, prompts[1], 20, stop_ids=())
    assert next(it) == greedy[1][0]
    assert [greedy[1][0]] + list(it) == greedy[1]
    steps = list(iter_ids(model, prompts[:2], 3, stop_ids=()))
    assert steps == [[greedy[0][i], greedy[1][i]] for i in range(3)]


def test_sampling_seeds_reproduce_and_differ(small):
    kw = dict(max_new_tokens=15, temperature=1.0, top_k=20, top_p=0.95, stop_ids=())
    a = generate_ids(small, [1, 2, 3], seed=7, **kw)
    assert a == generate_ids(small, [1, 2, 3], seed=7, **kw)
    assert a == generate_ids(small, [1, 2, 3], seed=np.random.default_rng(7), **kw)
    assert a != generate_ids(small, [1, 2, 3], seed=8, **kw)
    assert len(a) == 15 and all(0 <= t < 64 for t in a)


def test_sampled_batch_rows_with_own_seeds_equal_single(small):
    prompts = [[5, 6, 7, 8], [9], [10, 11]]
    kw = dict(max_new_tokens=10, temperature=1.3, top_k=40, repetition_penalty=1.2, stop_ids=())
    alone = [generate_ids(small, p, seed=s, **kw) for p, s in zip(prompts, [1, 2, 3])]
    assert generate_ids(small, prompts, seed=[1, 2, 3], **kw) == alone
    # one shared seed: reproducible, and rows of the same prompt get different samples
    twice = generate_ids(small, [prompts[0], prompts[0]], seed=4, **kw)
    assert twice == generate_ids(small, [prompts[0], prompts[0]], seed=4, **kw)
    assert twice[0] != twice[1]


def test_top_k_1_and_tiny_top_p_are_greedy(small):
    greedy = generate_ids(small, [3, 4], 10, stop_ids=())
    assert generate_ids(small, [3, 4], 10, temperature=1.0, top_k=1, seed=0, stop_ids=()) == greedy
    assert generate_ids(small, [3, 4], 10, temperature=0.8, top_p=1e-6, seed=0, stop_ids=()) == greedy


def test_repetition_penalty_changes_greedy_output(tiny):
    model, prompts, greedy, _, _ = tiny
    out = generate_ids(model, prompts[0], 20, repetition_penalty=5.0, stop_ids=())
    assert out != greedy[0]
    # with a strong penalty the output repeats less
    assert len(set(out)) >= len(set(greedy[0]))


def test_prompt_too_long_fails_before_any_work(small):
    class Exploding:
        config = small.config

        def new_cache(self, *a, **k):
            raise AssertionError("work was started")

        __call__ = new_cache

    with pytest.raises(ValueError, match=r"n_ctx = 32"):
        iter_ids(Exploding(), [1] * 30, 3)
    with pytest.raises(ValueError, match="exceeds"):
        generate_ids(Exploding(), [[1], [2] * 20], 13)
    assert len(generate_ids(small, [1] * 30, 2, stop_ids=())) == 2  # exactly n_ctx is fine


@pytest.mark.parametrize(
    "ids, kwargs, word",
    [
        ([], {}, "empty"),
        ([[1, 2], []], {}, "prompt 1 is empty"),
        ([1, 64], {}, r"\[0, 64\)"),
        ([1, -1], {}, "token id"),
        ("hello", {}, "not text"),
        ([1], {"max_new_tokens": -1}, "max_new_tokens"),
        ([1], {"temperature": -1}, "temperature"),
        ([1], {"top_k": 0}, "top_k"),
        ([1], {"seed": [1, 2]}, "one seed per prompt"),
    ],
)
def test_bad_generation_arguments(small, ids, kwargs, word):
    kwargs = {"max_new_tokens": 3, **kwargs}
    with pytest.raises(ValueError, match=word):
        generate_ids(small, ids, **kwargs)


def test_zero_new_tokens(small):
    assert generate_ids(small, [1, 2], 0) == []
    assert generate_ids(small, [[1, 2], [3]], 0) == [[], []]


# --- scoring ------------------------------------------------------------------------------


def test_sliding_windows_as_in_the_guide():
    assert sliding_windows(10, 4, 2) == [(0, 4, 4), (2, 6, 2), (4, 8, 2), (6, 10, 2)]
    assert sliding_windows(9, 4, 4) == [(0, 4, 4), (4, 8, 4), (8, 9, 1)]
    assert sliding_windows(3, 8, 2) == [(0, 3, 3)]


def test_perplexity_matches_the_guide(tiny):
    model, _, _, data, meta = tiny
    text = data["text"]
    for case in meta["perplexity"]["cases"]:
        kw = dict(max_length=case["max_length"], stride=case["stride"])
        got = perplexity(model, text, **kw)
        assert got.n_tokens == case["n_scored"]
        assert got.nll == pytest.approx(case["true_nll"], rel=1e-6), case  # transformers takes the loss in float32
        assert got.ppl == pytest.approx(math.exp(case["true_nll"]), rel=1e-6)
        guide = perplexity(model, text, guide_weighting=True, **kw)
        assert guide.nll == pytest.approx(case["guide_nll"], rel=1e-6), case


def test_perplexity_of_one_window_is_the_loss(small):
    ids = np.random.default_rng(1).integers(0, 64, 20)
    got = perplexity(small, ids)
    assert got.n_tokens == 19
    assert got.nll == pytest.approx(small.loss(ids), rel=1e-5)


def test_perplexity_arguments(small):
    with pytest.raises(ValueError, match="at least 2 tokens"):
        perplexity(small, [5])
    with pytest.raises(ValueError, match="stride"):
        perplexity(small, [1, 2, 3], stride=0)
    with pytest.raises(ValueError, match="max_length"):
        perplexity(small, [1, 2, 3], max_length=33)


def test_model_generate_ids_wraps_generate_ids(tiny, small):
    model, prompts, greedy, _, _ = tiny
    assert model.generate_ids(prompts, 20, stop_ids=()) == greedy
    assert model.generate_ids(prompts[0], 20, stop_ids=()) == greedy[0]
    kw = dict(temperature=0.9, top_p=0.9, seed=3, stop_ids=())
    assert small.generate_ids([1, 2], 8, **kw) == generate_ids(small, [1, 2], 8, **kw)
    settings = GenerationSettings(max_new_tokens=8, **kw)
    assert small.generate_ids([1, 2], settings=settings) == generate_ids(small, [1, 2], 8, **kw)
    assert small.generate_ids([1, 2], 3, settings=settings) == generate_ids(small, [1, 2], 8, **kw)[:3]


def test_model_generate_old_name_warns_and_still_works(tiny, small):
    model, prompts, greedy, _, _ = tiny
    with pytest.warns(DeprecationWarning, match=r"use GPT2\.generate_ids") as record:
        assert model.generate(prompts, 20, stop_ids=()) == greedy
    assert record[0].filename == __file__  # the warning points at the caller
    # the old positional signature, and stop_ids=None meaning <|endoftext|>
    with pytest.warns(DeprecationWarning, match="generate_ids"):
        old = small.generate([1, 2], 8, 0.9, None, 0.9, None, 3)
    assert old == small.generate_ids([1, 2], 8, temperature=0.9, top_p=0.9, seed=3)
    with pytest.raises(TypeError, match=r"unknown generation setting 'temprature'; expected max_new_tokens, temperature"):
        small.generate_ids([1, 2], 8, temprature=0.9)  # settings by name only: a typo is caught


def test_old_module_paths_warn_and_still_work(small):
    from gpt2np import generation, sampling, scoring

    for name, module in [("generate_ids", generation), ("iter_ids", generation), ("check_fits", generation),
                         ("EOT", generation), ("perplexity", scoring), ("Perplexity", scoring),
                         ("sliding_windows", scoring)]:
        with pytest.warns(DeprecationWarning, match=rf"moved to gpt2np\.{module.__name__[7:]}\.{name}"):
            assert getattr(sampling, name) is getattr(module, name)
    with pytest.raises(AttributeError, match="no_such_name"):
        sampling.no_such_name


def test_finished_rows_leave_the_batch(tiny):
    model, prompts, greedy, _, _ = tiny
    stops = (greedy[1][5], greedy[2][12])  # rows end at different times
    rows_per_call = []

    class Spy:
        config = model.config
        new_cache = model.new_cache

        def __call__(self, ids, **kw):
            rows_per_call.append(np.asarray(ids).shape[0])
            return model(ids, **kw)

    out = generate_ids(Spy(), prompts, 20, stop_ids=stops)
    ends = [min([row.index(s) for s in stops if s in row], default=len(row)) for row in greedy]
    assert out == [row[:end] for row, end in zip(greedy, ends)]
    assert len(set(ends)) >= 3
    # the prefill has every row; the call before step k only the rows that made a token at step k - 1
    want_rows = [len(prompts)] + [sum(end >= k for end in ends) for k in range(1, 20)]
    assert rows_per_call == [n for n in want_rows if n > 0]


def test_shared_seed_rows_do_not_shift_each_other(small):
    """With one seed for the batch, a row's samples do not depend on when other rows stop."""
    prompts = [[1, 2, 3], [4, 5]]
    kw = dict(max_new_tokens=12, temperature=1.0, seed=9)
    free = generate_ids(small, prompts, stop_ids=(), **kw)
    stop = free[1][2]  # row 1 will stop at its third token ...
    assert stop not in free[0]  # ... and row 0 never draws it
    stopped = generate_ids(small, prompts, stop_ids=(stop,), **kw)
    assert stopped[1] == free[1][: free[1].index(stop)]
    assert stopped[0] == free[0]


def test_first_sampled_token_follows_next_token_probs(small):
    """The loop draws from next_token_probs of the model's last logits (chi-square test)."""
    prompt = [7, 8, 9]
    settings = dict(temperature=1.5, top_k=12)
    probs = next_token_probs(small(prompt)[-1], **settings).astype(np.float64)
    rng = np.random.default_rng(2024)
    n = 3000
    firsts = [generate_ids(small, prompt, 1, seed=rng, stop_ids=(), **settings)[0] for _ in range(n)]
    counts = np.bincount(firsts, minlength=len(probs))
    assert counts[probs == 0].sum() == 0
    kept = probs > 0
    expected = n * probs[kept]
    chi2 = float(np.sum((counts[kept] - expected) ** 2 / expected))
    dof = int(kept.sum()) - 1
    assert dof == 11
    assert chi2 < 37.4, f"chi2 = {chi2:.1f} with {dof} degrees of freedom"  # 99.99% quantile: 37.4


@pytest.mark.parametrize("tag, dtype", [("f64", np.float64), ("f32", np.float32)])
def test_ragged_batch_matches_the_model_reference_fixture(tag, dtype):
    """The forward-pass fixture (tests/fixtures/reference_gpt2_tiny.*, made by
    scripts/make_reference.py) holds transformers' greedy continuations of two prompts of
    different lengths; one left-padded batch gives both."""
    with np.load(FIXTURES / "reference_gpt2_tiny.npz") as z:
        ref = {k: z[k] for k in z.files}
    hp = dict(zip(["n_vocab", "n_ctx", "n_embd", "n_head", "n_layer"], ref["hparams"].tolist()))
    model = GPT2(Config(**hp), tree_from_flat(ref)).astype(dtype)
    prompts = [ref["ids/a"].tolist(), ref["ids/b"].tolist()]
    want = [ref[f"{tag}/greedy/a"].tolist(), ref[f"{tag}/greedy/b"].tolist()]
    assert len(prompts[0]) != len(prompts[1])
    assert generate_ids(model, prompts, len(want[0]), stop_ids=()) == want


def test_nan_logits_are_reported(small):
    broken = GPT2(small.config, {**small.params, "wte": np.full_like(small.params["wte"], np.nan)})
    with pytest.raises(ValueError, match="NaN logits at step 0"):
        generate_ids(broken, [1, 2], 3)


# --- the settings object ---------------------------------------------------------------


def test_settings_defaults_and_normalised_fields():
    s = GenerationSettings()
    assert (s.max_new_tokens, s.temperature, s.top_k, s.top_p, s.repetition_penalty, s.seed, s.stop_ids) == (
        50, 0.0, None, None, None, None, (50256,))
    s = GenerationSettings(max_new_tokens=np.int64(3), temperature=1, top_k=np.int32(5), top_p=1,
                           repetition_penalty=2, seed=[1, 2], stop_ids=[7, np.int64(8)])
    assert s.seed == (1, 2) and s.stop_ids == (7, 8) and s.max_new_tokens == 3
    typed = [(s.max_new_tokens, int), (s.temperature, float), (s.top_k, int), (s.top_p, float),
             (s.repetition_penalty, float)] + [(i, int) for i in s.stop_ids]
    assert all(type(v) is t for v, t in typed)
    assert GenerationSettings(stop_ids=None).stop_ids == () and GenerationSettings(stop_ids=9).stop_ids == (9,)
    assert hash(s) == hash(dataclasses.replace(s))
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.temperature = 2.0


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"max_new_tokens": -1}, "max_new_tokens must be an integer >= 0"),
        ({"max_new_tokens": 2.0}, "max_new_tokens"),
        ({"temperature": -0.5}, "temperature"),
        ({"temperature": None}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_p": 0}, "top_p"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"seed": -1}, "seed"),
        ({"seed": [1, "x"]}, "seed"),
        ({"stop_ids": [1, -2]}, "stop_ids"),
        ({"stop_ids": "\n"}, "stop_ids"),
        ({"stop_ids": [True]}, "stop_ids"),
    ],
)
def test_settings_check_their_fields(kwargs, words):
    with pytest.raises(ValueError, match=words):
        GenerationSettings(**kwargs)
    with pytest.raises(ValueError, match=words):  # dataclasses.replace checks again
        dataclasses.replace(GenerationSettings(), **kwargs)


def test_settings_object_equals_the_keywords(small):
    kw = dict(max_new_tokens=10, temperature=1.2, top_k=30, top_p=0.9, repetition_penalty=1.3, seed=5, stop_ids=())
    want = generate_ids(small, [[1, 2], [3]], **kw)
    settings = GenerationSettings(**kw)
    assert generate_ids(small, [[1, 2], [3]], settings=settings) == want
    steps = list(iter_ids(small, [[1, 2], [3]], settings=settings))
    assert [[t for t in row if t is not None] for row in zip(*steps)] == want
    # the keywords given override their fields only (max_new_tokens also positionally)
    assert generate_ids(small, [[1, 2], [3]], 4, settings=settings) == [row[:4] for row in want]
    other = generate_ids(small, [[1, 2], [3]], **{**kw, "seed": 6})
    assert other != want and generate_ids(small, [[1, 2], [3]], seed=6, settings=settings) == other
    assert settings.seed == 5  # the object itself is not changed
    with pytest.raises(ValueError, match="settings must be a GenerationSettings"):
        generate_ids(small, [1], settings=kw)
    with pytest.raises(ValueError, match="max_new_tokens"):  # an override is checked too
        generate_ids(small, [1], max_new_tokens=-1, settings=settings)


def test_max_new_tokens_defaults_to_50(small):
    with pytest.raises(ValueError, match=r"max_new_tokens \(50\)"):
        generate_ids(small, [1])
    assert len(generate_ids(small, [1], settings=GenerationSettings(max_new_tokens=5, stop_ids=()))) == 5


# --- issue 15: numbers that overflow, logits that are not finite -----------------------


def test_repetition_penalty_that_rounds_to_zero_is_refused_before_any_work(small):
    """1e-50 is 0 in float32: a positive penalised logit became z / 0 = +inf, which greedy picked."""
    assert small.dtype == np.float32
    with pytest.raises(ValueError, match=r"repetition_penalty 1e-50 rounds to 0\.0 in float32"):
        iter_ids(small, [1, 2], 3, repetition_penalty=1e-50)  # eagerly, before the first step
    with pytest.raises(ValueError, match="repetition_penalty"):
        generate_ids(small, [[1, 2], [3]], 3, temperature=1.0, seed=0, repetition_penalty=1e-50)
    assert len(generate_ids(small, [1, 2], 3, repetition_penalty=1e-3, stop_ids=())) == 3  # small is fine
    # float64 holds 1e-50: the same penalty is fine there
    assert len(generate_ids(small.astype(np.float64), [1, 2], 3, repetition_penalty=1e-50, stop_ids=())) == 3


class Inject:
    """The model ``small``, with ``value`` written into the logits of ``row`` at ``token`` on call ``call``."""

    def __init__(self, model, value, call=0, row=0, token=5):
        self.model, self.value, self.call, self.row, self.token = model, value, call, row, token
        self.config, self.new_cache, self.calls = model.config, model.new_cache, 0

    def __call__(self, ids, **kw):
        logits = self.model(ids, **kw)
        if self.calls == self.call:
            logits[self.row, self.token] = self.value
        self.calls += 1
        return logits


@pytest.mark.parametrize("value, kind", [(np.inf, r"\+inf"), (-np.inf, "-inf"), (np.nan, "NaN")])
@pytest.mark.parametrize("sampled", [False, True])
def test_non_finite_logits_are_an_error_naming_the_step(small, value, kind, sampled):
    """+inf logits used to pass the NaN check: greedy picked the inf token every step and
    sampling drew the last id (<|endoftext|> for GPT-2) from NaN probabilities."""
    kw = dict(temperature=1.0, seed=0) if sampled else {}
    with pytest.raises(ValueError, match=rf"{kind} logits at step 0, e\.g\. for token 5"):
        generate_ids(Inject(small, value), [1, 2], 4, stop_ids=(), **kw)
    # a later step, in a batch: the error names the step and the prompt
    with pytest.raises(ValueError, match=rf"{kind} logits at step 2 \(prompt 1\)"):
        generate_ids(Inject(small, value, call=2, row=1), [[1, 2], [3]], 4, stop_ids=(), **kw)
    steps = iter_ids(Inject(small, value, call=2), [1, 2], 4, stop_ids=(), **kw)
    assert len([next(steps), next(steps)]) == 2  # the first two steps are fine
    with pytest.raises(ValueError, match=rf"{kind} logits at step 2"):
        next(steps)


def test_perplexity_of_non_finite_logits_is_an_error_naming_the_window(small):
    """A broken model used to score nan (or inf) without complaint."""
    ids = np.arange(20) % 64
    broken = GPT2(small.config, {**small.params, "wte": np.full_like(small.params["wte"], np.nan)})
    with pytest.raises(ValueError, match=r"NaN logits in window 0 \(tokens 0 to 8\)"):
        perplexity(broken, ids, max_length=8, stride=4)

    class LaterInf(Inject):
        def __call__(self, ids, **kw):  # the forward pass of a window: logits [W-1, V]
            logits = self.model(ids, **kw)
            if self.calls == self.call:
                logits[self.row, self.token] = self.value
            self.calls += 1
            return logits

    with pytest.raises(ValueError, match=r"\+inf logits in window 2 \(tokens 8 to 16\)"):
        perplexity(LaterInf(small, np.inf, call=2), ids, max_length=8, stride=4)
    assert math.isfinite(perplexity(small, ids, max_length=8, stride=4).ppl)
