"""Training's update rules: gradient clipping, the AdamW optimizer and the learning-rate schedule.

One training step calls them in this order (``grads`` is a tree shaped like ``model.params``)::

    lr = cosine_lr(step, max_lr=6e-4, warmup_steps=715, total_steps=19073, min_lr=6e-5)
    total = clip_grad_norm(grads, max_norm=1.0)   # g ← g · min(1, max_norm / (‖g‖ + 1e-6))
    opt.step(grads, lr=lr)                        # AdamW: p ← p − lr·wd·p − lr · m̂ / (√v̂ + ε)

Each function computes what its PyTorch counterpart computes, in the same order of
floating-point operations (``torch.optim.AdamW``, ``torch.nn.utils.clip_grad_norm_``), so the
numbers agree with torch's to rounding (tests/test_optim.py checks them).  Everything works in place, in the
params' own dtype (float32 stays float32), a slice at a time so that no temporary is ever as large
as a tensor.
"""

from __future__ import annotations

import math

import numpy as np

CHUNK = 1 << 15  # elements per slice of a tensor that the update loops touch at a time (fits in L2)


def _leaves(tree, path=""):
    """(path, leaf) of every leaf of nested dicts/lists, paths written like ``blocks[3].attn.c_attn.w``."""
    if isinstance(tree, dict):
        for key, sub in tree.items():
            yield from _leaves(sub, f"{path}.{key}" if path else str(key))
    elif isinstance(tree, (list, tuple)):
        for i, sub in enumerate(tree):
            yield from _leaves(sub, f"{path}[{i}]")
    else:
        yield path, tree


def _arrays(tree, what: str) -> list[tuple[str, np.ndarray]]:
    """The leaves of ``tree``, each checked to be a writable float32/float64 NumPy array."""
    if not isinstance(tree, (dict, list, tuple)):
        raise TypeError(f"{what}: expected a tree of nested dicts/lists of arrays "
                        f"(e.g. model.params), found {type(tree).__name__}")
    out = []
    for path, a in _leaves(tree):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{what} {path}: expected a NumPy array, found {type(a).__name__}")
        if a.dtype not in (np.float32, np.float64):
            raise TypeError(f"{what} {path}: dtype {a.dtype}, expected float32 or float64")
        if not a.flags.writeable:
            raise ValueError(
                f"{what} {path} is read-only (e.g. memory-mapped weights from GPT2.load); it is "
                "updated in place, so make a writable copy first, e.g. "
                "model.params = copy.deepcopy(model.params)"
            )
        out.append((path, a))
    return out


def _slices(a: np.ndarray, rows: int):
    """Views of ``a`` of ``rows`` leading-axis entries each, covering it (any strides)."""
    a = a.reshape(1) if a.ndim == 0 else a
    for i in range(0, a.shape[0], rows):
        yield a[i : i + rows]


