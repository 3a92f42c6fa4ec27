"""`gpt2np download / convert / info` and `load_model_arg`: results, and one-line errors."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from gpt2np import GPT2
from gpt2np.cli import load_model_arg, main
from gpt2np.formats import flatten, load_npz

from helpers import FIXTURES as FIX, TINY_HP, Server, check_npz, tiny, tiny_files  # noqa: F401  (tiny: a fixture)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_convert_tf_and_info(tmp_path, capsys):
    code, out, err = run(capsys, "convert", str(FIX / "tf_tiny" / "gpt2"), "-o", str(tmp_path / "m.npz"))
    assert code == 0 and "1,984 parameters" in out
    check_npz(tmp_path / "m.npz")
    code, out, _ = run(capsys, "info", str(tmp_path / "m.npz"))
    assert code == 0
    assert "n_vocab=20, n_ctx=8, n_embd=8, n_head=2, n_layer=2" in out
    assert "parameters: 1,984" in out
    assert re.search(r"\n  blocks\.1\.mlp\.c_proj\.w +\[32, 8\] +float32\n", out)
    assert out.rstrip().splitlines()[-1].split() == ["ln_f.b", "[8]", "float32"]
    assert len([l for l in out.splitlines() if l.startswith("  ")]) == 28


def test_convert_safetensors_with_and_without_hparams(tmp_path, capsys):
    code, _, _ = run(capsys, "convert", str(FIX / "st_tiny" / "gpt2.safetensors"), "-o", str(tmp_path / "a.npz"))
    assert code == 0 and load_npz(tmp_path / "a.npz")[0]["n_head"] == 1
    src = str(FIX / "st_tiny" / "gpt2_prefixed.safetensors")
    code, _, err = run(capsys, "convert", src, "-o", str(tmp_path / "b.npz"))
    assert code == 1 and "n_head cannot be inferred" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "hp.json").write_text(json.dumps(TINY_HP))
    code, _, _ = run(capsys, "convert", src, "-o", str(tmp_path / "b.npz"), "--hparams", str(tmp_path / "hp.json"))
    assert code == 0 and load_npz(tmp_path / "b.npz")[0] == TINY_HP


def test_convert_corrupt_checkpoint_one_line(tmp_path, capsys):
    folder = tmp_path / "ck"
    shutil.copytree(FIX / "tf_tiny" / "gpt2", folder)
    data = folder / "model.ckpt.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[-3] ^= 1
    data.write_bytes(bytes(raw))
    code, _, err = run(capsys, "convert", str(folder), "-o", str(tmp_path / "m.npz"))
    assert code == 1 and "model/wte fails its CRC32C" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m.npz").exists()
    code, _, _ = run(capsys, "convert", str(folder), "-o", str(tmp_path / "m.npz"), "--no-verify")
    assert code == 0


@pytest.mark.parametrize("argv, message", [
    (["convert", "nowhere", "-o", "x.npz"], "nowhere: no such file or folder"),
    (["info", "nowhere.safetensors"], "file not found"),
    (["info", "7B"], "not a known size (124M, 355M, 774M, 1558M)"),
    (["download", "7B"], "unknown model size '7B'; known sizes: 124M, 355M, 774M, 1558M"),
])
def test_errors_are_one_line(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_download_and_info_by_size(tiny, tmp_path, capsys, monkeypatch):  # noqa: F811
    server = Server(tiny_files())
    try:
        monkeypatch.setenv("GPT2NP_HOME", str(tmp_path))
        code, out, _ = run(capsys, "download", "tiny", "--base-url", server.url, "--quiet")
        assert code == 0 and out.strip() == str(tmp_path / "gpt2-tiny.npz")
        check_npz(tmp_path / "gpt2-tiny.npz")
        code, out, _ = run(capsys, "info", "tiny")
        assert code == 0 and "cached tiny" in out
        model = load_model_arg("tiny")
        assert model.config.n_layer == 2
        del server.files["/tiny/hparams.json"]
        code, _, err = run(capsys, "download", "tiny", "--base-url", server.url, "--cache-dir", str(tmp_path / "o"),
                           "--quiet")
        assert code == 1 and "HTTP 404" in err and len(err.strip().splitlines()) == 1
    finally:
        server.close()


def test_load_model_arg_kinds(tmp_path):
    a = load_model_arg(FIX / "tf_tiny" / "gpt2")
    b = load_model_arg(str(FIX / "tf_tiny" / "gpt2" / "model.ckpt.index"))
    a.save(tmp_path / "m.npz")
    c = load_model_arg(str(tmp_path / "m.npz"))
    d = load_model_arg(str(FIX / "st_tiny" / "gpt2.safetensors"))
    assert isinstance(a, GPT2) and a.config == b.config == c.config
    assert d.config.n_embd == 64
    for k, v in flatten(a.params).items():
        np.testing.assert_array_equal(v, flatten(c.params)[k])
    with pytest.raises(Exception, match="not a known size"):
        load_model_arg("no-such-model")
