"""`gpt2np train`: a run and its files, --resume, Ctrl-C, and one line with the right exit status
for each bad input."""

from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest

from gpt2np import GPT2, Config
from gpt2np import train as T
from gpt2np.cli import main

NEW = ["--init", "new", "--n-layer", "1", "--n-head", "2", "--n-embd", "8", "--n-ctx", "16"]
SMALL = ["--steps", "6", "--batch-size", "2", "--seq-len", "16", "--eval-every", "3", "--save-every", "3",
         "--eval-windows", "2", "--lr", "1e-3", "--quiet"]
WORDS = "the cat sat on a mat while a dog ran far from home and birds sang in the old tree".split()


@pytest.fixture
def corpus(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "corpus.txt"
    path.write_text(" ".join(rng.choice(WORDS, 900)) + "\n", encoding="utf-8")
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_train_new_model_writes_model_csv_checkpoint_and_tokens(tmp_path, corpus, capsys):
    out = tmp_path / "small.npz"
    code, stdout, err = run(capsys, "train", corpus, *NEW, "--out", out, *SMALL)
    assert code == 0, err
    assert stdout.startswith(f"{out}: step 6, train loss ") and "validation loss" in stdout
    model = GPT2.load(out)
    assert model.config == Config(n_vocab=50257, n_ctx=16, n_embd=8, n_head=2, n_layer=1)
    rows = list(csv.DictReader(open(tmp_path / "small.csv", newline="")))
    assert [r["step"] for r in rows] == ["0", "1", "2", "3", "4", "5", "6"]
    assert T.load_checkpoint(tmp_path / "small.ckpt.npz").step == 6
    meta = json.loads((tmp_path / "small.tokens" / "meta.json").read_text())
    assert meta["inputs"][0]["sha256"] == hashlib.sha256(corpus.read_bytes()).hexdigest()
    assert np.load(tmp_path / "small.tokens" / "train.npy").dtype == np.uint16


def test_resume_continues_the_checkpoint_with_its_settings(tmp_path, corpus, capsys, monkeypatch):
    straight = tmp_path / "a.npz"
    assert run(capsys, "train", corpus, *NEW, "--out", straight, *SMALL, "--steps", "8")[0] == 0
    part = tmp_path / "b.npz"
    # the same run, stopped by Ctrl-C after step 4 (a patched step raises it), then --resume
    real, calls = T.window_loss_and_grads, []

    def interrupt(model, windows):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(model, windows)

    monkeypatch.setattr(T, "window_loss_and_grads", interrupt)
    code, _, err = run(capsys, "train", corpus, *NEW, "--out", part, *SMALL, "--steps", "8")
    monkeypatch.setattr(T, "window_loss_and_grads", real)
    assert code == 130 and not part.exists()
    assert one_line(err) == (f"gpt2np train: interrupted after step 4; saved {tmp_path / 'b.ckpt.npz'}, "
                             f"continue with --resume")
    code, stdout, err = run(capsys, "train", corpus, "--out", part, "--resume", "--quiet")
    assert code == 0 and "step 8" in stdout, err
    a, b = GPT2.load(straight), GPT2.load(part)
    assert all(np.array_equal(x, y) for x, y in zip(T._tree_leaves(a.params), T._tree_leaves(b.params)))


def test_init_from_a_model_file_copies_it_and_never_writes_it(tmp_path, corpus, capsys):
    start = tmp_path / "start.npz"
    GPT2.random(Config(n_vocab=50257, n_ctx=16, n_embd=8, n_head=2, n_layer=1), seed=5).save(start)
    digest = hashlib.sha256(start.read_bytes()).hexdigest()
    code, _, err = run(capsys, "train", corpus, "--init", start, "--out", tmp_path / "tuned.safetensors",
                       *SMALL[:-1], "--steps", "2")  # not --quiet: the copy is announced
    assert code == 0, err
    assert "writable copy" in err and str(start) in err
    assert hashlib.sha256(start.read_bytes()).hexdigest() == digest
    assert json.loads((tmp_path / "config.json").read_text())["n_embd"] == 8  # the .safetensors door


@pytest.mark.parametrize("case", ["short", "missing", "latin1", "seq_len", "no_checkpoint", "suffix",
                                  "no_model", "val_split"])
def test_bad_input_is_one_line_with_exit_status_1(tmp_path, corpus, capsys, case):
    out = tmp_path / "m.npz"
    args = {
        "short": lambda: (tmp_path / "s.txt").write_text("the cat sat", encoding="utf-8") and
                         [tmp_path / "s.txt", *NEW, "--out", out, *SMALL],
        "missing": lambda: [corpus, tmp_path / "nope.txt", *NEW, "--out", out, *SMALL],
        "latin1": lambda: (tmp_path / "l.txt").write_bytes("déjà vu".encode("latin-1")) and
                          [corpus, tmp_path / "l.txt", *NEW, "--out", out, *SMALL],
        "seq_len": lambda: [corpus, *NEW, "--out", out, *SMALL, "--seq-len", "17"],
        "no_checkpoint": lambda: [corpus, "--out", out, "--resume", "--quiet"],
        "suffix": lambda: [corpus, *NEW, "--out", tmp_path / "m.pt", *SMALL],
        "no_model": lambda: [corpus, "--init", tmp_path / "nothing.npz", "--out", out, *SMALL],
        "val_split": lambda: [corpus, *NEW, "--out", out, *SMALL, "--val-fraction", "0.001"],
    }[case]()
    code, stdout, err = run(capsys, "train", *args)
    line = one_line(err)
    assert code == 1 and line.startswith("gpt2np train: error: ") and stdout == ""
    expected = {
        "short": "fewer than one window of seq_len + 1 = 17",
        "missing": "nope.txt: no such file",
        "latin1": "l.txt: not UTF-8 text",
        "seq_len": "--seq-len 17 is above the model's n_ctx=16",
        "no_checkpoint": "no checkpoint",
        "suffix": "must end in .npz or .safetensors",
        "no_model": "nothing.npz",
        "val_split": "validation split has",
    }[case]
    assert expected in line
    assert not out.exists() and not (tmp_path / "m.ckpt.npz").exists()


def test_a_non_finite_loss_stops_names_the_step_and_keeps_the_checkpoint(tmp_path, corpus, capsys, monkeypatch):
    real, calls = T.window_loss_and_grads, []

    def blow_up(model, windows):
        calls.append(1)
        loss, grads = real(model, windows)
        return (float("inf") if len(calls) == 5 else loss), grads

    monkeypatch.setattr(T, "window_loss_and_grads", blow_up)
    code, stdout, err = run(capsys, "train", corpus, *NEW, "--out", tmp_path / "m.npz", *SMALL)
    line = one_line(err)
    assert code == 1 and "loss is inf at step 5" in line and "(step 3) is kept" in line
    assert T.load_checkpoint(tmp_path / "m.ckpt.npz").step == 3 and not (tmp_path / "m.npz").exists()


@pytest.mark.parametrize("argv, words", [
    (["--n-layer", "2"], "--n-layer apply only to --init new"),
    (["--resume", "--init", "new"], "drop --init"),
    (["--steps", "0"], "expected a whole number >= 1"),
    (["--lr", "-1"], "a learning rate > 0"),
    (["--val-fraction", "2"], "a fraction"),
])
def test_bad_arguments_are_one_line_with_exit_status_2(tmp_path, corpus, capsys, argv, words):
    with pytest.raises(SystemExit) as e:
        main(["train", str(corpus), "--out", str(tmp_path / "m.npz"), *argv])
    assert e.value.code == 2
    line = one_line(capsys.readouterr().err)
    assert words in line and "gpt2np train: error:" in line
