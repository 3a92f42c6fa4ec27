"""Make the optimizer reference fixture (dev tool: needs torch).

    python scripts/make_optim_fixture.py

Writes tests/fixtures/optim_torch.npz + optim_torch.json, all float64:

- adamw_<run>/...: torch.optim.AdamW (foreach=False: the single-tensor loop torch runs on CPU)
  over a small params-shaped tree (wte, a block's ln_1 g/b and attn.c_attn w/b, ln_f g/b) in
  two param groups, the 2-D tensors with weight_decay and the 1-D ones (biases, gains) without,
  non-default betas/eps/weight_decay and a different lr at each step.  Every tree is stored
  flat: the tensors of ``shapes`` (the .json) raveled and concatenated in that order.  Stored:
  the initial params (``init``, [n]), each step's grads (``grads``, [steps, n]) and the params
  after it (``after``, [steps, n]), and torch's exp_avg / exp_avg_sq after the last step
  (``m``, ``v``).
  Run "a" has beta1 = 0.8 (torch's lerp takes its small-weight form), run "b" beta1 = 0.3
  (the other form); one grad of run "a" is all zeros.
- clip<k>/...: torch.nn.utils.clip_grad_norm_ on a few gradient sets: clipped, not clipped, and
  with an inf and a NaN entry (torch's default error_if_nonfinite=False): the grads before and
  after (``clip/before``, ``clip/after``: [cases, n], the tensors of ``clip_shapes`` flat) and
  the returned total norms (``clip/total``).
- sched<k>: the lr of each step of a schedule made of torch's schedulers, linear warm-up then
  cosine decay then a floor (SequentialLR of LinearLR, CosineAnnealingLR and LambdaLR(min/max)),
  cross-checked here against the closed formula computed with Python's math; cases torch's
  schedulers cannot express (no warm-up steps, W = T) come from the math formula alone.
"""

from __future__ import annotations

import json
import math
import pathlib
import platform
import warnings

import numpy as np
import torch

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures"

SHAPES = {  # params-tree paths, as gpt2np writes them
    "wte": (7, 4),
    "blocks[0].ln_1.g": (4,),
    "blocks[0].ln_1.b": (4,),
    "blocks[0].attn.c_attn.w": (4, 12),
    "blocks[0].attn.c_attn.b": (12,),
    "ln_f.g": (4,),
    "ln_f.b": (4,),
}
DECAYED = ["wte", "blocks[0].attn.c_attn.w"]  # the 2-D tensors

RUNS = {
    "a": {"betas": [0.8, 0.99], "eps": 1e-6, "weight_decay": 0.05, "lrs": [1e-2, 3e-2, 5e-3, 0.0, 2e-2]},
    "b": {"betas": [0.3, 0.9], "eps": 1e-5, "weight_decay": 0.2, "lrs": [2e-2, 1e-2, 4e-2]},
}

SCHEDULES = [  # max_lr, min_lr, warmup_steps, total_steps, number of steps recorded
    {"max_lr": 6e-4, "min_lr": 6e-5, "warmup_steps": 10, "total_steps": 50, "steps": 60},
    {"max_lr": 1e-3, "min_lr": 0.0, "warmup_steps": 3, "total_steps": 17, "steps": 20},
    {"max_lr": 2.5e-4, "min_lr": 1e-5, "warmup_steps": 0, "total_steps": 12, "steps": 15},
    {"max_lr": 5e-4, "min_lr": 5e-5, "warmup_steps": 4, "total_steps": 4, "steps": 7},
]


def flat(tree: dict) -> np.ndarray:
    return np.concatenate([np.ravel(tree[p]) for p in SHAPES])


