"""Make the forward-pass reference fixture from Hugging Face transformers (dev tool only).

    /work/venvs/dev/bin/python scripts/make_reference.py

Builds a small GPT-2 with ``transformers.GPT2LMHeadModel`` (random weights from a fixed torch
seed, eager attention), runs it in float64 and in float32, and records with forward hooks every
intermediate under gpt2np's trace names, plus logits of a left-padded batch, the loss with
``labels=ids`` and greedy ``generate`` output.  Writes

    tests/fixtures/reference_gpt2_tiny.npz    the weights (params tree), inputs and results
    tests/fixtures/reference_gpt2_tiny.json   hparams, the versions used and this script's name

The weights are rounded to float32 once, so the float32 and float64 runs use exactly the same
numbers.  Every value in the fixture comes out of transformers' own computation: q/k/v as its
attention function receives them, the scores as its softmax receives them, and so on.
"""

from __future__ import annotations

import contextlib
import copy
import json
import pathlib
import platform
import sys

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.models.gpt2 import modeling_gpt2

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "reference_gpt2_tiny"
HPARAMS = {"n_vocab": 97, "n_ctx": 32, "n_embd": 64, "n_head": 4, "n_layer": 3}
SEED = 20260331
N_NEW = 16  # greedy tokens after each prompt


def build_model() -> GPT2LMHeadModel:
    """A tiny GPT-2 in transformers whose every weight matters (no zero biases, no unit norms)."""
    h = HPARAMS
    cfg = GPT2Config(
        vocab_size=h["n_vocab"], n_positions=h["n_ctx"], n_embd=h["n_embd"], n_head=h["n_head"],
        n_layer=h["n_layer"], activation_function="gelu_new", layer_norm_epsilon=1e-5,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True,
        bos_token_id=0, eos_token_id=None, pad_token_id=0, attn_implementation="eager",
    )
    torch.manual_seed(SEED)
    model = GPT2LMHeadModel(cfg).eval()
    assert model.config._attn_implementation == "eager"
    # Scales chosen so that attention is neither uniform nor one-hot, GELU sees its curved part,
    # and large position embeddings make greedy output vary from step to step (a random model
    # with small ones repeats one token forever, which would test the cache's positions poorly).
    std = {"wte": 0.3, "wpe": 1.0, "c_attn": 0.15, "attn.c_proj": 0.1, "c_fc": 0.15, "mlp.c_proj": 0.05}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith((".ln_1.weight", ".ln_2.weight", "ln_f.weight")):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                key = next(k for k in std if f"{k}." in name or name.endswith(f"{k}.weight"))
                p.copy_(std[key] * torch.randn_like(p))
            # round once to float32, so both dtypes below compute with the very same weights
            p.copy_(p.float().to(p.dtype))
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr(), "head not tied"
    return model


def params_tree(model) -> dict[str, np.ndarray]:
    """The state dict under flat params-tree paths (``blocks/3/attn/c_attn/w``); Conv1D weights
    are already ``[in, out]`` = our ``w``: no transpose."""
    sd = {k: v.detach().to(torch.float32).numpy() for k, v in model.transformer.state_dict().items()}
    out = {"wte": sd["wte.weight"], "wpe": sd["wpe.weight"],
           "ln_f/g": sd["ln_f.weight"], "ln_f/b": sd["ln_f.bias"]}
    for i in range(HPARAMS["n_layer"]):
        for ours, theirs in [("ln_1/g", "ln_1.weight"), ("ln_1/b", "ln_1.bias"),
                             ("attn/c_attn/w", "attn.c_attn.weight"), ("attn/c_attn/b", "attn.c_attn.bias"),
                             ("attn/c_proj/w", "attn.c_proj.weight"), ("attn/c_proj/b", "attn.c_proj.bias"),
                             ("ln_2/g", "ln_2.weight"), ("ln_2/b", "ln_2.bias"),
                             ("mlp/c_fc/w", "mlp.c_fc.weight"), ("mlp/c_fc/b", "mlp.c_fc.bias"),
                             ("mlp/c_proj/w", "mlp.c_proj.weight"), ("mlp/c_proj/b", "mlp.c_proj.bias")]:
            out[f"blocks/{i}/{ours}"] = sd[f"h.{i}.{theirs}"]
    return out


