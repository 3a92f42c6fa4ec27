"""Where a model's loss on the outside text goes (development tool for the bundled model).

    python scripts/outside_loss_breakdown.py [MODEL] [--corpus DIR] [--outside FILE] [--top N]

MODEL is a size name or a model file (default: the bundled model).  The outside text (or
--outside FILE, normalised the same way) and the scoring are make_bundled_model.py's: windows
of n_ctx tokens without overlap, the first token of each window not scored, so the mean
printed first is the card's "outside" number.  Then the same per-token losses broken down

- by the position of the token in its window (how much context it had);
- by how often the target token occurs in the corpus's training text (scripts/make_corpus.py's
  corpus/train/*.txt, tokenized here);
- for rare targets (fewer than 100 occurrences in training): those that already occurred
  earlier in the same window (which an attention head could copy) against those that did not;
- the tokens that cost the most in all;
- and, apart from the outside text, whether the model copies at all: the loss on sequences of
  random tokens (drawn from those the training text has often, or seldom) written twice in a
  row, on the first pass and on the repeat.  A model with induction heads (attention that
  finds the earlier occurrence of the current token and predicts the token that followed it)
  pays far less on the repeat; one without pays the same twice.

docs/bundled_model.md quotes its output.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import make_bundled_model as mb  # noqa: E402  (the outside text and the card's scoring)

from gpt2np import BUNDLED_MODEL, GPT2, Tokenizer  # noqa: E402
from gpt2np.layers import log_softmax  # noqa: E402

RARE = 100  # "rare": fewer occurrences than this in the training text
COUNT_BINS = [(0, 1), (1, 10), (10, 100), (100, 1000), (1000, 10**4), (10**4, None)]
POSITION_BINS = [(1, 16), (16, 64), (64, 128), (128, None)]


def token_losses(model: GPT2, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(losses, positions) of every scored token: -log p(token | its window so far), and the
    token's position in its window (1 .. n_ctx-1), windows of n_ctx without overlap."""
    n_ctx = model.config.n_ctx
    losses, positions = [], []
    for begin in range(0, len(ids) - 1, n_ctx):
        window = ids[begin:begin + n_ctx]
        if len(window) < 2:
            break
        logp = log_softmax(model(window[:-1]).astype(np.float64))
        losses.append(-logp[np.arange(len(window) - 1), window[1:]])
        positions.append(np.arange(1, len(window)))
    return np.concatenate(losses), np.concatenate(positions)


def seen_in_window(ids: np.ndarray, n_ctx: int) -> np.ndarray:
    """For each scored token (as token_losses orders them): did the same token occur earlier in
    its window?"""
    seen = []
    for begin in range(0, len(ids) - 1, n_ctx):
        window = ids[begin:begin + n_ctx]
        seen.extend(window[j] in window[:j] for j in range(1, len(window)))
    return np.array(seen, dtype=bool)


def training_counts(corpus: pathlib.Path, tok: Tokenizer, n_vocab: int) -> np.ndarray:
    files = sorted((corpus / "corpus" / "train").glob("*.txt"))
    if not files:
        raise SystemExit(f"{corpus / 'corpus' / 'train'}: no training texts (run scripts/make_corpus.py)")
    counts = np.zeros(n_vocab, dtype=np.int64)
    for f in files:
        np.add.at(counts, np.array(tok.encode(f.read_text(encoding="utf-8")), dtype=np.int64), 1)
    return counts


def repeat_losses(model, pool: np.ndarray, rng: np.random.Generator, length: int = 100,
                  trials: int = 4) -> tuple[float, float]:
    """Mean loss on the first pass and on the repeat of ``trials`` sequences of ``length``
    distinct tokens drawn from ``pool``, each written twice in a row (the first token of each
    pass is not counted: nothing before it predicts it)."""
    first, repeat = [], []
    for _ in range(trials):
        half = rng.choice(pool, length, replace=False)
        ids = np.concatenate([half, half])
        logp = log_softmax(np.asarray(model(ids[:-1]), dtype=np.float64))
        nll = -logp[np.arange(len(ids) - 1), ids[1:]]  # nll[j] is the loss of ids[j + 1]
        first.append(nll[:length - 1].mean())
        repeat.append(nll[length:].mean())
    return float(np.mean(first)), float(np.mean(repeat))


