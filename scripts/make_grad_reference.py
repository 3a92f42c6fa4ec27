"""Make the gradient reference fixture with transformers' autograd (dev tool only).

    python scripts/make_grad_reference.py

Builds a small GPT-2 with ``transformers.GPT2LMHeadModel`` (eager attention, tied head) whose
every weight is random (biases and layer norms included, not the default initialisation),
rounded once to float32 so that the float64 and float32 runs use the very same numbers.  For
three cases it records the next-token loss and the gradient of every parameter (``loss.backward()``),
in float64 and in float32:

- ``plain``:  ids [2, 12], labels = ids;
- ``labels``: ids [2, 12], other labels, some -100 (not counted);
- ``padded``: a left-padded batch [3, 12] with attention_mask, position_ids = max(cumsum(mask) - 1, 0)
  (the rule of ``gpt2np.GPT2``) and labels -100 at the padding and at each row's first real token
  (which would otherwise be predicted from a padding position).

transformers computes its ``labels=`` loss after casting the logits to float32, also in a float64
model; so the loss that is differentiated here is torch's cross-entropy of the shifted logits in
the model's own dtype (transformers' meaning of labels: position t predicts labels[t + 1], -100
ignored, mean over the counted targets), and transformers' own ``.loss`` is recorded beside it.
Writes

    tests/fixtures/grads_transformers.npz    weights (params tree), inputs, losses, gradients
    tests/fixtures/grads_transformers.json   hparams, the versions used and this script's name
"""

from __future__ import annotations

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

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "grads_transformers"
HPARAMS = {"n_vocab": 61, "n_ctx": 16, "n_embd": 16, "n_head": 4, "n_layer": 2}
SEED = 20260412
IGNORE = -100

# gpt2np's params-tree leaf (below blocks/i/) -> transformers' parameter name (below h.i.)
BLOCK_NAMES = [("ln_1/g", "ln_1.weight"), ("ln_1/b", "ln_1.bias"),
               ("attn/c_attn/w", "attn.c_attn.weight"), ("attn/c_attn/b", "attn.c_attn.bias"),
               ("attn/c_proj/w", "attn.c_proj.weight"), ("attn/c_proj/b", "attn.c_proj.bias"),
               ("ln_2/g", "ln_2.weight"), ("ln_2/b", "ln_2.bias"),
               ("mlp/c_fc/w", "mlp.c_fc.weight"), ("mlp/c_fc/b", "mlp.c_fc.bias"),
               ("mlp/c_proj/w", "mlp.c_proj.weight"), ("mlp/c_proj/b", "mlp.c_proj.bias")]


def build_model() -> GPT2LMHeadModel:
    h = HPARAMS
    cfg = GPT2Config(
        vocab_size=h["n_vocab"], n_positions=h["n_ctx"], n_embd=h["n_embd"], n_head=h["n_head"],
        n_layer=h["n_layer"], activation_function="gelu_new", layer_norm_epsilon=1e-5,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True,
        bos_token_id=0, eos_token_id=None, pad_token_id=0, attn_implementation="eager",
    )
    torch.manual_seed(SEED)
    model = GPT2LMHeadModel(cfg).eval()  # eval: no dropout (all rates are 0 anyway)
    assert model.config._attn_implementation == "eager"
    # Scales chosen so that attention is neither uniform nor one-hot and GELU sees its curved part.
    std = {"wte": 0.5, "wpe": 0.5, "c_attn": 0.3, "attn.c_proj": 0.2, "c_fc": 0.3, "mlp.c_proj": 0.2}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith((".ln_1.weight", ".ln_2.weight", "ln_f.weight")):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.2 * torch.randn_like(p))
            else:
                key = next(k for k in std if f"{k}." in name or name.endswith(f"{k}.weight"))
                p.copy_(std[key] * torch.randn_like(p))
            p.copy_(p.float().to(p.dtype))  # rounded to float32 once, for both dtypes
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr(), "head not tied"
    return model


def named_tensors(model, field: str) -> dict[str, np.ndarray]:
    """``field`` ("data" or "grad") of every parameter under flat params-tree paths
    (``blocks/1/attn/c_attn/w``).  Conv1D weights are ``[in, out]``, gpt2np's layout: no transpose.
    The tied wte appears once; its gradient holds both uses (embedding and head)."""
    t = model.transformer

    def get(p):
        return getattr(p, field).detach().numpy().copy()

    out = {"wte": get(t.wte.weight), "wpe": get(t.wpe.weight),
           "ln_f/g": get(t.ln_f.weight), "ln_f/b": get(t.ln_f.bias)}
    for i, blk in enumerate(t.h):
        params = dict(blk.named_parameters())
        for ours, theirs in BLOCK_NAMES:
            out[f"blocks/{i}/{ours}"] = get(params[theirs])
    return out