def _rows_per_slice(a: np.ndarray) -> int:
    """How many leading-axis entries of ``a`` make about CHUNK elements (at least one)."""
    row = a.size // a.shape[0] if a.ndim and a.shape[0] else 1
    return max(1, CHUNK // max(row, 1))


# --------------------------------------------------------------------------------------------
# Gradient clipping
# --------------------------------------------------------------------------------------------


def clip_grad_norm(grads, max_norm: float = 1.0) -> float:
    """Scale all gradients together so that their joint L2 norm is at most ``max_norm``.

    Treating every tensor of ``grads`` as one long vector g::

        total = ‖g‖₂ = √(Σ_tensors Σ_i g_i²)
        coef  = min(max_norm / (total + 1e-6), 1)
        g    ← coef · g                               (in place, every tensor)

    and returns ``total``, the norm *before* clipping, as a Python float (log it: spikes show
    instabilities).  This is ``torch.nn.utils.clip_grad_norm_(params, max_norm)`` (its default
    ``norm_type=2``); the squares are summed a slice at a time, slices added in float64.

    Non-finite gradients, as torch does by default (``error_if_nonfinite=False``): the function
    does not raise; an ``inf`` total gives coef = 0, so finite gradients become 0 and infinite
    ones NaN; a ``nan`` total makes every gradient NaN.  Either way the returned total is not
    finite: check ``math.isfinite(total)`` and skip that step rather than apply it.

    ``max_norm=math.inf`` clips nothing and only measures the norm (as in torch).
    """
    max_norm = float(max_norm)
    if not max_norm > 0:  # (NaN fails too)
        raise ValueError(f"max_norm must be a positive number (or inf: no clipping), got {max_norm!r}")
    leaves = _arrays(grads, "grads")
    sum_sq = 0.0
    for _, g in leaves:
        for s in _slices(g, _rows_per_slice(g)):
            sum_sq += float(np.vdot(s, s))  # Σ g_i² of the slice, in g's dtype
    total = math.sqrt(sum_sq)
    coef = max_norm / (total + 1e-6)
    if coef > 1.0:  # (a NaN coef stays NaN, as torch.clamp leaves it)
        coef = 1.0
    if coef != 1.0:  # torch always multiplies; by 1.0 it changes nothing
        with np.errstate(invalid="ignore"):  # inf · 0 = nan, silently (as torch)
            for _, g in leaves:
                g *= coef
    return total


# --------------------------------------------------------------------------------------------
# AdamW
# --------------------------------------------------------------------------------------------


def decays_by_default(path: str, param: np.ndarray) -> bool:
    """GPT-2's weight-decay rule (nanoGPT's): decay every tensor of 2 or more dimensions, that is
    the embeddings ``wte``, ``wpe`` and every weight matrix ``w``; not the 1-D ones, the biases
    ``b`` and the layer norms' gains ``g`` and biases ``b``."""
    return param.ndim >= 2


class AdamW:
    """Adam with decoupled weight decay (Loshchilov & Hutter), exactly as ``torch.optim.AdamW``.

    At step t = 1, 2, ..., for every tensor p with gradient g (β₁, β₂ = ``betas``, ε = ``eps``,
    wd = ``weight_decay`` for decayed tensors, 0 for the others)::

        p ← p · (1 − lr·wd)                            decoupled weight decay
        m ← m + (1 − β₁)·(g − m)                       = β₁·m + (1 − β₁)·g      (first moment)
        v ← β₂·v + (1 − β₂)·g·g                                                 (second moment)
        m̂ = m / (1 − β₁ᵗ),   v̂ = v / (1 − β₂ᵗ)        bias corrections (m, v start at 0)
        p ← p − lr · m̂ / (√v̂ + ε)

    computed in torch's order: p ← p + (−lr/(1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε).  The results
    agree with torch's to rounding (a few elements differ in the last bit: torch's CPU kernels may
    fuse a multiply and an add into one FMA, NumPy does not).

    ``params`` is a params tree (``model.params``); the optimizer keeps its arrays (not the
    tree) and updates them in place, so every array must be writable (refused otherwise: copy
    memory-mapped weights first).  m and v are preallocated, one pair per tensor, in its dtype.

    Which tensors are decayed is decided once, by ``decay(path, array) -> bool`` (default
    :func:`decays_by_default`: 2-D and larger), and shown in ``opt.decay``, a dict
    ``{path: bool}``; e.g. ``decay=lambda path, p: p.ndim >= 2 and path != "wpe"``.

    The learning rate may change between steps: ``opt.lr = ...`` or ``opt.step(grads, lr=...)``.
    The defaults are GPT-2/GPT-3's training settings (torch's are lr=1e-3, betas=(0.9, 0.999),
    weight_decay=0.01).
    """

    def __init__(self, params, lr: float = 6e-4, betas=(0.9, 0.95), eps: float = 1e-8,
                 weight_decay: float = 0.1, *, decay=decays_by_default):
        leaves = _arrays(params, "params")
        seen = {}
        for path, p in leaves:
            if id(p) in seen:
                raise ValueError(f"params {path} is the same array as {seen[id(p)]}; each tensor must appear once")
            seen[id(p)] = path
        self.lr = lr
        self.betas = tuple(betas)
        self.eps = eps
        self.weight_decay = weight_decay
        self._check_hparams()
        self.t = 0  # number of steps taken (torch's state["step"])
        self.paths = [path for path, _ in leaves]
        self.params = [p for _, p in leaves]
        self.decay = {path: bool(decay(path, p)) for path, p in leaves}
        # m, v start at 0; written now (not left to np.zeros' lazy pages) so that the first step
        # does not pay the page faults of allocating them (about 1 GB for 124M in float32)
        self.m = [np.full(p.shape, 0, p.dtype) for p in self.params]  # first moments
        self.v = [np.full(p.shape, 0, p.dtype) for p in self.params]  # second moments
        # two scratch slices per dtype, the size of the largest slice the loops take
        sizes = {}
        for p in self.params:
            n = _rows_per_slice(p) * (p.size // p.shape[0] if p.ndim and p.shape[0] else 1)
            sizes[p.dtype] = max(sizes.get(p.dtype, 0), n)
        self._scratch = {dt: (np.empty(n, dt), np.empty(n, dt)) for dt, n in sizes.items()}

    def __repr__(self) -> str:
        n_decay = sum(self.decay.values())
        return (f"AdamW(lr={self.lr}, betas={self.betas}, eps={self.eps}, weight_decay={self.weight_decay}, "
                f"step={self.t}, tensors={len(self.params)}, decayed={n_decay})")

    def _check_hparams(self):
        for name, value in (("lr", self.lr), ("eps", self.eps), ("weight_decay", self.weight_decay)):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                    or not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")

    def _matching_grads(self, grads) -> list[np.ndarray]:
        """The gradient of each parameter, in the params' order; an error names the first mismatch."""
        if not isinstance(grads, (dict, list, tuple)):
            raise TypeError(f"grads: expected a tree shaped like the params, found {type(grads).__name__}")
        found = dict(_leaves(grads))
        out = []
        for path, p in zip(self.paths, self.params):
            if path not in found:
                if any(k.startswith((path + ".", path + "[")) for k in found):
                    raise TypeError(f"grads {path}: expected a NumPy array of shape {p.shape}, found a nested list/dict")
                raise ValueError(f"grads is missing {path} (expected an array of shape {p.shape}, {p.dtype})")
            g = found.pop(path)
            if not isinstance(g, np.ndarray):
                raise TypeError(f"grads {path}: expected a NumPy array, found {type(g).__name__}")
            if g.shape != p.shape:
                raise ValueError(f"grads {path}: shape {g.shape}, expected the parameter's {p.shape}")
            if g.dtype != p.dtype:
                raise ValueError(f"grads {path}: dtype {g.dtype}, expected the parameter's {p.dtype}")
            out.append(g)
        if found:
            raise ValueError(f"grads has {next(iter(found))}, which is not a parameter of this optimizer")
        return out

    def step(self, grads, lr: float | None = None) -> None:
        """One AdamW update of every parameter, in place (see the class docstring for the formulas).

        ``grads`` is a tree shaped like the params (same paths, shapes and dtypes); it is only
        read.  ``lr``, if given, becomes ``opt.lr`` from this step on.
        """
        if lr is not None:
            self.lr = lr
        self._check_hparams()
        grads = self._matching_grads(grads)
        lr, (beta1, beta2), eps, wd = float(self.lr), self.betas, float(self.eps), float(self.weight_decay)
        self.t += 1
        bias_correction1 = 1 - beta1**self.t
        bias_correction2 = 1 - beta2**self.t
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5
        shrink = 1 - lr * wd
        w1 = 1 - beta1  # torch's lerp weight
        for path, p, g, m, v in zip(self.paths, self.params, grads, self.m, self.v):
            decays = self.decay[path]
            scratch_a, scratch_b = self._scratch[p.dtype]
            rows = _rows_per_slice(p)
            for ps, gs, ms, vs in zip(_slices(p, rows), _slices(g, rows), _slices(m, rows), _slices(v, rows)):
                a = scratch_a[: ps.size].reshape(ps.shape)
                b = scratch_b[: ps.size].reshape(ps.shape)
                if decays and wd != 0:
                    ps *= shrink                              # p ← p·(1 − lr·wd)
                np.subtract(gs, ms, out=a)                    # m ← lerp(m, g, w = 1 − β₁) in torch's
                if w1 < 0.5:                                  # two forms (which one: by w < 0.5)
                    a *= w1
                    ms += a                                   #   m + w·(g − m)
                else:
                    a *= 1 - p.dtype.type(w1)
                    np.subtract(gs, a, out=ms)                #   g − (1 − w)·(g − m)
                np.multiply(gs, 1 - beta2, out=a)             # v ← β₂·v + ((1 − β₂)·g)·g
                a *= gs
                vs *= beta2
                vs += a
                np.sqrt(vs, out=b)                            # denom = √v / √(1 − β₂ᵗ) + ε
                b /= bias_correction2_sqrt
                b += eps
                np.multiply(ms, -step_size, out=a)            # p ← p + (−lr/(1 − β₁ᵗ))·m / denom
                a /= b
                ps += a

    def state_dict(self) -> dict:
        """Everything needed to resume: ``{"step", "lr", "beta1", "beta2", "eps", "weight_decay",
        "m/<path>", "v/<path>"}`` (ints, floats and arrays; ``np.savez(f, **opt.state_dict())``
        stores it).  The arrays are the optimizer's own buffers, not copies (as torch's): save
        or copy them before the next step changes them."""
        state = {"step": self.t, "lr": float(self.lr), "beta1": float(self.betas[0]),
                 "beta2": float(self.betas[1]), "eps": float(self.eps),
                 "weight_decay": float(self.weight_decay)}
        for path, m, v in zip(self.paths, self.m, self.v):
            state[f"m/{path}"] = m
            state[f"v/{path}"] = v
        return state

    def load_state_dict(self, state) -> None:
        """Restore a :meth:`state_dict` (a dict, or an opened ``np.load`` file): the step count,
        the hyperparameters and m, v copied into this optimizer's buffers.  Every tensor's m and v
        must be there with its shape and dtype; an error names the first that is not."""
        state = dict(state)
        scalars = ["step", "lr", "beta1", "beta2", "eps", "weight_decay"]
        missing = [k for k in scalars if k not in state]
        if missing:
            raise ValueError(f"optimizer state is missing {missing} (expected an AdamW.state_dict())")
        expected = set(scalars)
        for path, p in zip(self.paths, self.params):
            for key in (f"m/{path}", f"v/{path}"):
                expected.add(key)
                if key not in state:
                    raise ValueError(f"optimizer state is missing {key} (expected shape {p.shape}, {p.dtype})")
                a = np.asarray(state[key])
                if a.shape != p.shape or a.dtype != p.dtype:
                    raise ValueError(f"optimizer state {key}: {a.shape} {a.dtype}, expected {p.shape} {p.dtype}")
        unknown = sorted(set(state) - expected)
        if unknown:
            raise ValueError(f"optimizer state has {unknown[0]}, which is not a parameter of this optimizer")
        step = int(state["step"])
        if step < 0:
            raise ValueError(f"optimizer state step must be >= 0, got {step}")
        self.t = step
        self.lr = float(state["lr"])
        self.betas = (float(state["beta1"]), float(state["beta2"]))
        self.eps = float(state["eps"])
        self.weight_decay = float(state["weight_decay"])
        self._check_hparams()
        for path, m, v in zip(self.paths, self.m, self.v):
            np.copyto(m, state[f"m/{path}"])
            np.copyto(v, state[f"v/{path}"])


# --------------------------------------------------------------------------------------------
# Learning-rate schedule
# --------------------------------------------------------------------------------------------


def cosine_lr(step: int, *, max_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0) -> float:
    """The learning rate of step ``step`` (0-based): linear warm-up, then cosine decay to a floor.

    With W = ``warmup_steps`` and T = ``total_steps``::

        lr(s) = max_lr · (s + 1) / W                                        for s < W
        lr(s) = min_lr + ½ (max_lr − min_lr) (1 + cos(π (s − W) / (T − W)))  for W ≤ s ≤ T
        lr(s) = min_lr                                                      for s > T

    The warm-up is nanoGPT's (build-nanogpt's ``get_lr``): it never uses 0, reaches max_lr at
    s = W − 1 and the decay starts from max_lr at s = W; lr(T) = min_lr.  With W = 0 there is no
    warm-up.  In torch: ``SequentialLR([LinearLR(start_factor=1/W, total_iters=W-1),
    CosineAnnealingLR(T_max=T-W, eta_min=min_lr)], milestones=[W])`` gives the same for s ≤ T
    (add ``LambdaLR(lambda _: min_lr / max_lr)`` at milestone T + 1 for the floor).
    """
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"step must be an integer >= 0, got {step!r}")
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, (int, np.integer)) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be an integer >= 0, got {warmup_steps!r}")
    if (isinstance(total_steps, bool) or not isinstance(total_steps, (int, np.integer))
            or total_steps < warmup_steps):
        raise ValueError(f"total_steps must be an integer >= warmup_steps={warmup_steps}, got {total_steps!r}")
    if not (math.isfinite(max_lr) and math.isfinite(min_lr) and 0 <= min_lr <= max_lr):
        raise ValueError(f"expected 0 <= min_lr <= max_lr (finite), got min_lr={min_lr!r}, max_lr={max_lr!r}")
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= total_steps:  # (at s = T the cosine gives min_lr too: cos(π) = −1)
        return float(min_lr)
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * progress))