def _row(label: str, mask: np.ndarray, losses: np.ndarray) -> str:
    n = int(mask.sum())
    mean = losses[mask].mean() if n else float("nan")
    return (f"  {label:<22} {n:6d} tokens ({n / len(losses):6.1%})  mean {mean:6.3f}  "
            f"share of the loss {losses[mask].sum() / losses.sum():6.1%}")


def _label(lo: int, hi: int | None) -> str:
    return f"{lo:,}+" if hi is None else (f"{lo:,}" if hi == lo + 1 else f"{lo:,} to {hi - 1:,}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default=BUNDLED_MODEL, help="a size name or a model file")
    ap.add_argument("--corpus", type=pathlib.Path, default=mb.DEFAULT_CORPUS, help="make_corpus.py's work folder")
    ap.add_argument("--outside", type=pathlib.Path, help="the outside text (default: make_bundled_model.py's)")
    ap.add_argument("--top", type=int, default=15, help="how many of the costliest tokens to list")
    args = ap.parse_args(argv)
    args.corpus = args.corpus.expanduser()

    path = pathlib.Path(args.model)
    model = GPT2.load(path) if path.suffix in (".npz", ".safetensors") else GPT2.from_pretrained(args.model)
    tok = Tokenizer.gpt2()
    _, text = mb.outside_text(args.corpus, args.outside)
    ids = np.array(tok.encode(text), dtype=np.int64)
    losses, positions = token_losses(model, ids)
    card_number = mb.score(model, tok, text)[0]
    assert abs(losses.mean() - card_number) < 1e-4, (losses.mean(), card_number)
    targets = np.concatenate([ids[b + 1:b + model.config.n_ctx] for b in range(0, len(ids) - 1, model.config.n_ctx)])
    print(f"{args.model}: outside text {len(ids):,} tokens, {len(losses):,} scored, mean {losses.mean():.4f} nats/token")

    print("by position in the window:")
    for lo, hi in POSITION_BINS:
        print(_row(f"positions {_label(lo, hi)}", (positions >= lo) & (positions < (hi or 10**9)), losses))

    all_counts = training_counts(args.corpus, tok, model.config.n_vocab)
    counts = all_counts[targets]
    print("by the target token's count in the training text:")
    for lo, hi in COUNT_BINS:
        print(_row(f"count {_label(lo, hi)}", (counts >= lo) & (counts < (hi or 10**18)), losses))

    rare = counts < RARE
    seen = seen_in_window(ids, model.config.n_ctx)
    print(f"rare targets (count < {RARE}):")
    print(_row("seen earlier in window", rare & seen, losses))
    print(_row("not seen earlier", rare & ~seen, losses))

    print(f"the {args.top} tokens that cost the most in all:")
    total: dict[int, float] = {}
    for t, loss in zip(targets.tolist(), losses.tolist()):
        total[t] = total.get(t, 0.0) + loss
    n = np.bincount(targets, minlength=model.config.n_vocab)
    for t, s in sorted(total.items(), key=lambda kv: -kv[1])[:args.top]:
        train_n = int(counts[np.flatnonzero(targets == t)[0]])
        print(f"  {tok.decode([t])!r:16} {int(n[t]):4d} times, total {s:7.1f}, mean {s / n[t]:6.2f}, "
              f"{train_n:,} times in training")

    length = min(100, model.config.n_ctx // 2)
    print(f"copying: {length} random distinct tokens written twice (4 trials each), mean loss on each pass:")
    rng = np.random.default_rng(0)
    for lo, hi in ((1000, None), (100, 1000), (1, 100), (0, 1)):
        pool = np.flatnonzero((all_counts >= lo) & (all_counts < (hi or 10**18)))
        if len(pool) < length:
            continue
        first, again = repeat_losses(model, pool, rng, length)
        print(f"  tokens {_label(lo, hi):>9} times in training ({len(pool):6,} of them): "
              f"first pass {first:6.3f}, repeat {again:6.3f}")


if __name__ == "__main__":
    main()
