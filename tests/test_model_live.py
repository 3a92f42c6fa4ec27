"""Optional: a full-size (124M) random GPT-2 checked live against transformers.

Skipped when torch or transformers is not installed (as in CI, where the fixture tests in
test_model_reference.py check the same computation on a tiny model).  Takes ~10 s.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from gpt2np import GPT2, Config  # noqa: E402

N_NEW = 40


def params_from_transformers(model) -> dict:
    """transformers' state dict as our params tree (Conv1D weights are [in, out]: no transpose)."""
    sd = {k: v.detach().numpy() for k, v in model.transformer.state_dict().items()}

    def pair(prefix, a="weight", b="bias"):
        return sd[f"{prefix}.{a}"], sd[f"{prefix}.{b}"]

    blocks = []
    for i in range(model.config.n_layer):
        h = f"h.{i}"
        (g1, b1), (g2, b2) = pair(f"{h}.ln_1"), pair(f"{h}.ln_2")
        blocks.append({
            "ln_1": {"g": g1, "b": b1},
            "attn": {name: dict(zip("wb", pair(f"{h}.attn.{name}"))) for name in ("c_attn", "c_proj")},
            "ln_2": {"g": g2, "b": b2},
            "mlp": {name: dict(zip("wb", pair(f"{h}.mlp.{name}"))) for name in ("c_fc", "c_proj")},
        })
    gf, bf = pair("ln_f")
    return {"wte": sd["wte.weight"], "wpe": sd["wpe.weight"], "blocks": blocks, "ln_f": {"g": gf, "b": bf}}


def test_random_124m_matches_transformers_logits_and_40_greedy_tokens():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(attn_implementation="eager", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # GPT-2's init leaves biases at 0 and norms at 1: make them matter too
        for name, p in hf.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.02)
            elif ".ln_" in name:
                p.normal_(1.0, 0.1)
            elif name.endswith("wpe.weight"):  # larger: greedy output then varies (34 distinct of 40)
                p.normal_(0.0, 0.2)
    model = GPT2(Config.preset("124M"), params_from_transformers(hf))
    assert model.num_params() == 124_439_808

    prompt = np.array([36235, 39141, 18765, 1143, 326, 9061, 561, 530, 1110, 1716])  # "Alan Turing theorized ..."
    with torch.no_grad():
        theirs = hf(torch.tensor(prompt[None])).logits[0].numpy()
        generated = hf.generate(torch.tensor(prompt[None]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                max_new_tokens=N_NEW, do_sample=False, eos_token_id=None, pad_token_id=50256)
    ours = model(prompt)
    assert ours.dtype == np.float32
    scale = np.abs(theirs).max()
    worst = np.abs(ours - theirs).max()
    assert worst <= 1e-5 * scale, f"124M logits: largest difference {worst:.3e}, largest |logit| {scale:.3f}"

    expected = generated[0, len(prompt):].numpy()
    out = np.asarray(model.generate(prompt, max_new_tokens=N_NEW, stop_ids=()))  # no stop at <|endoftext|>
    np.testing.assert_array_equal(out, expected)
