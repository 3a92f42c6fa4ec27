"""The generation loop: transformers' greedy output, ragged batches, seeds, stop ids, n_ctx, scoring."""

import json
import math
import pathlib

import numpy as np
import pytest

from gpt2np import GPT2, Config
from gpt2np.sampling import generate_ids, iter_ids, next_token_probs, perplexity, sliding_windows

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def tree_from_flat(arrays: dict, prefix: str = "params/") -> dict:
    """{'params/blocks/0/ln_1/g': a, ...} -> the nested params tree (blocks as a list)."""
    tree: dict = {}
    for key, value in arrays.items():
        if not key.startswith(prefix):
            continue
        parts = key[len(prefix):].split("/")
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    tree["blocks"] = [tree["blocks"][str(i)] for i in range(len(tree["blocks"]))]
    return tree


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


def test_model_generate_is_a_door_into_generate_ids(tiny, small):
    model, prompts, greedy, _, _ = tiny
    assert model.generate(prompts, 20, stop_ids=()) == greedy
    assert model.generate(prompts[0], 20, stop_ids=()) == greedy[0]
    kw = dict(temperature=0.9, top_p=0.9, seed=3, stop_ids=())
    assert small.generate([1, 2], 8, **kw) == generate_ids(small, [1, 2], 8, **kw)


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
