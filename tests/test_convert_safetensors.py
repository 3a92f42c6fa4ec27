"""The way out to PyTorch: `model.save_safetensors` and `gpt2np convert SRC -o OUT.safetensors` write
transformers' names and config.json; transformers' GPT2LMHeadModel loads them with the same logits."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from gpt2np import GPT2, Config
from gpt2np.cli import main
from gpt2np.formats import flatten, load_npz

CFG = Config(n_vocab=300, n_ctx=16, n_embd=16, n_head=2, n_layer=2)  # n_head is not n_embd // 64


def every_weight_random(seed=0):
    """A model whose every tensor (biases and layer norms too) is random, so that a swapped name shows."""
    model = GPT2.random(CFG, seed=seed)
    rng = np.random.default_rng(seed + 1)
    for a in flatten(model.params).values():
        a[...] = rng.standard_normal(a.shape).astype(np.float32) * 0.1 + (1.0 if a.ndim == 1 else 0.0)
    return model


def header(path):
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n])


def expected_names(n_layer):
    names = ["transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight", "transformer.ln_f.bias"]
    for i in range(n_layer):
        for mod in ("ln_1", "ln_2", "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            names += [f"transformer.h.{i}.{mod}.weight", f"transformer.h.{i}.{mod}.bias"]
    return sorted(names)


def test_save_safetensors_writes_transformers_names_and_config(tmp_path):
    model = every_weight_random()
    path = model.save_safetensors(tmp_path / "hf")
    assert path == tmp_path / "hf" / "model.safetensors"
    h = header(path)
    assert h.pop("__metadata__") == {"format": "pt"}
    assert sorted(h) == expected_names(2)  # no lm_head: tied to wte
    assert h["transformer.h.1.attn.c_attn.weight"]["shape"] == [16, 48]  # Conv1D [n_in, n_out], not transposed
    assert h["transformer.h.0.mlp.c_proj.weight"]["shape"] == [64, 16]
    assert all(e["dtype"] == "F32" for e in h.values())
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert {k: config[k] for k in ("model_type", "architectures", "vocab_size", "n_positions", "n_embd", "n_layer",
                                   "n_head", "n_inner", "activation_function", "layer_norm_epsilon",
                                   "tie_word_embeddings")} == {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 300, "n_positions": 16,
        "n_embd": 16, "n_layer": 2, "n_head": 2, "n_inner": None, "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5, "tie_word_embeddings": True}
    assert config["bos_token_id"] is None  # 300 tokens: there is no <|endoftext|> (50256)
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == ["config.json", "model.safetensors"]


def test_save_safetensors_round_trip(tmp_path):
    model = every_weight_random()
    model.save_safetensors(tmp_path / "w.safetensors")
    again = GPT2.from_safetensors(tmp_path / "w.safetensors", config=CFG)
    a, b = flatten(model.params), flatten(again.params)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert (tmp_path / "config.json").is_file()


def test_convert_npz_to_safetensors_and_back(tmp_path, capsys):
    model = every_weight_random()
    model.save(tmp_path / "m.npz")
    assert main(["convert", str(tmp_path / "m.npz"), "-o", str(tmp_path / "out" / "model.safetensors")]) == 0
    out = capsys.readouterr().out
    assert f"{model.num_params():,} parameters" in out and "config.json" in out
    (tmp_path / "hp.json").write_text(json.dumps(CFG.to_dict()))
    assert main(["convert", str(tmp_path / "out" / "model.safetensors"), "-o", str(tmp_path / "back.npz"),
                 "--hparams", str(tmp_path / "hp.json")]) == 0
    hparams, params = load_npz(tmp_path / "back.npz")
    assert hparams == CFG.to_dict()
    a, b = flatten(model.params), flatten(params)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_convert_refuses_other_suffixes_in_one_line(tmp_path, capsys):
    every_weight_random().save(tmp_path / "m.npz")
    code = main(["convert", str(tmp_path / "m.npz"), "-o", str(tmp_path / "m.bin")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip() == f"gpt2np convert: error: {tmp_path / 'm.bin'}: the output must end in .npz or .safetensors"
    assert not (tmp_path / "m.bin").exists()


def test_transformers_loads_it_with_the_same_logits(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = every_weight_random()
    model.save(tmp_path / "m.npz")
    assert main(["convert", str(tmp_path / "m.npz"), "-o", str(tmp_path / "hf" / "model.safetensors")]) == 0
    hf = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "hf")).eval()
    assert hf.config.n_head == 2 and hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()
    ids = np.random.default_rng(2).integers(0, CFG.n_vocab, (2, 12))
    with torch.no_grad():
        ref = hf(torch.from_numpy(ids)).logits.numpy()
    ours = model(ids)
    assert np.abs(ours - ref).max() <= 1e-4 * np.abs(ref).max(), np.abs(ours - ref).max()
