"""Benchmark one training step of gpt2np against PyTorch eager (transformers' GPT2LMHeadModel) on CPU.

    python scripts/bench_train.py [--configs small,124M] [--repeats 3] [--steps 3] [--threads 2]
                                  [--out bench-train.json]

A training step is what ``gpt2np train`` does per batch: the forward pass, the loss, the
backward pass, clipping the gradient norm to 1.0, and one AdamW update (lr 6e-4, betas (0.9,
0.95), weight decay 0.1 on the 2-D weights only).  Both contenders start from the same weights
(``GPT2.random(config, seed=0)``, handed to torch as a state dict) and train on the same batches.

Configs:
- ``small``: 4 layers, 128 wide, 4 heads, n_ctx 256, the full 50,257-token vocabulary; batch 8 x 256;
- ``124M``: GPT-2 124M; batch 4 x 128.

Method: each run is a fresh process for one contender (so neither shares threads or memory with
the other); it builds the model, runs 2 untimed steps, then ``--steps`` timed steps, and reports
the median step time and its peak RSS.  The contenders alternate, with a pause of SETTLE seconds
before each run (BLAS and OpenMP pools spin for a while after their last call), ``--repeats``
times; the table gives the median over repeats of each contender's median step, tokens/s, the
ratio gpt2np / torch, and peak RSS.  torch and transformers are dev tools; without them only
gpt2np is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SETTLE = 2.0
CONFIGS = {
    "small": dict(model=dict(n_vocab=50257, n_ctx=256, n_embd=128, n_head=4, n_layer=4), batch=(8, 256)),
    "124M": dict(model=dict(n_vocab=50257, n_ctx=1024, n_embd=768, n_head=12, n_layer=12), batch=(4, 128)),
}
LR, BETAS, EPS, WD, CLIP = 6e-4, (0.9, 0.95), 1e-8, 0.1, 1.0


def batches(n, B, T, V, seed=1):
    import numpy as np

    rng = np.random.default_rng(seed)
    return [rng.integers(0, V, (B, T)) for _ in range(n)]


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_gpt2np(cfg, n_steps):
    import gpt2np
    from gpt2np import GPT2, Config

    model = GPT2.random(Config(**cfg["model"]), seed=0)
    opt = gpt2np.AdamW(model.params, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    times, losses = [], []
    for i, ids in enumerate(batches(2 + n_steps, *cfg["batch"], cfg["model"]["n_vocab"])):
        t = time.perf_counter()
        loss, grads = gpt2np.loss_and_grads(model, ids)
        gpt2np.clip_grad_norm(grads, CLIP)
        opt.step(grads)
        if i >= 2:
            times.append(time.perf_counter() - t)
        losses.append(float(loss))
    return times, losses


def run_torch(cfg, n_steps):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from gpt2np import GPT2, Config

    c = cfg["model"]
    ours = GPT2.random(Config(**c), seed=0)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=c["n_vocab"], n_positions=c["n_ctx"], n_embd=c["n_embd"],
                                    n_layer=c["n_layer"], n_head=c["n_head"], activation_function="gelu_new",
                                    resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    state = {"transformer.wte.weight": ours.params["wte"], "transformer.wpe.weight": ours.params["wpe"],
             "transformer.ln_f.weight": ours.params["ln_f"]["g"], "transformer.ln_f.bias": ours.params["ln_f"]["b"]}
    for i, blk in enumerate(ours.params["blocks"]):
        for ln in ("ln_1", "ln_2"):
            state[f"transformer.h.{i}.{ln}.weight"] = blk[ln]["g"]
            state[f"transformer.h.{i}.{ln}.bias"] = blk[ln]["b"]
        for part, names in (("attn", ("c_attn", "c_proj")), ("mlp", ("c_fc", "c_proj"))):
            for n in names:
                state[f"transformer.h.{i}.{part}.{n}.weight"] = blk[part][n]["w"]
                state[f"transformer.h.{i}.{part}.{n}.bias"] = blk[part][n]["b"]
    missing, unexpected = hf.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()}, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    hf.tie_weights()
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()
    hf.train()
    decay = [p for n, p in hf.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in hf.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=BETAS, eps=EPS)
    times, losses = [], []
    for i, ids in enumerate(batches(2 + n_steps, *cfg["batch"], c["n_vocab"])):
        x = torch.from_numpy(ids)
        t = time.perf_counter()
        loss = hf(x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), CLIP)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 2:
            times.append(time.perf_counter() - t)
        losses.append(loss.item())
    return times, losses


def child(args) -> None:
    if args.threads:
        try:
            from threadpoolctl import threadpool_limits

            threadpool_limits(args.threads)
        except ImportError:
            pass
        if args.contender == "torch":
            import torch

            torch.set_num_threads(args.threads)
    cfg = CONFIGS[args.config]
    times, losses = (run_gpt2np if args.contender == "gpt2np" else run_torch)(cfg, args.steps)
    print(json.dumps({"times": times, "losses": losses, "peak_rss_mb": peak_rss_mb()}))


def have_torch() -> bool:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="small,124M")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="BLAS/torch threads (default: all cores)")
    ap.add_argument("--out", default="bench-train.json")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--contender", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    contenders = ["gpt2np"] + (["torch"] if have_torch() else [])
    if len(contenders) == 1:
        print("torch/transformers not installed: timing gpt2np only")
    results = {"machine": {"python": platform.python_version(), "platform": platform.platform(),
                           "cpus": os.cpu_count(), "load_before": os.getloadavg()},
               "settle_s": SETTLE, "configs": {}}
    for name in args.configs.split(","):
        cfg = CONFIGS[name]
        runs = {c: [] for c in contenders}
        for r in range(args.repeats):
            for c in contenders if r % 2 == 0 else contenders[::-1]:
                time.sleep(SETTLE)
                cmd = [sys.executable, __file__, "--child", "--contender", c, "--config", name,
                       "--steps", str(args.steps), "--threads", str(args.threads)]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True)
                runs[c].append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(f"{name} {c} run {r + 1}: median step {statistics.median(runs[c][-1]['times']):.3f} s",
                      flush=True)
        B, T = cfg["batch"]
        summary = {}
        for c in contenders:
            step = statistics.median(statistics.median(run["times"]) for run in runs[c])
            summary[c] = {"step_s": step, "tokens_per_s": B * T / step,
                          "peak_rss_mb": max(run["peak_rss_mb"] for run in runs[c]),
                          "first_loss": runs[c][0]["losses"][0], "runs": runs[c]}
        if "torch" in summary:
            summary["ratio_tokens_per_s"] = summary["gpt2np"]["tokens_per_s"] / summary["torch"]["tokens_per_s"]
        results["configs"][name] = summary
    results["machine"]["load_after"] = os.getloadavg()
    pathlib.Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"\n{'config':8} {'contender':9} {'step (s)':>9} {'tokens/s':>9} {'peak RSS (MB)':>14} {'first loss':>10}")
    for name, summary in results["configs"].items():
        for c in contenders:
            s = summary[c]
            print(f"{name:8} {c:9} {s['step_s']:9.3f} {s['tokens_per_s']:9.0f} {s['peak_rss_mb']:14.0f} "
                  f"{s['first_loss']:10.4f}")
        if "ratio_tokens_per_s" in summary:
            print(f"{name:8} gpt2np / torch tokens/s: {summary['ratio_tokens_per_s']:.2f}")
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
