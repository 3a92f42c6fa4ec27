"""``gpt2np tokenize``: ids and pieces, --decode, one-line errors."""

import io
import subprocess
import sys

import pytest

from gpt2np.cli import main


def run(argv, capsys, stdin=None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_tokenize_prints_ids_and_pieces(capsys):
    code, out, err = run(["tokenize", "Hello world"], capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["id", "piece"]
    assert lines[1].split(None, 1) == ["15496", "'Hello'"]
    assert lines[2].split(None, 1) == ["995", "' world'"]
    assert "2 tokens" in lines[-1]


def test_tokenize_shows_bytes_of_partial_characters(capsys):
    code, out, _ = run(["tokenize", "🤖"], capsys)  # ids checked with tiktoken
    rows = [line.split(None, 1) for line in out.splitlines()[1:-1]]
    assert rows == [["8582", r"b'\xf0\x9f'"], ["97", r"b'\xa4'"], ["244", r"b'\x96'"]]


def test_tokenize_ids_only_and_special(capsys):
    assert run(["tokenize", "--ids", "Hello", "world"], capsys)[1] == "15496 995\n"
    # <|endoftext|> is the special token by default, as in generate and the tasks (issue 15) ...
    assert run(["tokenize", "--ids", "a<|endoftext|>"], capsys)[1] == "64 50256\n"
    assert run(["tokenize", "--ids", "--allow-special", "a<|endoftext|>"], capsys)[1] == "64 50256\n"  # the old opt-in
    # ... and ordinary text with --special-as-text
    assert run(["tokenize", "--ids", "--special-as-text", "a<|endoftext|>"], capsys)[1] == "64 27 91 437 1659 5239 91 29\n"


def test_tokenize_reads_stdin(capsys, monkeypatch):
    code, out, _ = run(["tokenize", "--ids"], capsys, stdin="Hello world", monkeypatch=monkeypatch)
    assert code == 0 and out == "15496 995\n"


def test_decode(capsys):
    assert run(["tokenize", "--decode", "15496", "995"], capsys)[1] == "Hello world\n"
    assert run(["tokenize", "--decode", "15496,995"], capsys)[1] == "Hello world\n"


@pytest.mark.parametrize("ids, words", [
    (["15496", "50257"], ["50257", "50257"]),
    (["-1"], ["-1"]),
    (["hello"], ["'hello'", "integers"]),
])
def test_decode_errors_are_one_line(capsys, ids, words):
    code, out, err = run(["tokenize", "--decode", *ids], capsys)
    assert code != 0 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert all(w in err for w in words)


def test_python_dash_m(tmp_path):
    result = subprocess.run([sys.executable, "-m", "gpt2np", "tokenize", "--decode", "15496", "99999"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "gpt2np tokenize: error: token id 99999 is outside the vocabulary: "
        "ids run from 0 to 50256 (vocabulary size 50257)"
    ]
