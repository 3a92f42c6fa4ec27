"""The generation subcommands of the ``gpt2np`` command, on a tiny model saved by the test."""

import io
import subprocess
import sys

import numpy as np
import pytest

from gpt2np import GPT2, Config, Tokenizer, tasks
from gpt2np.cli import main
from gpt2np.generation import generate_text
from gpt2np.scoring import perplexity


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.gpt2()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random model over the full GPT-2 vocabulary (so any prompt encodes), saved as .npz."""
    model = GPT2.random(Config(n_vocab=50257, n_ctx=256, n_embd=16, n_head=2, n_layer=1), seed=2)
    path = tmp_path_factory.mktemp("model") / "tiny.npz"
    model.save(path)
    return GPT2.load(path), str(path)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_streams_the_text(capsys, tiny, tok):
    model, path = tiny
    code, out, err = run(capsys, "generate", "Hello world", "--model", path, "--max-new-tokens", "12")
    assert code == 0 and err == ""
    assert out == generate_text(model, tok, "Hello world", max_new_tokens=12) + "\n"


def test_generate_sampling_flags_no_stream_echo_and_stop(capsys, tiny, tok):
    model, path = tiny
    kw = dict(max_new_tokens=15, temperature=0.9, top_k=50, top_p=0.9, repetition_penalty=1.3, seed=4)
    want = generate_text(model, tok, "Once", **kw)
    code, out, _ = run(capsys, "generate", "Once", "--model", path, "--max-new-tokens", "15", "--temperature",
                       "0.9", "--top-k", "50", "--top-p", "0.9", "--repetition-penalty", "1.3", "--seed", "4",
                       "--no-stream", "--echo")
    assert code == 0 and out == "Once" + want + "\n"
    stop = want[3:6]
    code, out, _ = run(capsys, "generate", "Once", "--model", path, "--max-new-tokens", "15", "--temperature",
                       "0.9", "--top-k", "50", "--top-p", "0.9", "--repetition-penalty", "1.3", "--seed", "4",
                       "--stop", "zzzz", "--stop", stop)
    assert code == 0 and out == want[: want.index(stop)] + "\n"


@pytest.mark.parametrize("arg", [None, "-"])
def test_generate_reads_the_prompt_from_stdin(capsys, monkeypatch, tiny, tok, arg):
    model, path = tiny
    monkeypatch.setattr(sys, "stdin", io.StringIO("A prompt from a pipe"))
    argv = ["generate"] + ([arg] if arg else []) + ["--model", path, "--max-new-tokens", "5"]
    code, out, _ = run(capsys, *argv)
    assert code == 0 and out == generate_text(model, tok, "A prompt from a pipe", max_new_tokens=5) + "\n"


def test_summarize(capsys, tmp_path, tiny, tok):
    model, path = tiny
    article = tmp_path / "article.txt"
    article.write_text("The town council met on Monday. It approved a new park.\n", encoding="utf-8")
    code, out, _ = run(capsys, "summarize", str(article), "--model", path, "--seed", "3", "--max-new-tokens", "40")
    want = tasks.summarize(model, tok, article.read_text(encoding="utf-8"), max_new_tokens=40, seed=3)
    assert code == 0 and out == want + "\n"


def test_translate_with_examples_file(capsys, tmp_path, tiny, tok):
    model, path = tiny
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("Yes\tOui\nThank you\tMerci\n", encoding="utf-8")
    code, out, _ = run(capsys, "translate", "Good night.", "--model", path, "--examples", str(pairs))
    want = tasks.translate(model, tok, "Good night.", examples=[("Yes", "Oui"), ("Thank you", "Merci")])
    assert code == 0 and out == want + "\n"
    assert "\n" not in want


def test_answer_with_document(capsys, tmp_path, tiny, tok):
    model, path = tiny
    doc = tmp_path / "doc.txt"
    doc.write_text("Ada Lovelace wrote the first program.", encoding="utf-8")
    code, out, _ = run(capsys, "answer", "Who wrote the first program?", "--model", path, "--document", str(doc))
    want = tasks.answer(model, tok, "Who wrote the first program?", document=doc.read_text(encoding="utf-8"))
    assert code == 0 and out == want + "\n"


def test_score(capsys, tmp_path, tiny, tok):
    model, path = tiny
    text = tmp_path / "text.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 12, encoding="utf-8")
    code, out, _ = run(capsys, "score", str(text), "--model", path, "--max-length", "64", "--stride", "16")
    want = perplexity(model, tok.encode(text.read_text(encoding="utf-8")), max_length=64, stride=16)
    assert code == 0
    assert out.splitlines() == [
        f"tokens scored: {want.n_tokens}",
        f"mean NLL: {want.nll:.4f} nats/token",
        f"perplexity: {want.ppl:.4f}",
    ]
    assert want.n_tokens == len(tok.encode(text.read_text(encoding="utf-8"))) - 1


@pytest.mark.parametrize(
    "argv, words",
    [
        (["generate", "x", "--top-p", "0"], "--top-p"),
        (["generate", "x", "--top-p", "1.5"], "--top-p"),
        (["generate", "x", "--temperature", "-1"], "--temperature"),
        (["generate", "x", "--temperature", "nan"], "--temperature"),
        (["generate", "x", "--top-k", "0"], "--top-k"),
        (["generate", "x", "--max-new-tokens", "many"], "--max-new-tokens"),
        (["generate", "x", "--repetition-penalty", "0"], "--repetition-penalty"),
        (["score", "f.txt", "--stride", "0"], "--stride"),
        (["summarize", "f.txt", "--top-k", "-2"], "--top-k"),
        (["generate", "x", "--stop", ""], "--stop"),
    ],
)
def test_bad_flag_values_give_one_line(capsys, argv, words):
    with pytest.raises(SystemExit) as e:
        main(argv)
    out, err = capsys.readouterr()
    assert e.value.code == 2
    assert len(err.strip().splitlines()) == 1 and words in err and "Traceback" not in err


def test_user_errors_give_one_line(capsys, tmp_path, tiny):
    _, path = tiny
    cases = [
        (["generate", "x", "--model", str(tmp_path / "missing.npz")], "missing.npz"),
        (["generate", "x", "--model", "999M"], "999M"),
        (["generate", "x", "--model", path, "--max-new-tokens", "300"], "n_ctx = 256"),
        (["score", str(tmp_path / "missing.txt"), "--model", path], "no such file"),
        (["score", path, "--model", path, "--stride", "5000"], None),
        (["translate", "x", "--model", path, "--examples", str(tmp_path / "none.tsv")], "none.tsv"),
    ]
    for argv, words in cases:
        code, out, err = run(capsys, *argv)
        assert code == 1, argv
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert words is None or words in err, err


@pytest.fixture(scope="module")
def broken(tmp_path_factory, tiny):
    """The tiny model with NaN embeddings (every logit NaN), saved as .npz."""
    model, _ = tiny
    bad = GPT2(model.config, {**model.params, "wte": np.full_like(model.params["wte"], np.nan)})
    path = tmp_path_factory.mktemp("broken") / "nan.npz"
    bad.save(path)
    return str(path)


class PlusInf:
    """A model whose logits are finite except +inf at token 0 ("!") from call ``call`` on."""

    def __init__(self, model, call=0):
        self.model, self.call, self.calls = model, call, 0
        self.config, self.new_cache = model.config, model.new_cache

    def __call__(self, ids, **kw):
        logits = self.model(ids, **kw)
        if self.calls >= self.call:
            logits[..., 0] = np.inf
        self.calls += 1
        return logits


@pytest.mark.parametrize("flags", [[], ["--no-stream"], ["--temperature", "1", "--seed", "0"]])
def test_non_finite_logits_give_one_line_and_exit_1(capsys, monkeypatch, tiny, broken, flags):
    """Issue 15: +inf logits passed the NaN check (greedy printed "!!!!!", sampling stopped at
    <|endoftext|>) and score printed nan, all with exit status 0."""
    model, path = tiny
    code, out, err = run(capsys, "generate", "Hello", "--model", broken, "--max-new-tokens", "5", *flags)
    assert code == 1 and out == "" and err.count("\n") == 1, (out, err)
    assert "NaN logits at step 0" in err and "Traceback" not in err
    monkeypatch.setattr("gpt2np.cli.load_model_arg", lambda spec, base_url=None: PlusInf(model))
    code, out, err = run(capsys, "generate", "Hello", "--model", path, "--max-new-tokens", "5", *flags)
    assert code == 1 and "!" not in out and err.count("\n") == 1, (out, err)
    assert err.startswith("gpt2np generate: error: the model returned +inf logits at step 0")
    # after a few streamed tokens: the text so far, its line ended, then the error on stderr
    monkeypatch.setattr("gpt2np.cli.load_model_arg", lambda spec, base_url=None: PlusInf(model, call=3))
    code, out, err = run(capsys, "generate", "Hello", "--model", path, "--max-new-tokens", "8", *flags)
    assert code == 1 and "+inf logits at step 3" in err and err.count("\n") == 1
    if "--no-stream" in flags:
        assert out == ""
    else:
        want = generate_text(model, Tokenizer.gpt2(), "Hello", max_new_tokens=3,
                             **({"temperature": 1.0, "seed": 0} if "--seed" in flags else {}))
        assert out == want + "\n"


def test_score_of_non_finite_logits_gives_one_line_and_exit_1(capsys, tmp_path, broken):
    text = tmp_path / "text.txt"
    text.write_text("The quick brown fox jumps over the lazy dog.", encoding="utf-8")
    code, out, err = run(capsys, "score", str(text), "--model", broken)
    assert code == 1 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("gpt2np score: error: the model returned NaN logits in window 0")


def test_repetition_penalty_that_rounds_to_zero_gives_one_line_and_exit_1(capsys, tiny):
    _, path = tiny
    code, out, err = run(capsys, "generate", "Hello", "--model", path, "--repetition-penalty", "1e-50")
    assert code == 1 and out == "" and err.count("\n") == 1
    assert "repetition_penalty 1e-50 rounds to 0.0 in float32" in err


def test_python_dash_m(tiny, tmp_path):
    _, path = tiny
    result = subprocess.run(
        [sys.executable, "-m", "gpt2np", "generate", "Hello", "--model", path, "--max-new-tokens", "3"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("\n") and len(result.stdout) > 1
    bad = subprocess.run(
        [sys.executable, "-m", "gpt2np", "generate", "Hello", "--model", str(tmp_path / "no.npz")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_stop_flag_understands_escapes(capsys):
    from gpt2np.cli import _unescape

    assert _unescape(r"\n") == "\n"
    assert _unescape(r"Q:\tA") == "Q:\tA"
    assert _unescape(r"a\\n") == "a\\n"  # an escaped backslash stays a backslash
    assert _unescape(r"\d é") == r"\d é"  # other escapes are left alone
    with pytest.raises(SystemExit) as e:
        main(["generate", "x", "--stop", ""])
    assert e.value.code == 2 and "stop string must not be empty" in capsys.readouterr().err


def test_base_url_reaches_the_download(capsys, tmp_path, monkeypatch):
    """--base-url is handed to the hub: an empty mirror folder is named in the error."""
    monkeypatch.setenv("GPT2NP_HOME", str(tmp_path / "cache"))
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    code, out, err = run(capsys, "generate", "x", "--model", "124M", "--base-url", str(mirror))
    assert code == 1 and str(mirror) in err and len(err.strip().splitlines()) == 1
