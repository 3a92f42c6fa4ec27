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

from helpers import params_from_transformers  # noqa: E402

N_NEW = 40


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
    out = np.asarray(model.generate_ids(prompt, max_new_tokens=N_NEW, stop_ids=()))  # no stop at <|endoftext|>
    np.testing.assert_array_equal(out, expected)
