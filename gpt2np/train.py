"""Training GPT-2 on your own text, from Python; ``gpt2np train`` is a thin layer over this module.

The whole run in one call (what ``gpt2np train notes.txt --init 124M --out tuned.npz --steps 200``
does)::

    from gpt2np import Config
    from gpt2np.train import TrainSettings, init_model, prepare_tokens, train, train_text

    settings = TrainSettings(steps=200, batch_size=4, seq_len=256, lr=3e-4)
    model, history = train_text(["notes.txt", "more.txt"], "tuned.npz", init="124M", settings=settings)
    print(history[-1])     # {'step': 200, 'lr': ..., 'train_loss': ..., 'val_loss': ..., 'tokens_per_s': ..., ...}

    # from scratch: GPT-2's initialisation with another shape (the vocabulary stays 50,257 tokens)
    train_text(["corpus.txt"], "small.npz", init="new",
               config=Config(n_layer=4, n_head=4, n_embd=128, n_ctx=256),
               settings=TrainSettings(steps=5000, seed=0, eval_every=250, save_every=500))
    # continue the last checkpoint (small.ckpt.npz); a dict changes some of its settings (more steps
    # stretch the cosine: the learning rate is a function of the step and of the total)
    train_text(["corpus.txt"], "small.npz", resume=True, settings={"steps": 8000})

The same run in its pieces::

    tokens = prepare_tokens(["notes.txt"], "tuned.tokens")    # tokenized once; reused while the text is unchanged
    model = init_model("124M")                                # a size, a model file, or "new"
    model, history = train(model, tokens, TrainSettings(steps=200), out="tuned.npz")

What a run does and writes, for ``out = "tuned.npz"`` (or ``tuned.safetensors``):

- **Tokens** (``tuned.tokens/``): each text file is read as UTF-8 and tokenized once with GPT-2's
  tokenizer (the text ``<|endoftext|>`` becomes that token); each file's last ``val_fraction``
  (default 5%) of tokens goes to the validation split.  ``train.npy`` and ``val.npy`` are uint16
  arrays, memory-mapped when read, each file's part followed by ``<|endoftext|>`` (50256), the
  separator of documents.  ``meta.json`` records every input's path, size and sha256: the files
  are reused while they match and the split fraction is the same.
- **Batches**: each optimizer step draws ``grad_accum × batch_size`` windows of ``seq_len + 1``
  tokens at uniformly random starts from one ``numpy.random.Generator`` (PCG64) seeded with
  ``seed``; a window's first ``seq_len`` tokens are read, and each of them predicts the token after
  it (seq_len predictions per window, so ``seq_len`` may be the whole ``n_ctx``).  With
  ``grad_accum = N`` the N micro-batches' losses and gradients are averaged: the same step as one
  batch of ``N × batch_size`` windows, within float rounding.
- **A step**: loss and gradients (:mod:`gpt2np.backward`), clipping of the gradient norm to
  ``clip`` (:func:`gpt2np.optim.clip_grad_norm`), AdamW (:class:`gpt2np.optim.AdamW`; weight decay
  on the 2-D weights only) at the learning rate of :func:`gpt2np.optim.cosine_lr` (linear warm-up
  over ``warmup`` steps, cosine decay to ``min_lr`` at the last step).
- **Validation**: the mean loss on a fixed set of ``eval_windows`` windows spread evenly over the
  validation split, before the first step, every ``eval_every`` steps and after the last.
- **Progress and losses**: a tqdm bar on stderr (step, loss, validation loss, tokens/s, time
  left) and ``tuned.csv`` (step, lr, train_loss, val_loss, tokens_per_s, elapsed_s), rewritten
  atomically at every evaluation and checkpoint.
- **Checkpoints** (``tuned.ckpt.npz``): every ``save_every`` steps, after the last step and on
  Ctrl-C; see :func:`save_checkpoint` for what one holds.  Resuming restores all of it, so a run
  stopped and resumed ends with exactly the weights of a run that never stopped (bit for bit).
- **The model**: ``model.save(out)`` (``.npz``), or ``model.save_safetensors(out)`` for a
  ``.safetensors`` name (with transformers' ``config.json`` beside it).

Every file is written atomically (a temp file renamed over the final name), so a crash never
leaves a half-written file under a final name.  Weights loaded from a file are read-only memory
maps of it: training works on a writable copy (and says so); nothing ever writes into that file.

Errors in the input are a :class:`TrainError` (a ValueError) with a one-line message: an
unreadable or non-UTF-8 text (named), a text shorter than one window, ``seq_len`` above the
model's ``n_ctx``, a non-finite loss (training stops before applying the step; the last good
checkpoint stays as it was).  Ctrl-C saves a checkpoint of the last completed step and raises
:class:`TrainingInterrupted` (a KeyboardInterrupt); a Ctrl-C during an AdamW update waits for the
update to finish, so the saved weights are never half-updated.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import math
import pathlib
import signal
import sys
import threading
import time
import zipfile

import numpy as np

from . import backward, layers
from .formats import flatten, unflatten
from .formats.atomic import atomic_write
from .model import GPT2, Config
from .optim import AdamW, clip_grad_norm, cosine_lr

EOT = 50256  # <|endoftext|>, GPT-2's separator of documents
GPT2_VOCAB = 50257
TOKENS_FORMAT = "gpt2np-tokens/1"
CHECKPOINT_FORMAT = "gpt2np-train-checkpoint/1"
CSV_COLUMNS = ("step", "lr", "train_loss", "val_loss", "tokens_per_s", "elapsed_s")


class TrainError(ValueError):
    """A problem with the training input or state; the message is one line, for the user."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`train`: ``step`` steps are done and saved in ``checkpoint`` (None
    when the run has no ``out``)."""

    def __init__(self, step: int, checkpoint):
        self.step, self.checkpoint = step, checkpoint
        where = f"; saved {checkpoint}" if checkpoint is not None else ""
        super().__init__(f"interrupted after step {step}{where}")


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """How to train; the CLI flag of each field is its name with dashes (``--batch-size``).

    steps: optimizer steps in the whole run (the schedule's end).
    batch_size: windows per micro-batch.  seq_len: tokens the model reads per window (default:
    min(256, n_ctx)).  grad_accum: micro-batches per optimizer step (gradients averaged).
    lr: peak learning rate.  min_lr: the floor the cosine decays to (default lr / 10).
    warmup: steps of linear warm-up (default steps // 20).  weight_decay, betas, eps: AdamW's.
    clip: the gradient-norm limit (0 = no clipping).  seed: the batches' random generator (and
    the weights of ``init="new"``).  eval_every: steps between validation losses.  eval_windows:
    the number of fixed validation windows.  save_every: steps between checkpoints.
    val_fraction: the share of each file's tokens (from its end) kept for validation (0 = none).
    """

    steps: int = 1000
    batch_size: int = 4
    seq_len: int | None = None
    grad_accum: int = 1
    lr: float = 3e-4
    min_lr: float | None = None
    warmup: int | None = None
    weight_decay: float = 0.1
    betas: tuple = (0.9, 0.95)
    eps: float = 1e-8
    clip: float = 1.0
    seed: int = 0
    eval_every: int = 100
    eval_windows: int = 16
    save_every: int = 500
    val_fraction: float = 0.05

    def __post_init__(self):
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))

        def integer(name, low, optional=False):
            v = getattr(self, name)
            if optional and v is None:
                return
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise TrainError(f"{name} must be a whole number >= {low}, got {v!r}")
            object.__setattr__(self, name, int(v))

        def number(name, low, high=None, low_open=False, optional=False):
            v = getattr(self, name)
            if optional and v is None:
                return
            ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
            ok = ok and math.isfinite(v) and (v > low if low_open else v >= low) and (high is None or v < high)
            if not ok:
                bound = f"> {low}" if low_open else f">= {low}"
                raise TrainError(f"{name} must be a finite number {bound}" + (f" and < {high}" if high else "")
                                 + f", got {v!r}")
            object.__setattr__(self, name, float(v))

        for name in ("steps", "batch_size", "grad_accum", "eval_every", "eval_windows", "save_every"):
            integer(name, 1)
        integer("seq_len", 1, optional=True)
        integer("warmup", 0, optional=True)
        integer("seed", 0)
        number("lr", 0.0, low_open=True)
        number("min_lr", 0.0, optional=True)
        number("weight_decay", 0.0)
        number("eps", 0.0)
        number("clip", 0.0)
        number("val_fraction", 0.0, 1.0)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise TrainError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.min_lr is not None and self.min_lr > self.lr:
            raise TrainError(f"min_lr={self.min_lr} is above lr={self.lr}")
        if self.warmup is not None and self.warmup > self.steps:
            raise TrainError(f"warmup={self.warmup} is more than steps={self.steps}")

    def resolved_seq_len(self, n_ctx: int) -> int:
        return min(256, n_ctx) if self.seq_len is None else self.seq_len

    def lr_at(self, step: int) -> float:
        """The learning rate of the update after ``step`` completed steps (0-based)."""
        warmup = self.steps // 20 if self.warmup is None else self.warmup
        min_lr = self.lr / 10 if self.min_lr is None else self.min_lr
        return cosine_lr(step, max_lr=self.lr, warmup_steps=warmup, total_steps=self.steps, min_lr=min_lr)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainSettings":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _with_overrides(base: TrainSettings, overrides) -> TrainSettings:
    """``overrides``: None (``base``), a TrainSettings (itself) or a dict of fields to change."""
    if overrides is None:
        return base
    if isinstance(overrides, TrainSettings):
        return overrides
    if isinstance(overrides, dict):
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(TrainSettings)})
        if unknown:
            raise TrainError(f"unknown training settings {unknown}")
        return dataclasses.replace(base, **overrides)
    raise TypeError(f"settings must be a TrainSettings, a dict or None, found {type(overrides).__name__}")


# --------------------------------------------------------------------------------------------
# Files of a run
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RunPaths:
    """The files of a run beside its model file ``out``: ``<stem>.ckpt.npz``, ``<stem>.csv``,
    ``<stem>.tokens/`` (``stem``: ``out`` without its suffix)."""

    out: pathlib.Path
    checkpoint: pathlib.Path
    csv: pathlib.Path
    tokens: pathlib.Path

    @classmethod
    def of(cls, out) -> "RunPaths":
        out = pathlib.Path(out)
        if out.suffix not in (".npz", ".safetensors"):
            raise TrainError(f"{out}: the output model must end in .npz or .safetensors")
        stem = str(out.with_suffix(""))
        return cls(out, pathlib.Path(stem + ".ckpt.npz"), pathlib.Path(stem + ".csv"),
                   pathlib.Path(stem + ".tokens"))


def save_model(model: GPT2, path) -> None:
    """``model.save(path)`` for ``.npz``, ``model.save_safetensors(path)`` for ``.safetensors``."""
    path = pathlib.Path(path)
    if path.suffix == ".safetensors":
        model.save_safetensors(path)
    else:
        model.save(path)


# --------------------------------------------------------------------------------------------
# Text -> token files
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TokenFiles:
    """The token files of :func:`prepare_tokens`: ``train``/``val`` paths (uint16 .npy), their
    token counts, ``fingerprint`` (sha256 of the inputs' record) and whether they were ``reused``."""

    folder: pathlib.Path
    train: pathlib.Path
    val: pathlib.Path
    n_train: int
    n_val: int
    fingerprint: str
    reused: bool = False

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """The train and validation tokens as read-only memory maps."""
        return np.load(self.train, mmap_mode="r"), np.load(self.val, mmap_mode="r")


def read_text(path) -> str:
    """The text of a UTF-8 file (a leading BOM dropped); a TrainError naming the file otherwise."""
    return _decode(pathlib.Path(path), _read_bytes(path))


def _read_bytes(path) -> bytes:
    p = pathlib.Path(path)
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise TrainError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise TrainError(f"{p}: is a folder, not a text file") from None
    except PermissionError:
        raise TrainError(f"{p}: permission denied, cannot read it") from None
    except OSError as e:
        raise TrainError(f"{p}: cannot read it ({e.strerror or e})") from None


def _decode(p: pathlib.Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise TrainError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start}); "
                         f"convert it first, e.g. iconv -t utf-8") from None


