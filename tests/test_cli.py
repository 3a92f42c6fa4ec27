"""The ``gpt2np`` command as a whole: every argument error of every subcommand is one line."""

import os
import pathlib
import subprocess
import sys

import pytest

import gpt2np
from gpt2np import GPT2, Config
from gpt2np.cli import build_parser, load_model_arg, main
from gpt2np.formats import save_npz

from helpers import SIZE_NAMES

# each subcommand with arguments that parse (nothing runs: the stray option stops it first)
VALID = {"tokenize": ["hi"], "download": ["124M"], "convert": ["src", "-o", "out.npz"], "info": ["124M"],
         "generate": ["hi"], "summarize": ["a.txt"], "translate": ["hi"], "answer": ["hi"], "score": ["a.txt"],
         "train": ["a.txt", "--out", "m.npz"]}
SUBCOMMANDS = list(VALID)


def test_every_subcommand_is_listed():
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    assert sorted(sub.choices) == sorted(SUBCOMMANDS)


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_unknown_option_is_one_line_naming_the_subcommand(capsys, command):
    with pytest.raises(SystemExit) as e:
        main([command, *VALID[command], "--no-such-option"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.count("\n") == 1 and "usage:" not in err, err
    assert err.startswith(f"gpt2np {command}: error: ") and "--no-such-option" in err


@pytest.mark.parametrize("argv, words", [
    ([], "required: COMMAND"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["download"], "required: SIZE"),
    (["download", "124M", "--source", "ftp"], "invalid choice: 'ftp'"),
    (["convert", "folder"], "required: -o/--output"),
    (["info"], "required: MODEL"),
    (["score"], "required: file"),
])
def test_missing_or_wrong_arguments_are_one_line(capsys, argv, words):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.count("\n") == 1 and "usage:" not in err and words in err, err


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out == f"gpt2np {gpt2np.__version__}\n"


@pytest.mark.parametrize("argv", [["tokenize"], ["tokenize", "--decode"], ["generate"], ["translate"], ["answer"],
                                  ["summarize"], ["score", "-"]])
def test_no_text_at_a_terminal_is_an_error_not_a_wait(capsys, monkeypatch, argv):
    class Terminal:
        def isatty(self):
            return True

        def read(self):
            raise AssertionError("read a terminal")

    monkeypatch.setattr(sys, "stdin", Terminal())
    code = main([*argv, "--model", "nothing.npz"] if argv[0] != "tokenize" else argv)
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "pipe it on standard input" in err, err


def test_file_errors_name_the_file_once(capsys, tmp_path):
    missing = tmp_path / "missing.json"
    code = main(["convert", str(tmp_path), "-o", str(tmp_path / "m.npz"), "--hparams", str(missing)])
    err = capsys.readouterr().err
    assert code == 1 and err == f"gpt2np convert: error: hparams file {missing}: no such file\n"
    (tmp_path / "bad.json").write_text("{not json")
    code = main(["info", str(tmp_path), "--hparams", str(tmp_path / "bad.json")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "bad.json: not a JSON hparams file" in err


def test_a_model_with_a_smaller_vocabulary_is_refused_by_name(capsys):
    import pathlib

    folder = pathlib.Path(__file__).parent / "fixtures" / "tf_tiny" / "gpt2"  # n_vocab 20
    code = main(["generate", "Hello", "--model", str(folder)])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "knows 20 tokens" in err and "50257" in err, err


def test_unsupported_mirror_scheme(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("GPT2NP_HOME", str(tmp_path))
    code = main(["download", "124M", "--base-url", "ftp://example.org/gpt-2", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "unsupported URL scheme 'ftp'" in err, err
    assert not list(tmp_path.rglob("*.part"))


def test_python_dash_m_help_and_error():
    ok = subprocess.run([sys.executable, "-m", "gpt2np", "--help"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and all(c in ok.stdout for c in SUBCOMMANDS)
    bad = subprocess.run([sys.executable, "-m", "gpt2np", "generate", "--top-k", "x"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


@pytest.fixture(scope="module")
def small_gpt2_npz(tmp_path_factory):
    """A 1-layer model with GPT-2's vocabulary as an .npz: stands in for a size in the cache."""
    path = tmp_path_factory.mktemp("small") / "m.npz"
    GPT2.random(Config(n_vocab=50257, n_ctx=16, n_embd=8, n_head=2, n_layer=1), seed=0).save(path)
    return path


@pytest.mark.parametrize("name, size", SIZE_NAMES.items())
def test_every_size_name_and_alias_works_in_any_letter_case(name, size, small_gpt2_npz, capsys, monkeypatch):
    home = pathlib.Path(os.environ["GPT2NP_HOME"])  # a fresh folder for each test (conftest.py)
    model = GPT2.load(small_gpt2_npz)  # saved as `gpt2np download` would: with its provenance
    save_npz(home / f"gpt2-{size}.npz", model.config.to_dict(), model.params,
             metadata={"provenance": {"source": "openai", "size": size, "gpt2np": "test", "files": {}}})
    monkeypatch.setenv("GPT2NP_OFFLINE", "1")  # the name of another size would look for it and fail
    spelling = name.swapcase()  # 124m, GPT2-MEDIUM, 1.5b, XL, ...
    code = main(["generate", "Hello", "--model", spelling, "--max-new-tokens", "2", "--no-stream"])
    out, err = capsys.readouterr()
    assert code == 0 and err == "" and out.endswith("\n"), err
    code = main(["info", f" {spelling} "])
    out, err = capsys.readouterr()
    assert code == 0 and out.splitlines()[0].endswith(f": cached {size} ({home / f'gpt2-{size}.npz'})"), err
    code = main(["download", spelling.lower(), "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0 and out == f"{home / f'gpt2-{size}.npz'}\n", err
    assert load_model_arg(spelling.upper()).config.n_vocab == 50257


def test_an_unknown_model_names_the_sizes_and_aliases(capsys):
    code = main(["generate", "Hello", "--model", "gpt3"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert "gpt3: no such file or folder, and not a known size (124M, 355M, 774M, 1558M) or alias (117M, gpt2," in err
