"""Make the generation reference fixtures (dev tool: needs torch and transformers).

    /work/venvs/dev/bin/python scripts/make_sampling_fixture.py

Writes, under tests/fixtures/:

- sampling_processors.npz + sampling_processors.json
  transformers' RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper
  and TopPLogitsWarper (min_tokens_to_keep=1), chained in generate()'s order and followed by
  a softmax, applied to fixed random logits (rows with ties, a uniform row, a row with
  -inf entries) for a grid of settings; also greedy (argmax of the penalised logits).
- sampling_full_vocab.npz + sampling_full_vocab.json
  the same processors on four rows of 50257 random logits (GPT-2's vocabulary size), chosen
  so that a float32 running sum of the sorted probabilities would move some top-p cut;
  stored as the kept-token masks (np.packbits) of each setting.
- sampling_tiny_model.npz + sampling_tiny_model.json
  a tiny random GPT2LMHeadModel (float64) mapped onto gpt2np's params tree (docs/formats.md
  §5: no transposes), transformers' greedy generate() on a few prompts (each prompt
  alone, no padding), and the sliding-window perplexity of a random token sequence as the
  transformers perplexity guide's loop computes it, and the true per-token mean of the same
  window losses.
"""

from __future__ import annotations

import itertools
import json
import pathlib
import platform
import sys