def split_tokens(ids, val_fraction: float) -> tuple[list, list]:
    """One document's tokens -> (train part, validation part): the last round(n · val_fraction)
    tokens are validation; each part ends with <|endoftext|>."""
    ids = list(ids)
    n_val = int(round(len(ids) * val_fraction))
    cut = len(ids) - n_val
    return ids[:cut] + [EOT], (ids[cut:] + [EOT]) if n_val else []


def prepare_tokens(paths, out_dir, tokenizer=None, val_fraction: float = 0.05, log=None) -> TokenFiles:
    """Tokenize the text files ``paths`` into ``out_dir/train.npy`` and ``out_dir/val.npy``.

    Each file is one document: read as UTF-8 (:func:`read_text`), encoded with GPT-2's tokenizer
    (``<|endoftext|>`` in the text is the special token), split by :func:`split_tokens`, and the
    parts concatenated in the order of ``paths``.  When ``out_dir/meta.json`` records the same
    inputs (resolved path, size, sha256, in order) and fraction, the files are reused as they are.
    """
    from .tokenizer import Tokenizer

    log = log or _stderr
    if isinstance(paths, (str, pathlib.Path)):
        paths = [paths]
    paths = [pathlib.Path(p) for p in paths]
    if not paths:
        raise TrainError("no text file given")
    if not (0 <= val_fraction < 1):
        raise TrainError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    out_dir = pathlib.Path(out_dir)
    data = [_read_bytes(p) for p in paths]
    inputs = [{"path": str(p.resolve()), "size": len(b), "sha256": hashlib.sha256(b).hexdigest()}
              for p, b in zip(paths, data)]
    record = {"format": TOKENS_FORMAT, "tokenizer": "gpt2", "dtype": "uint16", "eot": EOT,
              "val_fraction": float(val_fraction), "inputs": inputs}
    fingerprint = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
    meta_path, train_path, val_path = out_dir / "meta.json", out_dir / "train.npy", out_dir / "val.npy"

    old = _read_token_meta(meta_path, train_path, val_path)
    if old is not None and old.get("fingerprint") == fingerprint:
        log(f"tokens: reusing {out_dir} ({old['n_train']:,} train, {old['n_val']:,} validation tokens)")
        return TokenFiles(out_dir, train_path, val_path, old["n_train"], old["n_val"], fingerprint, True)

    texts = [_decode(p, b) for p, b in zip(paths, data)]  # every file checked before any work
    tok = tokenizer if tokenizer is not None else Tokenizer.gpt2()
    train_ids, val_ids = [], []
    for p, text in zip(paths, texts):
        ids = tok.encode(text, allowed_special="all")
        tr, va = split_tokens(ids, val_fraction)
        train_ids += tr
        val_ids += va
    top = max(train_ids + val_ids)
    if top > np.iinfo(np.uint16).max:
        raise TrainError(f"token id {top} does not fit the uint16 token files")
    meta_path.unlink(missing_ok=True)  # the old record must never describe the new files
    for path, ids in ((train_path, train_ids), (val_path, val_ids)):
        with atomic_write(path) as f:
            np.save(f, np.asarray(ids, dtype=np.uint16), allow_pickle=False)
    meta = dict(record, fingerprint=fingerprint, n_train=len(train_ids), n_val=len(val_ids))
    with atomic_write(meta_path, "w") as f:
        f.write(json.dumps(meta, indent=1) + "\n")
    names = ", ".join(p.name for p in paths)
    log(f"tokens: {names} -> {len(train_ids):,} train, {len(val_ids):,} validation tokens in {out_dir}")
    return TokenFiles(out_dir, train_path, val_path, len(train_ids), len(val_ids), fingerprint, False)


