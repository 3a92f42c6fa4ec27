"""scripts/outside_loss_breakdown.py, the development tool that splits the bundled model's
outside loss into its tokens: its per-token losses are gpt2np's perplexity windows, its
"seen earlier" flags are right on a hand-made sequence, its copying test tells a perfect copier
from random weights, and a run on a tiny model and corpus breaks every scored token down exactly
once."""

from __future__ import annotations

import pathlib
import re
import sys

import numpy as np
import pytest

from gpt2np import GPT2, Config, Tokenizer
from gpt2np.scoring import perplexity
from helpers import load_script

ROOT = pathlib.Path(__file__).resolve().parent.parent
TINY = Config(n_vocab=50257, n_ctx=8, n_embd=8, n_head=2, n_layer=1)


@pytest.fixture(scope="module")
def script():
    sys.path.insert(0, str(ROOT / "scripts"))  # the script imports make_bundled_model beside it
    return load_script("outside_loss_breakdown")


def test_token_losses_are_the_perplexity_windows(script):
    model = GPT2.random(TINY, seed=3)
    ids = np.random.default_rng(0).integers(0, TINY.n_vocab, size=29)
    losses, positions = script.token_losses(model, ids)
    ref = perplexity(model, ids, max_length=TINY.n_ctx, stride=TINY.n_ctx)
    assert len(losses) == ref.n_tokens == 25  # 4 windows of 8 and one of 5, first tokens unscored
    assert abs(losses.mean() - ref.nll) < 1e-5  # float64 log-softmax here, float32 there
    assert positions.tolist() == [*range(1, 8)] * 3 + [1, 2, 3, 4]


def test_seen_in_window_looks_back_within_the_window_only(script):
    ids = np.array([5, 5, 6, 5, 6, 7, 6, 6, 5, 5])
    # windows of 4: [5 5 6 5] [6 7 6 6] [5 5]; each window's first token is not scored
    assert script.seen_in_window(ids, 4).tolist() == [True, False, True, False, True, True, True]


def test_a_run_breaks_every_scored_token_down_once(script, tmp_path, capsys):
    tok = Tokenizer.gpt2()
    train = tmp_path / "corpus" / "corpus" / "train"
    train.mkdir(parents=True)
    (train / "a.txt").write_text("The cat sat on the mat. The dog sat on the log.\n", encoding="utf-8")
    outside = tmp_path / "outside.txt"
    outside.write_text("The cat saw a zebra.\n\nThe zebra ran off, and the cat sat on the mat.\n", encoding="utf-8")
    model_path = tmp_path / "m.npz"
    GPT2.random(TINY, seed=1).save(model_path)
    script.main([str(model_path), "--corpus", str(tmp_path / "corpus"), "--outside", str(outside), "--top", "3"])
    out = capsys.readouterr().out
    text = script.mb.normalise_outside(outside.read_text(encoding="utf-8"))
    ref = perplexity(GPT2.load(model_path), tok.encode(text), max_length=8, stride=8)
    assert f"{ref.n_tokens:,} scored, mean {ref.nll:.4f} nats/token" in out
    counts = {}
    for group in ("positions", "count"):
        counts[group] = sum(int(n) for n in re.findall(rf"^  {group} .*? (\d+) tokens", out, flags=re.M))
    assert counts == {"positions": ref.n_tokens, "count": ref.n_tokens}
    # ' zebra' is not in the training text: the "count 0" row holds it (twice, unless a window starts on it)
    zero = re.search(r"^  count 0 +(\d+) tokens", out, flags=re.M)
    assert zero and int(zero.group(1)) >= 1
    assert len(re.findall(r"times in training$", out, flags=re.M)) == 3
    assert re.search(r"^  tokens +0 times in training .*first pass +[0-9.]+, repeat +[0-9.]+$", out, flags=re.M)


class _Copier:
    """A stand-in model that copies perfectly: where the current token occurred before, it puts
    (almost) all its probability on the token that followed that occurrence; elsewhere it is
    uniform."""

    def __init__(self, n_vocab: int):
        self.n_vocab = n_vocab

    def __call__(self, ids):
        logits = np.zeros((len(ids), self.n_vocab))
        for j, t in enumerate(ids):
            earlier = np.flatnonzero(ids[:j] == t)
            if earlier.size:
                logits[j, ids[earlier[-1] + 1]] = 50.0
        return logits


def test_repeat_losses_tell_a_copier_from_a_model_that_does_not_copy(script):
    pool = np.arange(1000, 3000)
    first, again = script.repeat_losses(_Copier(4000), pool, np.random.default_rng(0), length=20, trials=2)
    assert abs(first - np.log(4000)) < 1e-9  # nothing to copy on the first pass: uniform
    assert again < 1e-15  # every repeated token predicted from its first occurrence
    first, again = script.repeat_losses(GPT2.random(TINY, seed=2), pool, np.random.default_rng(0), length=4)
    assert abs(first - again) < 0.05 and abs(first - np.log(TINY.n_vocab)) < 0.05  # random weights: ln V twice
