"""Optional live checks against transformers (skipped without torch + transformers).

The committed fixtures (tests/test_sampling.py, tests/test_generate.py) check the same
things without these tools; here fresh cases are drawn each run: transformers' own
left-padded batch generation, and the processors on new full-vocabulary logits.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from gpt2np.generation import generate_ids  # noqa: E402
from gpt2np.sampling import next_token_probs  # noqa: E402

from helpers import model_from_transformers as to_gpt2np  # noqa: E402

SEED = int(np.random.SeedSequence().entropy % (1 << 31))  # fresh each run, reported on failure


def test_ragged_greedy_batch_matches_transformers_left_padded_generate():
    torch.manual_seed(SEED)
    config = transformers.GPT2Config(vocab_size=80, n_positions=40, n_embd=32, n_head=4, n_layer=2,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=79,
                                     eos_token_id=79, pad_token_id=0)
    hf = transformers.GPT2LMHeadModel(config).double().eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            p.mul_(30.0 if name.endswith("wpe.weight") else 4.0 if p.dim() == 2 else 1.0)
    rng = np.random.default_rng(SEED)
    prompts = [rng.integers(1, 79, n).tolist() for n in (2, 6, 4)]
    T = max(map(len, prompts))
    ids = torch.tensor([[0] * (T - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=mask, max_new_tokens=15, do_sample=False, eos_token_id=None,
                          pad_token_id=0)
    want = out[:, T:].tolist()
    assert generate_ids(to_gpt2np(hf), prompts, 15, stop_ids=()) == want, f"seed {SEED}"


def test_processors_on_fresh_full_vocabulary_logits():
    from transformers.generation.logits_process import (
        RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

    rng = np.random.default_rng(SEED)
    for _ in range(5):
        z = (rng.standard_normal((3, 50257)) * rng.uniform(1, 4)).astype(np.float32)
        previous = rng.integers(0, 50257, (3, 30))
        t, k, p, r = float(rng.uniform(0.5, 1.5)), int(rng.integers(1, 2000)), float(rng.uniform(0.3, 0.99)), 1.3
        s = torch.from_numpy(z.copy())
        s = RepetitionPenaltyLogitsProcessor(r)(torch.from_numpy(previous), s)
        s = TopPLogitsWarper(p)(None, TopKLogitsWarper(k)(None, TemperatureLogitsWarper(t)(None, s)))
        want = torch.softmax(s, -1).numpy()
        got = next_token_probs(z, temperature=t, top_k=k, top_p=p, repetition_penalty=r, previous_ids=previous.tolist())
        np.testing.assert_array_equal(got > 0, want > 0, err_msg=f"seed {SEED}: T={t}, k={k}, p={p}")
        np.testing.assert_allclose(got, want, atol=1e-6, err_msg=f"seed {SEED}")