def _read_token_meta(meta_path, train_path, val_path):
    """The record of existing token files, or None when there is none or it does not fit them."""
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        ok = (meta.get("format") == TOKENS_FORMAT
              and np.load(train_path, mmap_mode="r").shape == (meta["n_train"],)
              and np.load(val_path, mmap_mode="r").shape == (meta["n_val"],))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return meta if ok else None


# --------------------------------------------------------------------------------------------
# Windows, the loss and its gradients
# --------------------------------------------------------------------------------------------


def gather_windows(tokens: np.ndarray, starts, length: int) -> np.ndarray:
    """``tokens[s : s + length]`` for every start s, as int64 ``starts.shape + (length,)``."""
    starts = np.asarray(starts, dtype=np.int64)
    return np.asarray(tokens[starts[..., None] + np.arange(length)], dtype=np.int64)


def draw_starts(rng: np.random.Generator, n_tokens: int, length: int, shape) -> np.ndarray:
    """Uniformly random starts of windows of ``length`` tokens in ``n_tokens`` (one draw of all)."""
    return rng.integers(0, n_tokens - length + 1, size=shape)


def val_starts(n_tokens: int, length: int, count: int) -> np.ndarray:
    """``count`` fixed starts spread evenly from the first to the last window (fewer, distinct,
    when the split is short)."""
    return np.unique(np.linspace(0, n_tokens - length, count).round().astype(np.int64))