@contextlib.contextmanager
def recording(model):
    """Record transformers' intermediates under gpt2np's trace names while the block runs."""
    rec: dict[str, torch.Tensor] = {}
    handles = []
    t = model.transformer
    layer = {"i": None}  # the block currently running, for the attention function's records

    def keep(name):
        def hook(module, args, output):
            out = output[0] if isinstance(output, tuple) else output
            rec[name] = out.detach().clone()
        return hook

    def keep_input(name):
        def hook(module, args):
            rec[name] = args[0].detach().clone()
        return hook

    def entering(i):
        def hook(module, args):
            layer["i"] = i
        return hook

    handles.append(t.drop.register_forward_hook(keep("embed")))
    for i, blk in enumerate(t.h):
        handles += [
            blk.register_forward_pre_hook(entering(i)),
            blk.ln_1.register_forward_hook(keep(f"h{i}.ln_1")),
            blk.attn.c_proj.register_forward_hook(keep(f"h{i}.attn.out")),
            blk.ln_2.register_forward_pre_hook(keep_input(f"h{i}.resid")),
            blk.ln_2.register_forward_hook(keep(f"h{i}.ln_2")),
            blk.mlp.c_fc.register_forward_hook(keep(f"h{i}.mlp.fc")),
            blk.mlp.act.register_forward_hook(keep(f"h{i}.mlp.gelu")),
            blk.mlp.register_forward_hook(keep(f"h{i}.mlp.out")),
            blk.register_forward_hook(keep(f"h{i}.out")),
        ]
    handles.append(t.ln_f.register_forward_hook(keep("ln_f")))

    original_attention = modeling_gpt2.eager_attention_forward
    original_softmax = F.softmax

    def attention_spy(module, query, key, value, attention_mask, *args, **kwargs):
        i = layer["i"]
        rec[f"h{i}.attn.q"], rec[f"h{i}.attn.k"], rec[f"h{i}.attn.v"] = (
            z.detach().clone() for z in (query, key, value))

        def softmax_spy(x, *a, **kw):
            rec[f"h{i}.attn.scores"] = x.detach().clone()  # scaled and masked, as softmax gets it
            y = original_softmax(x, *a, **kw)
            rec[f"h{i}.attn.probs"] = y.detach().clone()
            return y

        F.softmax = softmax_spy
        try:
            return original_attention(module, query, key, value, attention_mask, *args, **kwargs)
        finally:
            F.softmax = original_softmax

    modeling_gpt2.eager_attention_forward = attention_spy
    try:
        yield rec
    finally:
        modeling_gpt2.eager_attention_forward = original_attention
        F.softmax = original_softmax
        for h in handles:
            h.remove()


def trace(model, ids: np.ndarray) -> dict[str, np.ndarray]:
    """transformers' intermediates for one sequence, batch axis dropped (``[H, T, dh]`` per head)."""
    with recording(model) as rec, torch.no_grad():
        logits = model(torch.tensor(ids[None])).logits
    names = ["embed"]
    for i in range(HPARAMS["n_layer"]):
        names += [f"h{i}.{n}" for n in ("ln_1", "attn.q", "attn.k", "attn.v", "attn.scores", "attn.probs",
                                        "attn.out", "resid", "ln_2", "mlp.fc", "mlp.gelu", "mlp.out", "out")]
    names.append("ln_f")
    missing = [n for n in names if n not in rec]
    assert not missing, f"hooks recorded nothing for {missing}"
    out = {n: rec[n][0].numpy() for n in names}
    out["logits"] = logits[0].numpy()
    return out


