"""Issue 15, "Input and command-line consistency": the same rules on every command.

- the default model is the size 124M, never a file or folder of that name in the working folder;
  an explicit name that is also a path says (one line) which it used;
- ``<|endoftext|>`` in the text is the special token on every command (tokenize, generate, the
  tasks, score), and ``--special-as-text`` makes it ordinary text on each;
- text that is not UTF-8 is refused the same way wherever it comes from (argument, file, standard
  input): one line naming where, and the byte offset;
- notebook 08 finds the repository's fixtures from any working folder.
"""

from __future__ import annotations

import io
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from gpt2np import GPT2, Config, Tokenizer
from gpt2np.cli import main
from gpt2np.formats import save_npz

from helpers import FIXTURES

ROOT = pathlib.Path(__file__).resolve().parent.parent
EOT = 50256
TEXT_COMMANDS = ["tokenize", "generate", "summarize", "translate", "answer", "score"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def small():
    """A 1-layer model with GPT-2's vocabulary."""
    return GPT2.random(Config(n_vocab=50257, n_ctx=256, n_embd=8, n_head=2, n_layer=1), seed=0)


# ---- the default model -----------------------------------------------------------------------------

@pytest.fixture
def folder_named_124m(small, tmp_path, monkeypatch):
    """The working folder holds ./124M (a TF checkpoint with a 20-token vocabulary), and the cache
    holds the size 124M (a small model with GPT-2's vocabulary): the two can be told apart."""
    home = pathlib.Path(os.environ["GPT2NP_HOME"])
    save_npz(home / "gpt2-124M.npz", small.config.to_dict(), small.params,
             metadata={"provenance": {"source": "openai", "size": "124M", "gpt2np": "test", "files": {}}})
    monkeypatch.setenv("GPT2NP_OFFLINE", "1")
    work = tmp_path / "work"
    shutil.copytree(FIXTURES / "tf_tiny" / "gpt2", work / "124M")
    monkeypatch.chdir(work)
    return work


def test_a_folder_named_124m_does_not_take_over_the_default_model(capsys, folder_named_124m):
    code, out, err = run(capsys, "generate", "Hello", "--max-new-tokens", "2", "--no-stream")
    assert code == 0 and err == "" and out.endswith("\n"), err


def test_an_explicit_name_that_is_also_a_folder_says_which_it_used(capsys, folder_named_124m):
    code, out, err = run(capsys, "generate", "Hello", "--model", "124M", "--max-new-tokens", "2", "--no-stream")
    assert code == 0 and err.count("\n") == 1, err
    assert "124M" in err and "using the size 124M" in err and "./124M" in err
    code, out, err = run(capsys, "info", "124M")
    assert code == 0 and out.splitlines()[0].endswith(f"cached 124M ({os.environ['GPT2NP_HOME']}/gpt2-124M.npz)")
    assert "using the size 124M" in err and err.count("\n") == 1
    # written as a path, it is the folder (whose 20 tokens this command refuses), and no note
    code, out, err = run(capsys, "generate", "Hello", "--model", "./124M", "--max-new-tokens", "2")
    assert code == 1 and err.count("\n") == 1 and "knows 20 tokens" in err, err


# ---- <|endoftext|> ---------------------------------------------------------------------------------

class Recorder:
    """A model that records the token ids of every call."""

    def __init__(self, model):
        self.model, self.calls = model, []
        self.config, self.new_cache = model.config, model.new_cache

    def __call__(self, ids, **kw):
        self.calls.append(np.asarray(ids).ravel().tolist())
        return self.model(ids, **kw)


def _argv(command, text, tmp_path):
    """argv of ``command`` with ``text`` where the command reads its text."""
    path = tmp_path / "text.txt"
    path.write_text(text, encoding="utf-8")
    return {
        "tokenize": ["tokenize", "--ids", text],
        "generate": ["generate", text, "--max-new-tokens", "1"],
        "summarize": ["summarize", str(path), "--max-new-tokens", "1"],
        "translate": ["translate", text, "--max-new-tokens", "1"],
        "answer": ["answer", "Why?", "--document", str(path), "--max-new-tokens", "1"],
        "score": ["score", str(path)],
    }[command]


@pytest.mark.parametrize("command", TEXT_COMMANDS)
@pytest.mark.parametrize("as_text", [False, True])
def test_endoftext_is_the_special_token_everywhere_unless_special_as_text(capsys, monkeypatch, small, tmp_path,
                                                                          command, as_text):
    model = Recorder(small)
    monkeypatch.setattr("gpt2np.cli.load_model_arg", lambda spec=None, base_url=None: model)
    text = "One page.<|endoftext|>Another page"
    code, out, err = run(capsys, *_argv(command, text, tmp_path), *(["--special-as-text"] if as_text else []))
    assert code == 0, err
    tok = Tokenizer.gpt2()
    want = tok.encode_ordinary(text) if as_text else tok.encode(text, allowed_special="all")
    seen = [int(i) for i in out.split()] if command == "tokenize" else model.calls[0]
    assert (EOT in seen) is not as_text
    text_ids = want[1:-1]  # (the tasks add words around the text)
    assert any(seen[i:i + len(text_ids)] == text_ids for i in range(len(seen))), (seen, want)


@pytest.mark.parametrize("command", TEXT_COMMANDS)
def test_special_as_text_is_documented_in_each_help(capsys, command):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert e.value.code == 0 and "--special-as-text" in out and "<|endoftext|>" in out and "50256" in out


def test_the_python_api_keeps_tiktokens_rule():
    with pytest.raises(ValueError, match="special token .<.endoftext.>., which is disallowed"):
        Tokenizer.gpt2().encode("a<|endoftext|>")


# ---- text that is not UTF-8 ------------------------------------------------------------------------

BAD = b"ok \xff here"  # byte 3 is not UTF-8
BAD_ARG = os.fsdecode(BAD)  # what Python makes of such a command-line argument (surrogate escapes)


def _stdin(monkeypatch, data: bytes):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


def _bad_cases(tmp_path):
    """(argv, standard input or None, the words the error must name)."""
    bad, bom, pairs = tmp_path / "bad.txt", tmp_path / "bom.txt", tmp_path / "pairs.tsv"
    if tmp_path.is_dir():
        bad.write_bytes(BAD)
        bom.write_bytes(b"\xef\xbb\xbf" + BAD)  # a BOM is skipped, but counted in the offset
        pairs.write_bytes(b"Yes\tOui\n" + BAD + b"\tx\n")
    pairs_at = len(b"Yes\tOui\n") + 3
    m = ["--model", str(tmp_path / "never-loaded.npz")]
    return [
        (["tokenize", BAD_ARG], None, ["text argument", "at byte 3"]),
        (["tokenize"], BAD, ["standard input", "at byte 3"]),
        (["generate", BAD_ARG, *m], None, ["prompt argument", "at byte 3"]),
        (["generate", *m], BAD, ["standard input", "at byte 3"]),
        (["summarize", str(bad), *m], None, [str(bad), "at byte 3"]),
        (["summarize", str(bom), *m], None, [str(bom), "at byte 6"]),
        (["summarize", "-", *m], BAD, ["standard input", "at byte 3"]),
        (["translate", BAD_ARG, *m], None, ["sentence argument", "at byte 3"]),
        (["translate", "Hi.", "--examples", str(pairs), *m], None, [str(pairs), f"at byte {pairs_at}"]),
        (["answer", "Why?", "--document", str(bad), *m], None, [str(bad), "at byte 3"]),
        (["answer", "Why?", "--examples", str(pairs), *m], None, [str(pairs), f"at byte {pairs_at}"]),
        (["score", str(bad), *m], None, [str(bad), "at byte 3"]),
        (["score", "-", *m], BAD, ["standard input", "at byte 3"]),
        (["info", str(FIXTURES / "tf_tiny" / "gpt2"), "--hparams", str(bad)], None, [str(bad), "at byte 3"]),
    ]


@pytest.mark.parametrize("case", range(len(_bad_cases(pathlib.Path("x")))))
def test_text_that_is_not_utf8_is_refused_alike_everywhere(capsys, monkeypatch, tmp_path, case):
    argv, stdin, words = _bad_cases(tmp_path)[case]
    if stdin is not None:
        _stdin(monkeypatch, stdin)
    code, out, err = run(capsys, *argv)
    assert code == 1 and out == "" and err.count("\n") == 1 and "Traceback" not in err, (argv, err)
    assert err.startswith(f"gpt2np {argv[0]}: error: ") and "not UTF-8 text" in err, (argv, err)
    assert all(w in err for w in words), (argv, err)


def test_utf8_from_a_pipe_and_a_bom_are_read_as_text(capsys, monkeypatch, tmp_path):
    _stdin(monkeypatch, "\ufeffcafé".encode("utf-8"))
    code, out, _ = run(capsys, "tokenize", "--ids")
    assert code == 0 and out.split() == [str(i) for i in Tokenizer.gpt2().encode("café")]


# ---- notebook 08 -----------------------------------------------------------------------------------

def test_notebook_08_runs_from_any_working_folder(tmp_path):
    """Its code cells, as one script, run from a folder outside the repository."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import build_notebooks
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    nb = build_notebooks.build("08_checkpoints_and_applications")
    cells = [c.source for c in nb.cells if c.cell_type == "code"]
    script = "\n\n".join("\n".join(ln for ln in src.splitlines() if not ln.lstrip().startswith("%"))
                         for src in cells)
    (tmp_path / "nb08.py").write_text(script, encoding="utf-8")
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "nb08.py"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