def window_loss_and_grads(model: GPT2, windows: np.ndarray):
    """Mean next-token loss of ``windows`` ``[B, T + 1]`` and its gradients: the model reads
    ``x = windows[:, :-1]`` and each of its T positions predicts the next token, ``windows[:, 1:]``.

    The same as ``loss_and_grads(model, windows)`` (every prediction counted) but without
    reading the last token, so T may be the model's whole ``n_ctx``; built from the pieces of
    :mod:`gpt2np.backward`: the forward pass with a Record, the tied head's cross-entropy a
    chunk at a time, the blocks backwards, wte's two shares added.
    """
    x, y = windows[:, :-1], windows[:, 1:]
    B, T = x.shape
    p, n_head = model.params, model.config.n_head
    positions = np.arange(T)
    mask = layers.causal_mask(T, T, p["wte"].dtype)
    record = layers.Record(drop={"scores"})
    h = layers.transformer(x, p, n_head, positions, mask, record)  # [B, T, d]
    d = h.shape[-1]
    loss, dh, dwte_head = backward.tied_head_cross_entropy(h.reshape(B * T, d), p["wte"], y.reshape(-1))
    # wte's two shares: the head's dwte_head, into which the embedding's is added
    grads = backward.transformer(dh.reshape(B, T, d), x, p, n_head, positions, mask, record, dwte=dwte_head)
    return loss, grads


def batch_loss_and_grads(model: GPT2, tokens: np.ndarray, starts: np.ndarray, length: int):
    """The loss and gradients of one optimizer step: ``starts`` ``[N, B]`` are N micro-batches of
    B windows of ``length`` tokens; their losses and gradients are averaged (the gradients of
    the first micro-batch are the accumulator, so N = 1 costs no copy)."""
    n = len(starts)
    total_loss, acc = 0.0, None
    for micro in starts:
        loss, grads = window_loss_and_grads(model, gather_windows(tokens, micro, length))
        total_loss += loss
        if acc is None:
            acc = grads
        else:
            for a, g in zip(_tree_leaves(acc), _tree_leaves(grads)):
                a += g
    if n > 1:
        for a in _tree_leaves(acc):
            a *= 1.0 / n
    return total_loss / n, acc