def adamw_run(name: str, cfg: dict, rng: np.random.Generator, arrays: dict) -> None:
    init = {p: rng.standard_normal(s) for p, s in SHAPES.items()}
    init["blocks[0].ln_1.g"] += 1.0  # gains near 1, as trained
    tensors = {p: torch.tensor(a, dtype=torch.float64, requires_grad=True) for p, a in init.items()}
    groups = [
        {"params": [tensors[p] for p in SHAPES if p in DECAYED], "weight_decay": cfg["weight_decay"]},
        {"params": [tensors[p] for p in SHAPES if p not in DECAYED], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=cfg["lrs"][0], betas=tuple(cfg["betas"]), eps=cfg["eps"], foreach=False)
    grads, after = [], []
    for k, lr in enumerate(cfg["lrs"]):
        for group in opt.param_groups:
            group["lr"] = lr
        g = {}
        for p, t in tensors.items():
            scale = 10.0 ** rng.uniform(-3, 1)  # gradients of very different sizes
            g[p] = rng.standard_normal(SHAPES[p]) * scale
            if name == "a" and k == 1 and p == "blocks[0].attn.c_attn.b":
                g[p][:] = 0.0
            t.grad = torch.tensor(g[p])
        opt.step()
        grads.append(flat(g))
        after.append(flat({p: t.detach().numpy() for p, t in tensors.items()}))
    arrays[f"adamw_{name}/init"] = flat(init)
    arrays[f"adamw_{name}/grads"] = np.stack(grads)
    arrays[f"adamw_{name}/after"] = np.stack(after)
    arrays[f"adamw_{name}/m"] = flat({p: opt.state[t]["exp_avg"].numpy() for p, t in tensors.items()})
    arrays[f"adamw_{name}/v"] = flat({p: opt.state[t]["exp_avg_sq"].numpy() for p, t in tensors.items()})


CLIP_SHAPES = [(4, 5), (5,), (3, 2, 2)]


def clip_cases(rng: np.random.Generator, arrays: dict) -> list[dict]:
    cases = [
        {"max_norm": 1.0, "scale": 1.0},  # total about 5.5: clipped
        {"max_norm": 100.0, "scale": 1.0},  # not clipped
        {"max_norm": 0.25, "scale": 1e-3},  # total about 5e-3: not clipped
        {"max_norm": 0.5, "scale": 30.0},  # clipped hard
        {"max_norm": 1.0, "scale": 1.0, "put": math.inf},  # inf total: finite grads -> 0, inf -> nan
        {"max_norm": 1.0, "scale": 1.0, "put": math.nan},  # nan total: every grad nan
    ]
    before, after, totals = [], [], []
    for case in cases:
        grads = [rng.standard_normal(s) * case["scale"] for s in CLIP_SHAPES]
        if "put" in case:
            grads[1][2] = case["put"]
            case["put"] = repr(case["put"])
        params = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in CLIP_SHAPES]
        for p, g in zip(params, grads):
            p.grad = torch.tensor(g)
        totals.append(torch.nn.utils.clip_grad_norm_(params, case["max_norm"]).item())
        before.append(np.concatenate([g.ravel() for g in grads]))
        after.append(np.concatenate([p.grad.numpy().ravel() for p in params]))
    arrays["clip/before"], arrays["clip/after"] = np.stack(before), np.stack(after)
    arrays["clip/total"] = np.array(totals)
    return cases


def schedule_by_formula(s: int, max_lr, min_lr, warmup_steps, total_steps) -> float:
    if s < warmup_steps:
        return max_lr * (s + 1) / warmup_steps
    if s > total_steps:
        return min_lr
    ratio = (s - warmup_steps) / (total_steps - warmup_steps) if total_steps > warmup_steps else 1.0
    return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * ratio))


def schedule_by_torch(max_lr, min_lr, warmup_steps, total_steps, steps) -> list[float] | None:
    W, T = warmup_steps, total_steps
    if W < 2 or T <= W:
        return None  # LinearLR needs total_iters >= 1, CosineAnnealingLR T_max >= 1
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=max_lr)
    scheds = [
        torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / W, end_factor=1.0, total_iters=W - 1),
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=T - W, eta_min=min_lr),
        torch.optim.lr_scheduler.LambdaLR(opt, lambda _: min_lr / max_lr),
    ]
    seq = torch.optim.lr_scheduler.SequentialLR(opt, scheds, milestones=[W, T + 1])
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SequentialLR's own step(0) calls are deprecated usage
        for _ in range(steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            seq.step()
    return out


def main() -> None:
    rng = np.random.default_rng(20240607)
    arrays: dict[str, np.ndarray] = {}
    for name, cfg in RUNS.items():
        adamw_run(name, cfg, rng, arrays)
    cases = clip_cases(rng, arrays)
    schedules = []
    for k, sch in enumerate(SCHEDULES):
        args = {key: sch[key] for key in ("max_lr", "min_lr", "warmup_steps", "total_steps")}
        formula = [schedule_by_formula(s, **args) for s in range(sch["steps"])]
        by_torch = schedule_by_torch(**args, steps=sch["steps"])
        if by_torch is not None:
            worst = max(abs(a - b) / sch["max_lr"] for a, b in zip(by_torch, formula))
            assert worst < 1e-13, f"schedule {k}: torch and the formula differ by {worst:.3g} of max_lr"
        arrays[f"sched{k}"] = np.array(by_torch if by_torch is not None else formula)
        schedules.append({**sch, "source": "torch" if by_torch is not None else "math formula"})
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT / "optim_torch.npz", **arrays)
    meta = {
        "made_by": "scripts/make_optim_fixture.py",
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__},
        "dtype": "float64",
        "shapes": {p: list(s) for p, s in SHAPES.items()},
        "decayed": DECAYED,
        "adamw_runs": RUNS,
        "clip_shapes": CLIP_SHAPES,
        "clip_cases": cases,
        "schedules": schedules,
    }
    (OUT / "optim_torch.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    size = (OUT / "optim_torch.npz").stat().st_size
    print(f"wrote {OUT / 'optim_torch.npz'} ({size / 1024:.1f} KiB, {len(arrays)} arrays) and optim_torch.json")


if __name__ == "__main__":
    main()
