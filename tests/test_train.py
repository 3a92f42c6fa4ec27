"""gpt2np.train from Python: token files, seeded windows, the validation split, the CSV, atomic
checkpoints, a bit-identical resume, gradient accumulation, a loss that goes down, and weights
from a file that are copied, never written."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal

import numpy as np
import pytest

from gpt2np import GPT2, Config
from gpt2np import backward
from gpt2np import train as T
from gpt2np.formats import flatten
from gpt2np.optim import AdamW

TINY = Config(n_vocab=32, n_ctx=16, n_embd=16, n_head=2, n_layer=2)
THE, A, EOT = 262, 257, 50256  # GPT-2's ids of " the", " a", <|endoftext|>


def tiny_model(seed=0, dtype=np.float32):
    return GPT2.random(TINY, seed=seed, dtype=dtype)


def pattern_tokens(n=1200, seed=0):
    """Learnable tokens: a period-8 cycle with a little noise."""
    rng = np.random.default_rng(seed)
    t = np.tile(np.arange(8) * 3 % 32, n // 8 + 1)[:n]
    noise = rng.random(n) < 0.05
    t[noise] = rng.integers(0, 32, noise.sum())
    return t.astype(np.uint16)


def data(n=1200):
    t = pattern_tokens(n)
    return t[: n - 200], t[n - 200:]


def settings(**kw):
    base = dict(steps=20, batch_size=2, seq_len=8, lr=3e-3, eval_every=5, eval_windows=4, save_every=5, warmup=2)
    base.update(kw)
    return T.TrainSettings(**base)


def flat(model):
    return flatten(model.params)


def assert_same_bits(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), f"{k} differs"


# --- token files -----------------------------------------------------------------------------


def test_prepare_tokens_splits_each_file_from_its_end_and_separates_documents(tmp_path):
    (tmp_path / "a.txt").write_text(" the" * 40, encoding="utf-8")
    (tmp_path / "b.txt").write_text(" a" * 20, encoding="utf-8")
    tf = T.prepare_tokens([tmp_path / "a.txt", tmp_path / "b.txt"], tmp_path / "tok", val_fraction=0.1,
                          log=lambda m: None)
    train, val = tf.load()
    assert isinstance(train, np.memmap) and train.dtype == np.uint16 and not train.flags.writeable
    # 40 tokens: 36 train + 4 val; 20 tokens: 18 + 2; each part ends with <|endoftext|>
    assert train.tolist() == [THE] * 36 + [EOT] + [A] * 18 + [EOT]
    assert val.tolist() == [THE] * 4 + [EOT] + [A] * 2 + [EOT]
    assert (tf.n_train, tf.n_val, tf.reused) == (56, 8, False)
    meta = json.loads((tmp_path / "tok" / "meta.json").read_text())
    raw = (tmp_path / "a.txt").read_bytes()
    assert meta["inputs"][0] == {"path": str((tmp_path / "a.txt").resolve()), "size": len(raw),
                                 "sha256": hashlib.sha256(raw).hexdigest()}


def test_endoftext_in_the_text_is_the_separator_token(tmp_path):
    (tmp_path / "a.txt").write_text(" the<|endoftext|> a", encoding="utf-8")
    tf = T.prepare_tokens([tmp_path / "a.txt"], tmp_path / "tok", val_fraction=0.0, log=lambda m: None)
    assert tf.load()[0].tolist() == [THE, EOT, A, EOT] and tf.n_val == 0


def test_token_files_are_reused_until_an_input_changes(tmp_path):
    src = tmp_path / "a.txt"
    src.write_text(" the" * 40, encoding="utf-8")
    first = T.prepare_tokens([src], tmp_path / "tok", log=lambda m: None)
    stamp = (tmp_path / "tok" / "train.npy").stat().st_mtime_ns
    again = T.prepare_tokens([src], tmp_path / "tok", log=lambda m: None)
    assert again.reused and (tmp_path / "tok" / "train.npy").stat().st_mtime_ns == stamp
    other_fraction = T.prepare_tokens([src], tmp_path / "tok", val_fraction=0.25, log=lambda m: None)
    assert not other_fraction.reused and other_fraction.n_val == 11  # 10 + <|endoftext|>
    src.write_text(" a" * 40, encoding="utf-8")  # same size, other bytes
    changed = T.prepare_tokens([src], tmp_path / "tok", val_fraction=0.25, log=lambda m: None)
    assert not changed.reused and changed.load()[0][0] == A and changed.fingerprint != first.fingerprint
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == ["meta.json", "train.npy", "val.npy"]


def test_token_files_interrupted_while_rewritten_are_not_reused_stale(tmp_path, monkeypatch):
    src = tmp_path / "a.txt"
    src.write_text(" the" * 40, encoding="utf-8")
    T.prepare_tokens([src], tmp_path / "tok", log=lambda m: None)
    src.write_text(" a" * 40, encoding="utf-8")  # the same number of tokens
    real, calls = np.save, []

    def fail_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        return real(*a, **k)

    monkeypatch.setattr(np, "save", fail_second)
    with pytest.raises(OSError):  # train.npy holds " a" now, val.npy could not be written
        T.prepare_tokens([src], tmp_path / "tok", log=lambda m: None)
    monkeypatch.setattr(np, "save", real)
    src.write_text(" the" * 40, encoding="utf-8")  # back to the first text
    again = T.prepare_tokens([src], tmp_path / "tok", log=lambda m: None)
    assert not again.reused and set(again.load()[0][:-1].tolist()) == {THE}


@pytest.mark.parametrize("make, words", [
    (lambda p: p.write_bytes(b"caf\xe9 au lait"), ["bad.txt", "not UTF-8", "byte 3"]),
    (lambda p: None, ["bad.txt", "no such file"]),
    (lambda p: p.mkdir(), ["bad.txt", "folder"]),
])
def test_unreadable_or_non_utf8_text_is_named(tmp_path, make, words):
    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_text(" the" * 10, encoding="utf-8")
    make(bad)
    with pytest.raises(T.TrainError) as e:
        T.prepare_tokens([good, bad], tmp_path / "tok", log=lambda m: None)
    assert all(w in str(e.value) for w in words) and "\n" not in str(e.value)
    assert not (tmp_path / "tok" / "meta.json").exists()


# --- windows, loss, gradients ------------------------------------------------------------------


def test_batches_are_seeded_random_windows_of_seq_len_plus_one(monkeypatch):
    tokens, _ = data()
    seen = []
    real = T.window_loss_and_grads

    def spy(model, windows):
        seen.append(windows.copy())
        return real(model, windows)

    monkeypatch.setattr(T, "window_loss_and_grads", spy)
    T.train(tiny_model(), tokens, settings(steps=3, grad_accum=2, batch_size=3, seed=7), progress=False)
    rng = np.random.default_rng(7)  # numpy's own generator, drawn as documented: (grad_accum, batch) per step
    expected = []
    for _ in range(3):
        starts = rng.integers(0, len(tokens) - 9 + 1, size=(2, 3))
        expected += [np.stack([tokens[s:s + 9] for s in row]).astype(np.int64) for row in starts]
    assert len(seen) == 6
    for got, want in zip(seen, expected):
        assert got.shape == (3, 9) and np.array_equal(got, want)


def test_window_loss_and_grads_is_loss_and_grads_of_the_whole_window():
    model = tiny_model(dtype=np.float64)
    w = np.random.default_rng(1).integers(0, 32, (3, 9))
    loss, grads = T.window_loss_and_grads(model, w)
    ref_loss, ref = backward.loss_and_grads(model, w)  # reads all 9 tokens, predicts the last 8
    assert loss == pytest.approx(ref_loss, rel=1e-13) and loss == pytest.approx(model.loss(w), rel=1e-12)
    g, r = flatten(grads), flatten(ref)
    for k in g:
        scale = np.abs(r[k]).max() or 1.0
        assert np.abs(g[k] - r[k]).max() <= 1e-12 * scale, k


def test_validation_loss_is_the_mean_over_fixed_evenly_spread_windows():
    _, val = data()
    starts = T.val_starts(len(val), 9, 5)
    assert starts.tolist() == [0, 48, 96, 143, 191]  # linspace(0, 200 - 9, 5), rounded
    windows = T.gather_windows(val, starts, 9)
    model = tiny_model(dtype=np.float64)
    assert T.evaluate(model, windows) == pytest.approx(np.mean([model.loss(w) for w in windows]), rel=1e-10)
    assert T.val_starts(10, 9, 16).tolist() == [0, 1]  # a short split: fewer, distinct windows


def test_grad_accumulation_equals_one_larger_batch():
    tokens, _ = data()
    model = tiny_model(dtype=np.float64)
    starts = np.array([[5, 100], [333, 640]])
    loss_acc, g_acc = T.batch_loss_and_grads(model, tokens, starts, 9)
    loss_one, g_one = T.batch_loss_and_grads(model, tokens, starts.reshape(1, 4), 9)
    assert loss_acc == pytest.approx(loss_one, rel=1e-13)
    a, b = flatten(g_acc), flatten(g_one)
    for k in a:
        assert np.abs(a[k] - b[k]).max() <= 1e-13 * (np.abs(b[k]).max() or 1.0), k
    # and whole runs: accumulation 2 x batch 2 against batch 4, the same windows and updates
    m1, h1 = T.train(tiny_model(dtype=np.float64), tokens, settings(steps=4, batch_size=2, grad_accum=2),
                     progress=False)
    m2, h2 = T.train(tiny_model(dtype=np.float64), tokens, settings(steps=4, batch_size=4, grad_accum=1),
                     progress=False)
    assert [r["train_loss"] for r in h1] == pytest.approx([r["train_loss"] for r in h2], rel=1e-10)
    f1, f2 = flat(m1), flat(m2)
    for k in f1:
        assert np.allclose(f1[k], f2[k], rtol=0, atol=1e-9), k


def test_a_short_run_lowers_the_loss():
    model, history = T.train(tiny_model(), data(), settings(steps=40, batch_size=4, eval_every=40),
                             progress=False)
    before, after = history[0]["val_loss"], history[-1]["val_loss"]
    assert history[0]["step"] == 0 and history[-1]["step"] == 40
    assert before > 3.0 and after < before - 1.0, (before, after)  # ln 32 = 3.47 at the start


# --- files of a run: CSV, checkpoints, resume -------------------------------------------------


def test_csv_has_a_row_per_step_and_the_validation_losses(tmp_path):
    model, history = T.train(tiny_model(), data(), settings(steps=7, eval_every=3), out=tmp_path / "m.npz",
                             progress=False)
    rows = list(csv.DictReader(open(tmp_path / "m.csv", newline="")))
    assert list(rows[0]) == ["step", "lr", "train_loss", "val_loss", "tokens_per_s", "elapsed_s"]
    assert [int(r["step"]) for r in rows] == list(range(8))
    assert [r["step"] for r in rows if r["val_loss"]] == ["0", "3", "6", "7"]  # before, every 3, the last
    assert rows[0]["train_loss"] == "" and rows[0]["lr"] == ""
    for r, h in zip(rows[1:], history[1:]):
        assert float(r["train_loss"]) == h["train_loss"] and float(r["lr"]) == h["lr"]
        assert float(r["tokens_per_s"]) > 0
    elapsed = [float(r["elapsed_s"]) for r in rows]
    assert elapsed == sorted(elapsed)
    assert float(rows[1]["lr"]) == pytest.approx(3e-3 / 2)  # warm-up 2: lr·1/2 first


def test_checkpoint_holds_params_optimizer_step_schedule_and_rng(tmp_path):
    model, history = T.train(tiny_model(), data(), settings(steps=5, save_every=5), out=tmp_path / "m.npz",
                             progress=False)
    ck = T.load_checkpoint(tmp_path / "m.ckpt.npz")
    assert ck.step == 5 and ck.config == TINY and ck.settings == settings(steps=5, save_every=5)
    assert_same_bits(flatten(ck.params), flat(model))
    assert_same_bits(flat(GPT2.load(tmp_path / "m.npz")), flat(model))
    assert ck.optimizer["step"] == 5 and ck.optimizer["lr"] == history[-1]["lr"]
    rng = np.random.default_rng(0)  # the generator after 5 steps' draws of (1, 2) starts
    for _ in range(5):
        rng.integers(0, 1000 - 9 + 1, size=(1, 2))
    assert ck.rng_state == rng.bit_generator.state
    assert [r["step"] for r in ck.history] == list(range(6))
    with np.load(tmp_path / "m.ckpt.npz", allow_pickle=False) as z:  # a plain .npz, nothing pickled
        assert "params/blocks.1.mlp.c_proj.w" in z.files and "optimizer/m/wte" in z.files


def test_a_failed_checkpoint_write_leaves_the_previous_one_and_no_temp_file(tmp_path, monkeypatch):
    out = tmp_path / "m.npz"
    T.train(tiny_model(), data(), settings(steps=5, save_every=5), out=out, progress=False)
    before = (tmp_path / "m.ckpt.npz").read_bytes()
    calls = []
    real = np.lib.format.write_array

    def failing(*a, **k):
        calls.append(1)
        if len(calls) == 10:
            raise OSError(28, "No space left on device")
        return real(*a, **k)

    monkeypatch.setattr(np.lib.format, "write_array", failing)
    with pytest.raises(OSError, match="disk full"):
        T.train(None, data(), settings(steps=10, save_every=5), out=out, resume=True, progress=False)
    assert (tmp_path / "m.ckpt.npz").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ckpt.npz", "m.csv", "m.npz"]


def test_stopped_and_resumed_gives_the_weights_of_an_uninterrupted_run_bit_for_bit(tmp_path, monkeypatch):
    s = settings(steps=20, grad_accum=2, save_every=5)
    straight, h_straight = T.train(tiny_model(), data(), s, out=tmp_path / "a.npz", progress=False)

    # Ctrl-C in the middle of step 13 (its second micro-batch): steps 1..12 are saved, step 13 is redone
    real, calls = T.window_loss_and_grads, []

    def interrupt(model, windows):
        calls.append(1)
        if len(calls) == 2 * 12 + 2:
            raise KeyboardInterrupt
        return real(model, windows)

    monkeypatch.setattr(T, "window_loss_and_grads", interrupt)
    with pytest.raises(T.TrainingInterrupted) as e:
        T.train(tiny_model(), data(), s, out=tmp_path / "b.npz", progress=False)
    assert e.value.step == 12 and e.value.checkpoint == tmp_path / "b.ckpt.npz"
    assert T.load_checkpoint(tmp_path / "b.ckpt.npz").step == 12 and not (tmp_path / "b.npz").exists()
    monkeypatch.setattr(T, "window_loss_and_grads", real)
    resumed, h_resumed = T.train(None, data(), None, out=tmp_path / "b.npz", resume=True, progress=False)
    assert_same_bits(flat(resumed), flat(straight))
    assert_same_bits(flat(GPT2.load(tmp_path / "b.npz")), flat(GPT2.load(tmp_path / "a.npz")))
    cols = ("step", "lr", "train_loss", "val_loss")
    assert [[r[c] for c in cols] for r in h_resumed] == [[r[c] for c in cols] for r in h_straight]
    a_opt = T.load_checkpoint(tmp_path / "a.ckpt.npz").optimizer
    b_opt = T.load_checkpoint(tmp_path / "b.ckpt.npz").optimizer
    assert a_opt.keys() == b_opt.keys() and all(np.array_equal(a_opt[k], b_opt[k]) for k in a_opt)


def test_a_crash_resumes_from_the_last_periodic_checkpoint_bit_for_bit(tmp_path, monkeypatch):
    s = settings(steps=12, save_every=5)
    straight, _ = T.train(tiny_model(), data(), s, progress=False)
    real, calls = T.window_loss_and_grads, []

    def crash(model, windows):
        calls.append(1)
        if len(calls) == 8:
            raise MemoryError  # not Ctrl-C: nothing is saved, the checkpoint of step 5 stays
        return real(model, windows)

    monkeypatch.setattr(T, "window_loss_and_grads", crash)
    with pytest.raises(MemoryError):
        T.train(tiny_model(), data(), s, out=tmp_path / "m.npz", progress=False)
    assert T.load_checkpoint(tmp_path / "m.ckpt.npz").step == 5
    monkeypatch.setattr(T, "window_loss_and_grads", real)
    resumed, history = T.train(None, data(), None, out=tmp_path / "m.npz", resume=True, progress=False)
    assert_same_bits(flat(resumed), flat(straight))
    assert [r["step"] for r in history] == list(range(13))  # the rows of the lost steps are redone once


def test_ctrl_c_during_the_update_waits_for_it_to_finish(tmp_path, monkeypatch):
    s = settings(steps=8, save_every=100)
    straight, _ = T.train(tiny_model(), data(), s, progress=False)
    real_step, count = AdamW.step, []

    def step_with_signal(self, grads, lr=None):
        count.append(1)
        if len(count) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # arrives while the update runs
        return real_step(self, grads, lr=lr)

    monkeypatch.setattr(AdamW, "step", step_with_signal)
    with pytest.raises(T.TrainingInterrupted) as e:
        T.train(tiny_model(), data(), s, out=tmp_path / "m.npz", progress=False)
    assert e.value.step == 3  # the third update finished, then the run stopped and saved
    monkeypatch.setattr(AdamW, "step", real_step)
    resumed, _ = T.train(None, data(), None, out=tmp_path / "m.npz", resume=True, progress=False)
    assert_same_bits(flat(resumed), flat(straight))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is restored


# --- weights from a file, bad input ------------------------------------------------------------


def test_read_only_weights_are_copied_and_the_file_is_never_written(tmp_path):
    src = tmp_path / "start.npz"
    tiny_model(seed=3).save(src)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    loaded = GPT2.load(src)  # read-only memory maps of the file
    assert not loaded.params["wte"].flags.writeable
    original = {k: v.copy() for k, v in flat(loaded).items()}
    said = []
    trained, _ = T.train(loaded, data(), settings(steps=3), out=tmp_path / "out.npz", progress=False,
                         log=said.append)
    assert any("writable copy" in m and "read-only" in m for m in said)
    assert trained is not loaded and not np.array_equal(trained.params["wte"], original["wte"])
    assert_same_bits(flat(loaded), original)
    assert hashlib.sha256(src.read_bytes()).hexdigest() == digest
    # a model of its own arrays is trained in place, without a copy or a message
    own, said = tiny_model(), []
    trained, _ = T.train(own, data(), settings(steps=1, warmup=0), progress=False, log=said.append)
    assert trained is own and not said


def test_bad_input_is_one_clear_error(tmp_path):
    with pytest.raises(T.TrainError, match=r"fewer than one window of seq_len \+ 1 = 9"):
        T.train(tiny_model(), np.arange(8) % 32, settings(), progress=False)
    with pytest.raises(T.TrainError, match="above the model's n_ctx=16"):
        T.train(tiny_model(), data(), settings(seq_len=17), progress=False)
    with pytest.raises(T.TrainError, match="validation split has 5 tokens"):
        T.train(tiny_model(), (pattern_tokens(100), pattern_tokens(5)), settings(), progress=False)
    with pytest.raises(T.TrainError, match="outside the model's vocabulary"):
        T.train(tiny_model(), np.full(100, 40), settings(), progress=False)
    with pytest.raises(T.TrainError, match="batch_size must be a whole number >= 1"):
        settings(batch_size=0)
    with pytest.raises(T.TrainError, match="no checkpoint"):
        T.train(None, data(), None, out=tmp_path / "x.npz", resume=True, progress=False)
    with pytest.raises(T.TrainError, match="must end in .npz or .safetensors"):
        T.train(tiny_model(), data(), settings(), out=tmp_path / "x.pt", progress=False)


def test_a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real, calls = T.window_loss_and_grads, []

    def blow_up(model, windows):
        calls.append(1)
        loss, grads = real(model, windows)
        return (float("nan") if len(calls) == 7 else loss), grads

    monkeypatch.setattr(T, "window_loss_and_grads", blow_up)
    out = tmp_path / "m.npz"
    with pytest.raises(T.TrainError) as e:
        T.train(tiny_model(), data(), settings(steps=10, save_every=5), out=out, progress=False)
    message = str(e.value)
    assert "loss is nan at step 7" in message and "m.ckpt.npz (step 5) is kept" in message
    assert T.load_checkpoint(tmp_path / "m.ckpt.npz").step == 5 and not out.exists()
    rows = list(csv.DictReader(open(tmp_path / "m.csv", newline="")))
    assert rows[-1]["step"] == "6"  # the CSV shows the steps that were done


@pytest.mark.parametrize("clip", [1.0, 0.0])
def test_a_non_finite_gradient_stops_before_reaching_the_weights(monkeypatch, clip):
    real, calls = T.window_loss_and_grads, []

    def bad_grad(model, windows):
        calls.append(1)
        loss, grads = real(model, windows)
        if len(calls) == 3:
            grads["blocks"][1]["mlp"]["c_fc"]["b"][4] = np.nan
        return loss, grads

    monkeypatch.setattr(T, "window_loss_and_grads", bad_grad)
    model = tiny_model()
    with pytest.raises(T.TrainError, match="gradient norm is nan at step 3"):
        T.train(model, data(), settings(steps=5, clip=clip), progress=False)
    assert all(np.isfinite(a).all() for a in T._tree_leaves(model.params))


def test_save_model_by_suffix(tmp_path):
    model = tiny_model()
    T.save_model(model, tmp_path / "m.safetensors")
    assert (tmp_path / "config.json").is_file()
    again = GPT2.from_safetensors(tmp_path / "m.safetensors", config=TINY)
    assert_same_bits(flat(again), flat(model))