def evaluate(model: GPT2, windows: np.ndarray, batch_size: int = 4) -> float:
    """Mean next-token loss over all positions of ``windows`` ``[N, T + 1]`` (forward only, a
    row at a time so that one ``[T, V]`` of logits exists at once)."""
    total = 0.0
    for row in windows:
        z = model(row[:-1])  # [T, V], a fresh array: worked on in place
        z -= z.max(axis=-1, keepdims=True)  # z − m
        z_target = z[np.arange(len(z)), row[1:]].astype(np.float64)
        np.exp(z, out=z)
        lse = np.log(z.sum(axis=-1, dtype=np.float64))  # log Σ exp(z − m)
        total += float((lse - z_target).mean())  # −log softmax(z)[target]
    return total / len(windows)


def _tree_leaves(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _tree_leaves(v)
    elif isinstance(tree, (list, tuple)):
        for v in tree:
            yield from _tree_leaves(v)
    else:
        yield tree


def _copy_tree(tree):
    if isinstance(tree, dict):
        return {k: _copy_tree(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_copy_tree(v) for v in tree]
    return np.array(tree)  # a writable copy of its own


# --------------------------------------------------------------------------------------------
# The model to start from
# --------------------------------------------------------------------------------------------


def init_model(init: str = "124M", config: Config | None = None, seed: int = 0, base_url=None) -> GPT2:
    """The model a run starts from.

    ``init``: ``"new"`` (GPT-2's initialisation, :meth:`GPT2.random`, of ``config``, default the
    124M shape, with ``seed``; the vocabulary must stay GPT-2's 50,257 tokens), a size ("124M",
    ...; downloaded once), or a model file (``.npz``, ``.safetensors``, a TF checkpoint folder), as
    ``gpt2np generate --model`` reads it.  Weights from a file are read-only: :func:`train`
    copies them.
    """
    if str(init).lower() == "new":
        config = Config() if config is None else config
        if config.n_vocab != GPT2_VOCAB:
            raise TrainError(f"n_vocab={config.n_vocab}: a new model keeps GPT-2's {GPT2_VOCAB:,} tokens "
                             f"(the text is tokenized with GPT-2's tokenizer)")
        return GPT2.random(config, seed=seed)
    if config is not None:
        raise TrainError(f"a model shape (n_layer, n_head, n_embd, n_ctx) applies only to init 'new', "
                         f"not to {init}")
    from .cli import CLIError, load_model_arg

    try:
        model = load_model_arg(str(init), base_url=base_url)
    except CLIError as e:
        raise TrainError(str(e)) from None
    if model.config.n_vocab < GPT2_VOCAB:
        raise TrainError(f"{init}: the model knows {model.config.n_vocab} tokens, fewer than GPT-2's "
                         f"tokenizer's {GPT2_VOCAB}")
    return model


def writable(model: GPT2, source: str = "the model", log=None) -> GPT2:
    """``model`` itself when every weight is a writable array owning its memory; otherwise a
    model of writable copies (weights from a file are read-only memory maps of it), said in ``log``."""
    leaves = list(_tree_leaves(model.params))
    if all(a.flags.writeable and a.flags.owndata for a in leaves):
        return model
    mb = sum(a.nbytes for a in leaves) / 2**20
    why = ("are read-only memory maps of its file" if not all(a.flags.writeable for a in leaves)
           else "are views of other memory")
    (log or _stderr)(f"{source}: the weights {why}; training a writable copy ({mb:,.1f} MiB), "
                     f"the source is never written")
    return GPT2(model.config, _copy_tree(model.params))


# --------------------------------------------------------------------------------------------
# Checkpoints and the CSV
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns."""

    config: Config
    params: dict
    optimizer: dict
    step: int
    rng_state: dict
    settings: TrainSettings
    history: list
    elapsed: float
    data: str | None


def save_checkpoint(path, model: GPT2, opt: AdamW, *, step: int, rng_state: dict, settings: TrainSettings,
                    history: list, elapsed: float = 0.0, data: str | None = None) -> None:
    """Write a training checkpoint atomically: an uncompressed ``.npz`` (``np.load`` reads it,
    nothing pickled) with the members

    - ``params/<flat name>``: every weight (``wte``, ``blocks.0.attn.c_attn.w``, ...);
    - ``optimizer/<key>``: ``opt.state_dict()`` (AdamW's step count, hyperparameters, m and v);
    - ``history/<column>``: the CSV's columns so far (NaN for an empty cell);
    - ``meta``: UTF-8 JSON: format, step, the model's hparams and dtype, the settings, the
      random generator's ``bit_generator.state`` (PCG64, taken at the step boundary), the
      elapsed seconds and the token files' fingerprint.
    """
    meta = {"format": CHECKPOINT_FORMAT, "step": int(step), "hparams": model.config.to_dict(),
            "dtype": str(model.dtype), "settings": settings.to_dict(), "rng_state": rng_state,
            "elapsed": float(elapsed), "data": data}
    arrays = {"meta": np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)}
    arrays.update({f"params/{k}": v for k, v in flatten(model.params).items()})
    arrays.update({f"optimizer/{k}": np.asarray(v) for k, v in opt.state_dict().items()})
    for col in CSV_COLUMNS:
        values = [row.get(col) for row in history]
        if col == "step":
            arrays[f"history/{col}"] = np.asarray(values, dtype=np.int64)
        else:
            arrays[f"history/{col}"] = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    with atomic_write(path) as f:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, arr in arrays.items():
                with zf.open(name + ".npy", "w", force_zip64=True) as m:
                    np.lib.format.write_array(m, np.asarray(arr, order="C"), allow_pickle=False)  # (0-d stays 0-d)


def read_checkpoint_meta(path) -> dict:
    """The ``meta`` record of a checkpoint (without reading its arrays)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise TrainError(f"no checkpoint {path} to resume from (run without --resume to start)")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes().decode("utf-8"))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise TrainError(f"{path}: not a readable training checkpoint ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise TrainError(f"{path}: not a gpt2np training checkpoint (format {meta.get('format')!r})")
    return meta


def load_checkpoint(path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (arrays in memory, writable)."""
    meta = read_checkpoint_meta(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            members = {name: z[name] for name in z.files if name != "meta"}
        config = Config(**meta["hparams"])
        flat = {k[len("params/"):]: v for k, v in members.items() if k.startswith("params/")}
        params = unflatten(flat, config.n_layer)
        optimizer = {k[len("optimizer/"):]: v for k, v in members.items() if k.startswith("optimizer/")}
        for k, v in optimizer.items():
            if v.ndim == 0:
                optimizer[k] = v.item()
        cols = {c: members[f"history/{c}"] for c in CSV_COLUMNS}
        history = []
        for i in range(len(cols["step"])):
            row = {"step": int(cols["step"][i])}
            for c in CSV_COLUMNS[1:]:
                v = float(cols[c][i])
                row[c] = None if math.isnan(v) else v
            history.append(row)
        settings = TrainSettings.from_dict(meta["settings"])
        return Checkpoint(config, params, optimizer, int(meta["step"]), meta["rng_state"], settings, history,
                          float(meta["elapsed"]), meta.get("data"))
    except (KeyError, ValueError, TypeError, zipfile.BadZipFile) as e:
        raise TrainError(f"{path}: incomplete training checkpoint ({e})") from None


def write_csv(path, history: list) -> None:
    """The history as CSV (``CSV_COLUMNS``; empty cells where nothing was measured), atomically."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for row in history:
        cells = []
        for col in CSV_COLUMNS:
            v = row.get(col)
            cells.append("" if v is None else (str(v) if col == "step" else
                                                f"{v:.1f}" if col == "tokens_per_s" else
                                                f"{v:.3f}" if col == "elapsed_s" else repr(float(v))))
        w.writerow(cells)
    with atomic_write(path, "w") as f:
        f.write(buf.getvalue())


# --------------------------------------------------------------------------------------------
# The training loop
# --------------------------------------------------------------------------------------------


class _InterruptGuard:
    """Ctrl-C raises KeyboardInterrupt at once, except inside ``deferred()``, where it is held
    until the end of the block (an AdamW update is never left half done)."""

    def __init__(self):
        self.deferring = self.pending = False
        self.old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.old = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)

    def _handler(self, signum, frame):
        if self.deferring:
            self.pending = True
        else:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def deferred(self):
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


def _stderr(message: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)


def _as_tokens(data):
    """(train tokens, validation tokens or None, fingerprint) from TokenFiles, a (train, val)
    pair of arrays, or one array (no validation)."""
    if isinstance(data, TokenFiles):
        tr, va = data.load()
        return tr, va, data.fingerprint
    if isinstance(data, (tuple, list)) and len(data) == 2:
        tr, va = (np.asarray(a) for a in data)
    else:
        tr, va = np.asarray(data), np.zeros(0, np.int64)
    for name, a in (("train", tr), ("validation", va)):
        if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
            raise TrainError(f"the {name} tokens must be a 1-D array of token ids, found {a.dtype} {a.shape}")
    digest = hashlib.sha256(np.ascontiguousarray(tr, np.int64).tobytes() + b"|"
                            + np.ascontiguousarray(va, np.int64).tobytes()).hexdigest()
    return tr, va, digest


def _check_data(train_tokens, val_tokens, window: int, n_vocab: int) -> None:
    n = len(train_tokens)
    if n < window:
        raise TrainError(f"the training text has {n:,} tokens, fewer than one window of seq_len + 1 = "
                         f"{window:,}; give more text or a smaller --seq-len")
    if 0 < len(val_tokens) < window:
        raise TrainError(f"the validation split has {len(val_tokens):,} tokens, fewer than one window of "
                         f"{window:,}; give more text, a larger --val-fraction, a smaller --seq-len, "
                         f"or --val-fraction 0 (no validation)")
    for name, a in (("training", train_tokens), ("validation", val_tokens)):
        if len(a) and (int(a.max()) >= n_vocab or int(a.min()) < 0):
            raise TrainError(f"the {name} tokens hold ids outside the model's vocabulary 0..{n_vocab - 1}")


def _check_seq_len(seq_len: int, n_ctx: int) -> None:
    if seq_len > n_ctx:
        raise TrainError(f"--seq-len {seq_len} is above the model's n_ctx={n_ctx} "
                         f"(the longest sequence it can read)")


def train(model: GPT2 | None, data, settings: TrainSettings | dict | None = None, *, out=None,
          resume: bool = False, progress: bool = True, log=None):
    """Train ``model`` on ``data``; returns ``(model, history)``.

    data: :class:`TokenFiles` (from :func:`prepare_tokens`), a ``(train, val)`` pair of 1-D
    token arrays, or one array (no validation).  settings: a :class:`TrainSettings` (default
    ``TrainSettings()``; on resume the checkpoint's), or a dict of fields to change in it.
    out: the model file to write at the end (``.npz`` or ``.safetensors``); the checkpoint and CSV
    are kept beside it (:class:`RunPaths`).  Without ``out`` nothing is written.
    resume: continue from ``out``'s checkpoint (``model`` may then be None; its weights are
    replaced by the checkpoint's).  progress: show the tqdm bar.  log: where the messages go
    (default: stderr, between the bar's updates).

    The model is trained in place when its weights are writable arrays of their own, else a
    copy (:func:`writable`); the returned model is the trained one.  ``history`` has one dict per
    step, with the keys of ``CSV_COLUMNS`` (None where nothing was measured; step 0 holds the
    validation loss before training).
    """
    from tqdm.auto import tqdm

    log = log or _stderr
    paths = RunPaths.of(out) if out is not None else None
    if resume and paths is None:
        raise TrainError("resume needs out, the model file whose checkpoint it continues")
    ck = None
    if resume:
        ck = load_checkpoint(paths.checkpoint)
        if model is not None and model.config != ck.config:
            raise TrainError(f"{paths.checkpoint} holds a model of {ck.config}, not of {model.config}")
        model = GPT2(ck.config, ck.params)
        settings = _with_overrides(ck.settings, settings)
        log(f"resuming {paths.checkpoint} at step {ck.step}")
    else:
        if model is None:
            raise TrainError("no model to train (give one, or resume=True)")
        settings = _with_overrides(TrainSettings(), settings)
        model = writable(model, log=log)
        if paths is not None and paths.checkpoint.exists():
            log(f"starting a new run: {paths.checkpoint} will be replaced (resume=True / --resume continues it)")

    seq_len = settings.resolved_seq_len(model.config.n_ctx)
    _check_seq_len(seq_len, model.config.n_ctx)
    window = seq_len + 1
    train_tokens, val_tokens, fingerprint = _as_tokens(data)
    _check_data(train_tokens, val_tokens, window, model.config.n_vocab)
    if ck is not None and ck.data is not None and ck.data != fingerprint:
        log("the training text differs from the checkpoint's; continuing on the new tokens")

    opt = AdamW(model.params, lr=settings.lr, betas=settings.betas, eps=settings.eps,
                weight_decay=settings.weight_decay)
    rng = np.random.default_rng(settings.seed)
    step, history, elapsed0, last_saved = 0, [], 0.0, None
    if ck is not None:
        opt.load_state_dict(ck.optimizer)
        rng.bit_generator.state = ck.rng_state
        step, history, elapsed0, last_saved = ck.step, ck.history, ck.elapsed, ck.step
        del ck  # (its params are the model's now)
    val_windows = (gather_windows(val_tokens, val_starts(len(val_tokens), window, settings.eval_windows), window)
                   if len(val_tokens) else None)
    tokens_per_step = settings.batch_size * settings.grad_accum * seq_len
    t_start = time.perf_counter()

    def elapsed():
        return elapsed0 + time.perf_counter() - t_start

    def checkpoint(rng_state):
        save_checkpoint(paths.checkpoint, model, opt, step=step, rng_state=rng_state, settings=settings,
                        history=history, elapsed=elapsed(), data=fingerprint)
        write_csv(paths.csv, history)

    last_val = next((r["val_loss"] for r in reversed(history) if r["val_loss"] is not None), None)
    bar = tqdm(total=settings.steps, initial=min(step, settings.steps), unit="step", desc="train",
               file=sys.stderr, disable=not progress, dynamic_ncols=True)
    snap_step, snap_state = step, rng.bit_generator.state
    with bar, _InterruptGuard() as guard:
        try:
            if step == 0 and val_windows is not None and not history:
                last_val = evaluate(model, val_windows, settings.batch_size)
                history.append({"step": 0, "lr": None, "train_loss": None, "val_loss": last_val,
                                "tokens_per_s": None, "elapsed_s": elapsed()})
                if paths is not None:
                    write_csv(paths.csv, history)
            while step < settings.steps:
                snap_step, snap_state = step, rng.bit_generator.state
                lr = settings.lr_at(step)
                t0 = time.perf_counter()
                starts = draw_starts(rng, len(train_tokens), window, (settings.grad_accum, settings.batch_size))
                loss, grads = batch_loss_and_grads(model, train_tokens, starts, window)
                if not math.isfinite(loss):
                    raise _NonFinite("loss", loss, step + 1)
                if settings.clip > 0:
                    norm = clip_grad_norm(grads, settings.clip)
                else:  # no clipping, but a NaN must not reach the weights either
                    norm = math.sqrt(sum(float(np.vdot(g, g)) for g in _tree_leaves(grads)))
                if not math.isfinite(norm):
                    raise _NonFinite("gradient norm", norm, step + 1)
                with guard.deferred():  # the update and its record: all or nothing
                    opt.step(grads, lr=lr)
                    step += 1
                    history.append({"step": step, "lr": lr, "train_loss": loss, "val_loss": None,
                                    "tokens_per_s": tokens_per_step / (time.perf_counter() - t0),
                                    "elapsed_s": elapsed()})
                evaluated = val_windows is not None and (step % settings.eval_every == 0 or step == settings.steps)
                if evaluated:
                    last_val = history[-1]["val_loss"] = evaluate(model, val_windows, settings.batch_size)
                bar.update(1)
                post = {"loss": f"{loss:.3f}"}
                if last_val is not None:
                    post["val"] = f"{last_val:.3f}"
                post["tok/s"] = f"{history[-1]['tokens_per_s']:,.0f}"
                bar.set_postfix(post, refresh=False)
                if paths is not None:
                    if step % settings.save_every == 0 or step == settings.steps:
                        checkpoint(rng.bit_generator.state)
                        last_saved = step
                    elif evaluated:
                        write_csv(paths.csv, history)
        except KeyboardInterrupt:
            # the state at the boundary of the last completed step (a step in progress is dropped)
            state = snap_state if step == snap_step else rng.bit_generator.state
            if paths is not None:
                checkpoint(state)
            raise TrainingInterrupted(step, paths.checkpoint if paths is not None else None) from None
        except _NonFinite as e:
            if paths is not None:
                write_csv(paths.csv, history)
            kept = (f"the last good checkpoint {paths.checkpoint} (step {last_saved}) is kept"
                    if last_saved is not None else "no checkpoint had been saved yet") if paths is not None else ""
            raise TrainError(f"the {e.what} is {e.value} at step {e.step}: stopped without applying it; "
                             f"{kept + '; ' if kept else ''}try a lower --lr") from None
    if paths is not None:
        save_model(model, paths.out)
        log(f"saved {paths.out} (step {step}; losses in {paths.csv}, checkpoint {paths.checkpoint})")
    return model, history


class _NonFinite(Exception):
    def __init__(self, what, value, step):
        self.what, self.value, self.step = what, value, step


# --------------------------------------------------------------------------------------------
# Everything at once: what `gpt2np train` runs
# --------------------------------------------------------------------------------------------


def train_text(texts, out, *, init: str = "124M", config: Config | None = None,
               settings: TrainSettings | dict | None = None, resume: bool = False, base_url=None,
               progress: bool = True, log=None):
    """Tokenize ``texts`` beside ``out`` (:func:`prepare_tokens`), make the model
    (:func:`init_model`; not when resuming) and :func:`train` it; returns ``(model, history)``.

    ``settings``: a TrainSettings, or a dict of fields that change the defaults (the checkpoint's
    settings when ``resume``).  The cheap checks (the output name, the checkpoint, ``seq_len``
    against ``n_ctx``) come before any tokenizing or downloading.
    """
    log = log or _stderr
    paths = RunPaths.of(out)
    if resume:
        meta = read_checkpoint_meta(paths.checkpoint)
        settings = _with_overrides(TrainSettings.from_dict(meta["settings"]), settings)
        n_ctx = Config(**meta["hparams"]).n_ctx
        model = None
        if init not in (None, "124M") or config is not None:
            log(f"resuming {paths.checkpoint}: its weights are used, not --init/the model shape")
    else:
        settings = _with_overrides(TrainSettings(), settings)
        if config is not None:
            _check_seq_len(settings.resolved_seq_len(config.n_ctx), config.n_ctx)
        model = init_model(init, config, seed=settings.seed, base_url=base_url)
        n_ctx = model.config.n_ctx
        model = writable(model, source=str(init), log=log)
    _check_seq_len(settings.resolved_seq_len(n_ctx), n_ctx)
    tokens = prepare_tokens(texts, paths.tokens, val_fraction=settings.val_fraction, log=log)
    return train(model, tokens, settings, out=out, resume=resume, progress=progress, log=log)