def main() -> None:
    model64 = build_model().double()
    model32 = copy.deepcopy(model64).float()
    rng = np.random.default_rng(SEED)
    V = HPARAMS["n_vocab"]
    prompt_a = rng.integers(0, V, size=12)
    prompt_b = rng.integers(0, V, size=7)
    # a left-padded batch: real lengths 11 and 6; the padding holds junk ids that must not matter
    lengths = [11, 6]
    T = max(lengths)
    batch = rng.integers(0, V, size=(len(lengths), T))
    mask = np.zeros((len(lengths), T), dtype=np.int64)
    for r, n in enumerate(lengths):
        mask[r, T - n:] = 1
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    singles = [batch[r, T - n:] for r, n in enumerate(lengths)]

    data: dict[str, np.ndarray] = {f"params/{k}": v for k, v in params_tree(model64).items()}
    data.update({
        "hparams": np.array([HPARAMS[k] for k in ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer")]),
        "ids/a": prompt_a, "ids/b": prompt_b,
        "batch/ids": batch, "batch/mask": mask, "batch/positions": positions,
    })
    for tag, model, dt in [("f64", model64, np.float64), ("f32", model32, np.float32)]:
        for name, value in trace(model, prompt_a).items():
            data[f"{tag}/trace/{name}"] = value.astype(dt)
        with torch.no_grad():
            data[f"{tag}/logits/b"] = model(torch.tensor(prompt_b[None])).logits[0].numpy()
            for key, ids in [("a", prompt_a), ("b", prompt_b)]:
                x = torch.tensor(ids[None])
                out = model(x, labels=x)
                # labels=ids: transformers upcasts logits to float32 (not float64) in its loss,
                # so also keep torch's cross-entropy of the logits in the model's own dtype
                data[f"{tag}/loss/{key}"] = np.array(out.loss.item())
                data[f"{tag}/ce/{key}"] = np.array(F.cross_entropy(out.logits[0, :-1], x[0, 1:]).item())
            padded = model(torch.tensor(batch), attention_mask=torch.tensor(mask),
                           position_ids=torch.tensor(positions)).logits.numpy()
            data[f"{tag}/batch/logits"] = padded
            for r, ids in enumerate(singles):  # the same rows alone, to show padding changes nothing
                data[f"{tag}/batch/single{r}"] = model(torch.tensor(ids[None])).logits[0].numpy()
            gen = model.generate(torch.tensor(prompt_a[None]), attention_mask=torch.ones(1, len(prompt_a), dtype=torch.long),
                                 max_new_tokens=N_NEW, do_sample=False, pad_token_id=0)
            data[f"{tag}/greedy/a"] = gen[0, len(prompt_a):].numpy()
            gen = model.generate(torch.tensor(prompt_b[None]), attention_mask=torch.ones(1, len(prompt_b), dtype=torch.long),
                                 max_new_tokens=N_NEW, do_sample=False, pad_token_id=0)
            data[f"{tag}/greedy/b"] = gen[0, len(prompt_b):].numpy()

    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **data)
    tmp.replace(OUT.with_suffix(".npz"))
    meta = {
        "made_by": "scripts/make_reference.py",
        "hparams": HPARAMS,
        "seed": SEED,
        "greedy_new_tokens": N_NEW,
        "versions": {"python": platform.python_version(), "numpy": np.__version__,
                     "torch": torch.__version__, "transformers": transformers.__version__},
        "notes": "weights rounded to float32 once; f64/f32 = runs of the same model in float64/float32; "
                 "attention scores as transformers' softmax received them (masked entries = finfo.min)",
    }
    OUT.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    size = OUT.with_suffix(".npz").stat().st_size
    print(f"wrote {OUT.with_suffix('.npz')} ({size:,} bytes, {len(data)} arrays) and {OUT.with_suffix('.json').name}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