def cases(rng):
    V = HPARAMS["n_vocab"]
    plain = rng.integers(0, V, size=(2, 12))
    ids = rng.integers(0, V, size=(2, 12))
    labels = rng.integers(0, V, size=(2, 12))
    labels[rng.random(labels.shape) < 0.3] = IGNORE
    labels[:, 1] = IGNORE  # a column entirely not counted, and some counted ones elsewhere
    lengths = [12, 7, 9]
    T = max(lengths)
    padded = rng.integers(0, V, size=(len(lengths), T))  # junk ids in the padding must not matter
    mask = np.zeros((len(lengths), T), dtype=np.int64)
    for r, n in enumerate(lengths):
        mask[r, T - n:] = 1
    padded_labels = np.where(mask == 1, padded, IGNORE)
    for r, n in enumerate(lengths):
        padded_labels[r, T - n] = IGNORE  # the first real token: its predictor is a padding position
    return {
        "plain": {"ids": plain, "labels": plain},
        "labels": {"ids": ids, "labels": labels},
        "padded": {"ids": padded, "labels": padded_labels, "mask": mask},
    }


def run(model, case) -> tuple[float, float, dict[str, np.ndarray]]:
    """(the differentiated loss, transformers' own labels= loss, the gradients)."""
    ids, labels = torch.tensor(case["ids"]), torch.tensor(case["labels"])
    kwargs = {}
    if "mask" in case:
        mask = case["mask"]
        kwargs = {"attention_mask": torch.tensor(mask),
                  "position_ids": torch.tensor(np.maximum(np.cumsum(mask, axis=1) - 1, 0))}
    model.zero_grad(set_to_none=True)
    out = model(ids, labels=labels, **kwargs)
    V = HPARAMS["n_vocab"]
    loss = F.cross_entropy(out.logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=IGNORE)
    loss.backward()
    grads = named_tensors(model, "grad")
    assert all(np.isfinite(g).all() for g in grads.values()), "a gradient is not finite"
    return loss.item(), out.loss.item(), grads


def main() -> None:
    model64 = build_model().double()
    model32 = copy.deepcopy(model64).float()
    rng = np.random.default_rng(SEED)
    data: dict[str, np.ndarray] = {f"params/{k}": v.astype(np.float32)
                                   for k, v in named_tensors(model64, "data").items()}
    data["hparams"] = np.array([HPARAMS[k] for k in ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer")])
    all_cases = cases(rng)
    for name, case in all_cases.items():
        for key, value in case.items():
            data[f"{name}/{key}"] = value
        for tag, model in (("f64", model64), ("f32", model32)):
            loss, hf_loss, grads = run(model, case)
            assert abs(loss - hf_loss) <= 1e-5 * abs(hf_loss), (name, tag, loss, hf_loss)
            data[f"{tag}/{name}/loss"] = np.array(loss)
            data[f"{tag}/{name}/hf_loss"] = np.array(hf_loss)
            for path, g in grads.items():
                data[f"{tag}/{name}/grads/{path}"] = g

    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **data)
    tmp.replace(OUT.with_suffix(".npz"))
    meta = {
        "made_by": "scripts/make_grad_reference.py",
        "hparams": HPARAMS,
        "seed": SEED,
        "cases": list(all_cases),
        "versions": {"python": platform.python_version(), "numpy": np.__version__,
                     "torch": torch.__version__, "transformers": transformers.__version__},
        "notes": "weights rounded to float32 once; f64/f32 = the same model in float64/float32; "
                 "loss = torch cross_entropy of the shifted logits in the model's dtype (ignore_index -100), "
                 "hf_loss = transformers' own labels= loss (computed in float32); "
                 "grads/<path> = .grad of each parameter after loss.backward(), wte's from both uses",
    }
    OUT.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    size = OUT.with_suffix(".npz").stat().st_size
    print(f"wrote {OUT.with_suffix('.npz')} ({size:,} bytes, {len(data)} arrays) and {OUT.with_suffix('.json').name}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