import numpy as np
import torch
import transformers
transformers.logging.set_verbosity_error()
from transformers.generation.logits_process import (  # noqa: E402
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures"

TEMPERATURES = [0.0, 0.7, 1.0, 1.5]
TOP_KS = [None, 1, 3, 10, 32, 100]
TOP_PS = [None, 0.1, 0.5, 0.9, 0.95, 1.0]
PENALTIES = [None, 0.8, 1.3]


def fixed_logits(V: int = 32) -> tuple[np.ndarray, list[list[int]]]:
    """Rows: random, heavy ties (values on a 0.5 grid), uniform (all tied), exact-quarter
    probabilities (4 equal logits far above the rest: top-p edge values), some -inf."""
    rng = np.random.default_rng(1234)
    rows = [
        rng.normal(0, 2, V),
        rng.normal(0, 1, V),
        np.round(rng.normal(0, 1.5, V) * 2) / 2,
        np.zeros(V),
        np.concatenate([np.full(4, 0.0), np.full(V - 4, -200.0)]),
        np.where(rng.random(V) < 0.3, -np.inf, rng.normal(0, 3, V)),
    ]
    rows[4] = rng.permutation(rows[4])
    logits = np.stack(rows).astype(np.float32)
    previous = [
        [0, 1, 1, 5, 5, 5, 31],
        [],
        [2, 3, 2, 3, 7],
        [4],
        [int(i) for i in np.flatnonzero(rows[4] == 0)[:2]] + [9, 9],
        [int(i) for i in np.flatnonzero(np.isfinite(rows[5]))[:6]] * 2,
    ]
    return logits, previous


def reference_probs(logits, previous, temperature, top_k, top_p, penalty) -> np.ndarray:
    scores = torch.from_numpy(logits.copy())  # float32, [B, V]
    if penalty is not None:
        proc = RepetitionPenaltyLogitsProcessor(penalty=penalty)
        rows = []
        for b, ids in enumerate(previous):  # rows of different length: one at a time
            row = scores[b : b + 1]
            if ids:
                row = proc(torch.tensor([ids], dtype=torch.long), row)
            rows.append(row)
        scores = torch.cat(rows)
    if temperature == 0.0:
        probs = torch.zeros_like(scores)
        probs[torch.arange(len(scores)), scores.argmax(-1)] = 1.0
        return probs.numpy()
    dummy = torch.zeros((len(scores), 1), dtype=torch.long)
    if temperature != 1.0:
        scores = TemperatureLogitsWarper(temperature)(dummy, scores)
    if top_k is not None:
        scores = TopKLogitsWarper(top_k=top_k)(dummy, scores)
    if top_p is not None and top_p < 1.0:  # generate() adds no top-p warper for top_p = 1
        scores = TopPLogitsWarper(top_p=top_p)(dummy, scores)
    return torch.softmax(scores, dim=-1).numpy()


def make_processors_fixture() -> None:
    logits, previous = fixed_logits()
    grid = list(itertools.product(TEMPERATURES, TOP_KS, TOP_PS, PENALTIES))
    grid = [g for g in grid if g[0] != 0.0 or (g[1] is None and g[2] is None)]  # greedy ignores k, p
    probs = np.stack([reference_probs(logits, previous, *g) for g in grid]).astype(np.float32)
    flat_prev = np.array([i for row in previous for i in row], dtype=np.int64)
    prev_lengths = np.array([len(row) for row in previous], dtype=np.int64)
    np.savez_compressed(
        OUT / "sampling_processors.npz",
        logits=logits,
        probs=probs,
        previous_ids=flat_prev,
        previous_lengths=prev_lengths,
    )
    meta = {
        "made_by": "scripts/make_sampling_fixture.py",
        "versions": versions(),
        "settings": [
            {"temperature": t, "top_k": k, "top_p": p, "repetition_penalty": r} for t, k, p, r in grid
        ],
        "arrays": {
            "logits": "[B, V] float32 input logits",
            "probs": "[len(settings), B, V] float32: softmax of the processed logits (one-hot for temperature 0)",
            "previous_ids": "row b's previous ids are previous_ids[sum(previous_lengths[:b]):][:previous_lengths[b]]",
        },
        "order": "RepetitionPenalty, Temperature (skipped if 1), TopK, TopP (skipped if 1), softmax",
    }
    (OUT / "sampling_processors.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"sampling_processors: {len(grid)} settings x {logits.shape}")


FULL_SETTINGS = [
    {"temperature": t, "top_k": k, "top_p": p, "repetition_penalty": r}
    for t in (0.8, 1.0) for p in (0.5, 0.9, 0.95, 0.99) for k, r in ((None, None), (50, 1.3))
]


def _float32_cut_moves(z: np.ndarray, temperature: float, top_p: float) -> bool:
    """Whether a float32 running sum puts the top-p cut elsewhere than a float64 one."""
    x = np.sort(z / np.float32(temperature))
    p = np.exp(x - x.max())
    p = p / p.sum()
    naive = np.cumsum(p) <= np.float32(1 - top_p)
    precise = np.cumsum(p, dtype=np.float64).astype(np.float32) <= np.float32(1 - top_p)
    return bool(np.any(naive[:-1] != precise[:-1]))


def make_full_vocab_fixture() -> None:
    """Rows chosen (from many random ones) so that the precision of the cumulative sum matters."""
    rng = np.random.default_rng(99)
    V = 50257
    rows = []
    while len(rows) < 4:
        z = (rng.standard_normal(V) * rng.uniform(1.5, 4.0)).astype(np.float32)
        if any(_float32_cut_moves(z, s["temperature"], s["top_p"]) for s in FULL_SETTINGS):
            rows.append(z)
    logits = np.stack(rows)
    previous = [rng.integers(0, V, 300).tolist(), np.argsort(logits[1])[-20:].tolist() * 3, [], [5, 5, 7]]
    masks = []
    for setting in FULL_SETTINGS:
        probs = reference_probs(logits, previous, setting["temperature"], setting["top_k"], setting["top_p"],
                                setting["repetition_penalty"])
        masks.append(np.packbits(probs > 0, axis=-1))
    np.savez_compressed(
        OUT / "sampling_full_vocab.npz",
        logits=logits,
        kept=np.stack(masks),
        **{f"previous_{b}": np.array(ids, dtype=np.int64) for b, ids in enumerate(previous)},
    )
    meta = {
        "made_by": "scripts/make_sampling_fixture.py",
        "versions": versions(),
        "settings": FULL_SETTINGS,
        "arrays": {
            "logits": "[4, 50257] float32, rows where a float32 running sum would move some top-p cut",
            "kept": "[len(settings), 4, 6283] uint8: np.packbits(probs > 0, axis=-1) of transformers' result",
            "previous_b": "row b's previous ids (for the repetition penalty)",
        },
    }
    (OUT / "sampling_full_vocab.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"sampling_full_vocab: {len(FULL_SETTINGS)} settings x {logits.shape}")


def params_tree_arrays(model) -> dict[str, np.ndarray]:
    """The state dict under gpt2np's tree names, flattened with '/' (blocks/<i>/...)."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    out = {"wte": sd["transformer.wte.weight"], "wpe": sd["transformer.wpe.weight"]}
    for i in range(model.config.n_layer):
        h = f"transformer.h.{i}."
        for ours, theirs in [
            ("ln_1/g", "ln_1.weight"), ("ln_1/b", "ln_1.bias"),
            ("attn/c_attn/w", "attn.c_attn.weight"), ("attn/c_attn/b", "attn.c_attn.bias"),
            ("attn/c_proj/w", "attn.c_proj.weight"), ("attn/c_proj/b", "attn.c_proj.bias"),
            ("ln_2/g", "ln_2.weight"), ("ln_2/b", "ln_2.bias"),
            ("mlp/c_fc/w", "mlp.c_fc.weight"), ("mlp/c_fc/b", "mlp.c_fc.bias"),
            ("mlp/c_proj/w", "mlp.c_proj.weight"), ("mlp/c_proj/b", "mlp.c_proj.bias"),
        ]:
            out[f"blocks/{i}/{ours}"] = sd[h + theirs]
    out["ln_f/g"] = sd["transformer.ln_f.weight"]
    out["ln_f/b"] = sd["transformer.ln_f.bias"]
    return out


def guide_perplexity(model, ids: torch.Tensor, max_length: int, stride: int) -> tuple[float, float, int]:
    """The loop of transformers' perplexity guide, as published (with its weighting), and
    beside it the true per-token mean of the same window losses (each window's loss is the
    mean over its min(trg_len, window - 1) scored tokens) and that token count."""
    seq_len = ids.size(1)
    nll_sum, n_tokens, prev_end_loc = 0.0, 0, 0
    true_sum, true_count = 0.0, 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc
        input_ids = ids[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            loss = model(input_ids, labels=target_ids).loss
        num_valid_tokens = (target_ids != -100).sum().item()
        num_loss_tokens = num_valid_tokens - target_ids.size(0)
        nll_sum += loss.item() * num_loss_tokens
        n_tokens += num_loss_tokens
        scored = min(trg_len, input_ids.size(1) - 1)
        true_sum += loss.item() * scored
        true_count += scored
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    return nll_sum / n_tokens, true_sum / true_count, true_count


def make_tiny_model_fixture() -> None:
    torch.manual_seed(5)
    hp = dict(n_vocab=96, n_ctx=48, n_embd=32, n_head=4, n_layer=2)
    config = transformers.GPT2Config(
        vocab_size=hp["n_vocab"], n_positions=hp["n_ctx"], n_embd=hp["n_embd"], n_head=hp["n_head"],
        n_layer=hp["n_layer"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=hp["n_vocab"] - 1, eos_token_id=hp["n_vocab"] - 1,
    )
    model = transformers.GPT2LMHeadModel(config).double().eval()
    with torch.no_grad():
        # Larger weights than the default init give peaked logits (clear argmax margins), and
        # much larger position embeddings keep greedy decoding from repeating one token (with
        # tied embeddings a random model tends to predict its last input again).
        for name, p in model.named_parameters():
            if name.endswith("wpe.weight"):
                p.mul_(30.0)
            elif p.dim() == 2:
                p.mul_(4.0)
    rng = np.random.default_rng(7)
    prompts = [rng.integers(0, hp["n_vocab"] - 1, n).tolist() for n in (1, 3, 7, 12)]
    max_new = 20
    outputs = []
    for prompt in prompts:
        with torch.no_grad():
            out = model.generate(
                torch.tensor([prompt]), max_new_tokens=max_new, do_sample=False,
                eos_token_id=None, pad_token_id=0, attention_mask=torch.ones((1, len(prompt)), dtype=torch.long),
            )
        outputs.append(out[0, len(prompt):].tolist())
    text = torch.tensor([rng.integers(0, hp["n_vocab"], 100).tolist()])
    ppl_cases = []
    for max_length, stride in [(48, 16), (48, 48), (32, 7), (20, 20), (48, 1)]:
        guide, true, count = guide_perplexity(model, text, max_length, stride)
        ppl_cases.append({
            "max_length": max_length, "stride": stride, "guide_nll": guide, "true_nll": true, "n_scored": count,
        })
    arrays = {f"params/{k}": v for k, v in params_tree_arrays(model).items()}
    arrays["text"] = text[0].numpy()
    for b, (prompt, out) in enumerate(zip(prompts, outputs)):
        arrays[f"prompt_{b}"] = np.array(prompt, dtype=np.int64)
        arrays[f"greedy_{b}"] = np.array(out, dtype=np.int64)
    np.savez_compressed(OUT / "sampling_tiny_model.npz", **arrays)
    meta = {
        "made_by": "scripts/make_sampling_fixture.py",
        "versions": versions(),
        "hparams": hp,
        "dtype": "float64 (torch .double())",
        "init": "torch.manual_seed(5), GPT2LMHeadModel default init, then wpe times 30 and every other 2-D weight times 4",
        "greedy": {"n_prompts": len(prompts), "max_new_tokens": max_new, "eos_token_id": None,
                   "call": "model.generate(prompt[None], do_sample=False), each prompt alone"},
        "perplexity": {"text": "100 random ids (array 'text')", "cases": ppl_cases,
                       "guide_nll": "the guide's nll_sum / n_tokens (its weighting: loss * (trg_len - 1))",
                       "true_nll": "sum(window loss * scored tokens) / n_scored, scored = min(trg_len, window - 1)"},
    }
    (OUT / "sampling_tiny_model.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"sampling_tiny_model: greedy {[len(o) for o in outputs]}, ppl cases {ppl_cases}")


def versions() -> dict:
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    make_processors_fixture()
    make_full_vocab_fixture()
    make_tiny_model_fixture()
    sys.exit(0)
