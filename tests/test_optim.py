"""AdamW, gradient clipping and the lr schedule: against torch (fixture, float64, and live in
float32 when torch is installed) and by their properties (in place, float32, state round trip)."""

import copy
import json
import math
import tracemalloc

import numpy as np
import pytest

from gpt2np import GPT2, Config
from gpt2np.optim import AdamW, clip_grad_norm, cosine_lr, decays_by_default

TINY = Config(n_vocab=37, n_ctx=8, n_embd=8, n_head=2, n_layer=2)


@pytest.fixture(scope="module")
def fixture(request):
    import pathlib

    folder = pathlib.Path(__file__).parent / "fixtures"
    meta = json.loads((folder / "optim_torch.json").read_text(encoding="utf-8"))
    with np.load(folder / "optim_torch.npz") as data:
        arrays = {k: data[k] for k in data.files}
    return meta, arrays


def unflat(vec, shapes: dict) -> dict:
    """{path: array} from the fixture's flat layout (tensors raveled in the order of ``shapes``)."""
    out, i = {}, 0
    for path, shape in shapes.items():
        n = math.prod(shape)
        out[path] = vec[i : i + n].reshape(shape).copy()
        i += n
    assert i == vec.size
    return out


def fixture_tree(t: dict) -> dict:
    """The fixture's params tree, written out by hand from {path: array}."""
    assert len(t) == 7
    return {
        "wte": t["wte"],
        "blocks": [{"ln_1": {"g": t["blocks[0].ln_1.g"], "b": t["blocks[0].ln_1.b"]},
                    "attn": {"c_attn": {"w": t["blocks[0].attn.c_attn.w"], "b": t["blocks[0].attn.c_attn.b"]}}}],
        "ln_f": {"g": t["ln_f.g"], "b": t["ln_f.b"]},
    }


def tiny_grads(params: dict, rng, dtype=np.float32) -> dict:
    """Random gradients shaped like a GPT2 params tree (written out, not via gpt2np's walker)."""
    def like(a):
        return (rng.standard_normal(a.shape) * 0.1).astype(dtype)

    def walk(t):
        if isinstance(t, dict):
            return {k: walk(v) for k, v in t.items()}
        if isinstance(t, list):
            return [walk(v) for v in t]
        return like(t)

    return walk(params)


def test_fixture_records_its_maker(fixture):
    meta, _ = fixture
    assert meta["made_by"] == "scripts/make_optim_fixture.py"
    assert {"python", "numpy", "torch"} <= set(meta["versions"])


# --------------------------------------------------------------------------------------------
# AdamW against torch
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
@pytest.mark.parametrize("run", ["a", "b"])
def test_adamw_matches_torch_float64(fixture, run, layout):
    meta, arrays = fixture
    shapes, cfg = meta["shapes"], meta["adamw_runs"][run]
    pre = f"adamw_{run}/"

    def arrange(t):  # the strided layout: Fortran-order 2-D tensors, every other element of a buffer
        if layout == "contiguous":
            return t
        out = {}
        for p, a in t.items():
            if a.ndim == 2:
                out[p] = np.asfortranarray(a)
            else:
                buf = np.zeros(2 * a.size)
                buf[::2] = a
                out[p] = buf[::2]
            assert a.ndim == 1 or not out[p].flags.c_contiguous
        return out

    params = arrange(unflat(arrays[pre + "init"], shapes))
    tree = fixture_tree(params)
    opt = AdamW(tree, lr=cfg["lrs"][0], betas=cfg["betas"], eps=cfg["eps"], weight_decay=cfg["weight_decay"])
    assert [p for p, d in opt.decay.items() if d] == meta["decayed"]
    worst = 0.0
    for k, lr in enumerate(cfg["lrs"]):
        grads = fixture_tree(arrange(unflat(arrays[pre + "grads"][k], shapes)))
        opt.step(grads, lr=lr)
        want = unflat(arrays[pre + "after"][k], shapes)
        for p in shapes:
            worst = max(worst, float(np.max(np.abs(params[p] - want[p]))))
    assert worst < 1e-12, f"run {run}: params differ from torch's by up to {worst:.3g}"
    for name, ours in (("m", opt.m), ("v", opt.v)):
        want = unflat(arrays[pre + name], shapes)
        for path, a in zip(opt.paths, ours):
            np.testing.assert_allclose(a, want[path], rtol=1e-12, atol=1e-15, err_msg=f"{name} of {path}")


def test_adamw_matches_torch_float32_live():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    params = GPT2.random(TINY, seed=3).params
    theirs = {}  # path -> torch tensor, the same tree written out by hand

    def mirror(t, path=""):
        if isinstance(t, dict):
            for k, v in t.items():
                mirror(v, f"{path}.{k}" if path else k)
        elif isinstance(t, list):
            for i, v in enumerate(t):
                mirror(v, f"{path}[{i}]")
        else:
            theirs[path] = torch.tensor(t.copy(), requires_grad=True)

    mirror(params)
    groups = [{"params": [t for t in theirs.values() if t.ndim >= 2], "weight_decay": 0.1},
              {"params": [t for t in theirs.values() if t.ndim < 2], "weight_decay": 0.0}]
    topt = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.95), eps=1e-8)  # torch's own defaults otherwise
    opt = AdamW(params, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    for lr in [1e-3, 3e-3, 6e-4, 2e-3]:
        grads = tiny_grads(params, rng)
        total = clip_grad_norm(grads, max_norm=1.0)
        flat = dict(zip(opt.paths, [None] * len(opt.paths)))
        for path, g in zip(opt.paths, opt._matching_grads(grads)):
            flat[path] = g
            theirs[path].grad = torch.tensor(g)  # clipped by us; torch's clipping checked below
        for group in topt.param_groups:
            group["lr"] = lr
        topt.step()
        opt.step(grads, lr=lr)
        assert total > 1.0  # the clipping did act
    for path, p in zip(opt.paths, opt.params):  # float32 rounding only (torch's kernels may use FMA)
        assert p.dtype == np.float32
        np.testing.assert_allclose(p, theirs[path].detach().numpy(), rtol=2.4e-7, atol=2e-8, err_msg=path)


def test_clip_grad_norm_matches_torch_float32_live():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    grads = [(rng.standard_normal(s) * 3).astype(np.float32) for s in [(300, 70), (70,), (5, 4, 3)]]
    tensors = [torch.zeros(g.shape, requires_grad=True) for g in grads]
    for t, g in zip(tensors, grads):
        t.grad = torch.tensor(g.copy())
    want_total = torch.nn.utils.clip_grad_norm_(tensors, 2.0).item()
    total = clip_grad_norm(grads, max_norm=2.0)
    assert abs(total - want_total) <= 1e-6 * want_total, (total, want_total)
    for t, g in zip(tensors, grads):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=2e-6, atol=1e-9)


# --------------------------------------------------------------------------------------------
# Clipping and the schedule against torch
# --------------------------------------------------------------------------------------------


def test_clip_grad_norm_matches_torch(fixture):
    meta, arrays = fixture
    shapes = {str(i): tuple(s) for i, s in enumerate(meta["clip_shapes"])}
    for k, case in enumerate(meta["clip_cases"]):
        grads = list(unflat(arrays["clip/before"][k], shapes).values())
        want = list(unflat(arrays["clip/after"][k], shapes).values())
        want_total = float(arrays["clip/total"][k])
        total = clip_grad_norm(grads, max_norm=case["max_norm"])
        assert isinstance(total, float)
        if math.isfinite(want_total):
            assert abs(total - want_total) <= 1e-12 * want_total, (case, total, want_total)
        else:
            assert repr(total) == repr(want_total), (case, total)  # inf as inf, nan as nan
        for g, w in zip(grads, want):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=0, equal_nan=True, err_msg=str(case))


def test_cosine_lr_matches_torch_schedulers(fixture):
    meta, arrays = fixture
    for k, sch in enumerate(meta["schedules"]):
        args = {key: sch[key] for key in ("max_lr", "min_lr", "warmup_steps", "total_steps")}
        got = np.array([cosine_lr(s, **args) for s in range(sch["steps"])])
        np.testing.assert_allclose(got, arrays[f"sched{k}"], rtol=1e-12, atol=1e-15 * sch["max_lr"],
                                   err_msg=str(sch))


def test_cosine_lr_by_hand():
    lr = {s: cosine_lr(s, max_lr=1.0, warmup_steps=4, total_steps=8, min_lr=0.2) for s in range(12)}
    assert [lr[s] for s in range(4)] == [0.25, 0.5, 0.75, 1.0]  # (s + 1) / W
    assert lr[4] == 1.0  # the decay starts from max_lr
    assert lr[6] == pytest.approx(0.6, abs=1e-15)  # halfway: min + (max - min) / 2
    assert lr[5] == pytest.approx(0.2 + 0.4 * (1 + math.sqrt(0.5)), abs=1e-15)  # cos(π/4)
    assert lr[8] == 0.2 and lr[11] == 0.2
    assert cosine_lr(0, max_lr=3e-4, warmup_steps=0, total_steps=10) == 3e-4  # no warm-up
    assert cosine_lr(5, max_lr=3e-4, warmup_steps=5, total_steps=5, min_lr=1e-5) == 1e-5


@pytest.mark.parametrize("kwargs, message", [
    ({"step": -1}, "step must be an integer >= 0"),
    ({"step": 1.5}, "step must be an integer >= 0"),
    ({"warmup_steps": 20}, "total_steps must be an integer >= warmup_steps=20"),
    ({"min_lr": 1.0}, "0 <= min_lr <= max_lr"),
    ({"warmup_steps": -2}, "warmup_steps must be an integer >= 0"),
])
def test_cosine_lr_refuses_bad_arguments(kwargs, message):
    args = {"step": 0, "max_lr": 1e-3, "warmup_steps": 2, "total_steps": 10, "min_lr": 0.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        cosine_lr(args.pop("step"), **args)


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------


def test_state_dict_round_trip_gives_bit_identical_steps(tmp_path):
    rng = np.random.default_rng(0)
    params = GPT2.random(TINY, seed=1).params
    grads = [tiny_grads(params, rng) for _ in range(5)]
    opt = AdamW(params, lr=1e-3, betas=(0.85, 0.97), eps=1e-7, weight_decay=0.05)
    for g in grads[:3]:
        opt.step(g, lr=opt.lr * 1.5)
    np.savez(tmp_path / "opt.npz", **opt.state_dict())
    resumed_params = copy.deepcopy(params)
    fresh_params = copy.deepcopy(params)
    resumed = AdamW(resumed_params)  # the default hyperparameters: the state must bring them back
    with np.load(tmp_path / "opt.npz") as f:
        resumed.load_state_dict(f)
    assert (resumed.t, resumed.lr, resumed.betas) == (3, opt.lr, (0.85, 0.97))
    fresh = AdamW(fresh_params, lr=opt.lr, betas=(0.85, 0.97), eps=1e-7, weight_decay=0.05)
    for g in grads[3:]:
        opt.step(g)
        resumed.step(g)
        fresh.step(g)
    for a, b, c in zip(opt.params, resumed.params, fresh.params):
        assert a.tobytes() == b.tobytes()
        assert a.dtype == b.dtype == np.float32
    assert any(a.tobytes() != c.tobytes() for a, c in zip(opt.params, fresh.params))  # the state mattered
    for a, b in zip(opt.m + opt.v, resumed.m + resumed.v):
        assert a.tobytes() == b.tobytes()


def test_load_state_dict_names_what_is_wrong():
    params = GPT2.random(TINY, seed=1).params
    opt = AdamW(params)
    state = dict(opt.state_dict())
    del state["v/blocks[1].mlp.c_fc.w"]
    with pytest.raises(ValueError, match=r"missing v/blocks\[1\]\.mlp\.c_fc\.w \(expected shape \(8, 32\), float32\)"):
        AdamW(copy.deepcopy(params)).load_state_dict(state)
    state = dict(opt.state_dict(), **{"m/wpe": np.zeros((8, 8), np.float64)})
    with pytest.raises(ValueError, match=r"m/wpe: \(8, 8\) float64, expected \(8, 8\) float32"):
        AdamW(copy.deepcopy(params)).load_state_dict(state)
    state = dict(opt.state_dict(), **{"m/extra": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match="m/extra, which is not a parameter"):
        AdamW(copy.deepcopy(params)).load_state_dict(state)


def test_float32_stays_float32_and_no_tensor_sized_temporaries():
    rng = np.random.default_rng(2)
    big = rng.standard_normal((2048, 2048)).astype(np.float32)  # 16 MiB
    params = {"w": big, "b": np.zeros(2048, np.float32), "g": np.ones(7, np.float32)}
    grads = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()}
    opt = AdamW(params)
    opt.step(grads)  # warm up
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        _ = big * 2.0  # the tracer does see NumPy's buffers: a tensor-sized temporary shows
        assert tracemalloc.get_traced_memory()[1] >= big.nbytes
        del _
        tracemalloc.reset_peak()
        opt.step(grads, lr=1e-3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < big.nbytes / 16, f"a step allocated {peak} bytes at its peak"
    for arrays in (opt.params, opt.m, opt.v):
        assert all(a.dtype == np.float32 for a in arrays)
    assert params["w"] is big and opt.params[opt.paths.index("w")] is big  # updated in place


def test_clip_grad_norm_works_in_place_and_keeps_float32():
    g = {"a": np.full((3, 4), 2.0, np.float32), "b": [np.full(4, 2.0, np.float32)]}
    keep = g["a"]
    total = clip_grad_norm(g, max_norm=2.0)
    assert total == 8.0  # √(16 · 2²)
    assert g["a"] is keep and g["a"].dtype == np.float32
    np.testing.assert_allclose(g["a"], 2.0 * 2.0 / (8.0 + 1e-6), rtol=1e-7)
    assert clip_grad_norm(g, max_norm=5.0) == pytest.approx(2.0, rel=1e-6)  # not clipped again
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="max_norm must be a positive number"):
            clip_grad_norm(g, max_norm=bad)


def test_clip_grad_norm_to_inf_only_measures():
    """max_norm=inf, as torch allows: the norm is returned and nothing is scaled."""
    g = {"a": np.full((3, 4), 2.0, np.float32), "b": np.full(4, 2.0, np.float64)}
    before = {k: v.copy() for k, v in g.items()}
    assert clip_grad_norm(g, max_norm=math.inf) == 8.0  # √(16 · 2²)
    for k in g:
        assert g[k].tobytes() == before[k].tobytes()
    g["a"][0, 0] = np.inf  # an infinite norm: inf/inf is NaN, so every gradient becomes NaN (torch too)
    assert clip_grad_norm(g, max_norm=math.inf) == math.inf
    assert np.isnan(g["b"]).all()


def test_read_only_params_are_refused(tmp_path):
    model = GPT2.random(TINY, seed=0)
    model.save(tmp_path / "m.npz")
    loaded = GPT2.load(tmp_path / "m.npz")  # memory-mapped, read-only
    with pytest.raises(ValueError, match=r"params wte is read-only .* make a writable copy first"):
        AdamW(loaded.params)
    AdamW(copy.deepcopy(loaded.params))  # what the message suggests works
    params = copy.deepcopy(model.params)
    params["blocks"][1]["attn"]["c_proj"]["b"].flags.writeable = False
    with pytest.raises(ValueError, match=r"params blocks\[1\]\.attn\.c_proj\.b is read-only"):
        AdamW(params)


def test_grads_must_match_the_params():
    rng = np.random.default_rng(0)
    params = GPT2.random(TINY, seed=0).params
    opt = AdamW(params)

    def broken(edit):
        g = tiny_grads(params, rng)
        edit(g)
        return g

    cases = [
        (lambda g: g["blocks"][0]["mlp"]["c_fc"].__setitem__("w", np.zeros((8, 31), np.float32)),
         r"grads blocks\[0\]\.mlp\.c_fc\.w: shape \(8, 31\), expected the parameter's \(8, 32\)"),
        (lambda g: g["ln_f"].__setitem__("g", np.zeros(8, np.float64)),
         r"grads ln_f\.g: dtype float64, expected the parameter's float32"),
        (lambda g: g["blocks"][1]["ln_2"].pop("b"),
         r"grads is missing blocks\[1\]\.ln_2\.b \(expected an array of shape \(8,\), float32\)"),
        (lambda g: g.__setitem__("wte", "zeros"),
         r"grads wte: expected a NumPy array, found str"),
        (lambda g: g.__setitem__("lm_head", np.zeros(3, np.float32)),
         r"grads has lm_head, which is not a parameter"),
        (lambda g: g.__setitem__("wpe", [[0.0] * 8] * 8),
         r"grads wpe: expected a NumPy array of shape \(8, 8\), found a nested list/dict"),
    ]
    before = [p.copy() for p in opt.params]
    for edit, message in cases:
        with pytest.raises((ValueError, TypeError), match=message):
            opt.step(broken(edit))
    assert opt.t == 0 and all(np.array_equal(a, b) for a, b in zip(before, opt.params))  # nothing moved


def test_decay_classification_default_and_override():
    params = GPT2.random(TINY, seed=0).params
    opt = AdamW(params, lr=0.01, weight_decay=0.5)
    decayed = {p for p, d in opt.decay.items() if d}
    expected = {"wte", "wpe"} | {f"blocks[{i}].{m}.w" for i in range(2)
                                 for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}
    assert decayed == expected
    assert len(opt.decay) == 2 + 2 * 12 + 2  # every tensor classified
    # with zero gradients only the decay moves a weight: p ← p·(1 − lr·wd), the rest stays
    before = {p: a.copy() for p, a in zip(opt.paths, opt.params)}
    zeros = tiny_grads(params, np.random.default_rng(0))
    for g in opt._matching_grads(zeros):
        g[...] = 0
    opt.step(zeros)
    for path, a in zip(opt.paths, opt.params):
        want = before[path] * np.float32(1 - 0.01 * 0.5) if path in expected else before[path]
        assert np.array_equal(a, want), path
    only_wpe = AdamW(copy.deepcopy(params), decay=lambda path, p: path == "wpe")
    assert [p for p, d in only_wpe.decay.items() if d] == ["wpe"]
    assert decays_by_default("ln_f.g", params["ln_f"]["g"]) is False
    assert decays_by_default("wte", params["wte"]) is True


def test_lr_attribute_and_step_argument_are_the_same():
    rng = np.random.default_rng(4)
    params = GPT2.random(TINY, seed=0).params
    grads = [tiny_grads(params, rng) for _ in range(2)]
    a, b = AdamW(copy.deepcopy(params)), AdamW(copy.deepcopy(params))
    for g, lr in zip(grads, [1e-2, 3e-3]):
        a.lr = lr
        a.step(g)
        b.step(g, lr=lr)
    assert b.lr == 3e-3
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a.params, b.params))
    assert not all(np.array_equal(x, y) for x, y in zip(a.params, params_flat(params)))  # they moved
    with pytest.raises(ValueError, match="lr must be a finite number >= 0, got -1"):
        a.step(grads[0], lr=-1)


def params_flat(tree):
    """The arrays of a GPT2 params tree in gpt2np's order, written out by hand."""
    out = [tree["wte"], tree["wpe"]]
    for blk in tree["blocks"]:
        out += [blk["ln_1"]["g"], blk["ln_1"]["b"], blk["attn"]["c_attn"]["w"], blk["attn"]["c_attn"]["b"],
                blk["attn"]["c_proj"]["w"], blk["attn"]["c_proj"]["b"], blk["ln_2"]["g"], blk["ln_2"]["b"],
                blk["mlp"]["c_fc"]["w"], blk["mlp"]["c_fc"]["b"], blk["mlp"]["c_proj"]["w"], blk["mlp"]["c_proj"]["b"]]
    return out + [tree["ln_f"]["g"], tree["ln_f"]["b"]]


def test_bad_trees_and_hyperparameters_are_refused():
    params = GPT2.random(TINY, seed=0).params
    with pytest.raises(TypeError, match="params: expected a tree of nested dicts/lists of arrays"):
        AdamW(GPT2.random(TINY, seed=0))
    shared = copy.deepcopy(params)
    shared["blocks"][1]["ln_1"]["g"] = shared["blocks"][0]["ln_1"]["g"]
    with pytest.raises(ValueError, match=r"blocks\[1\]\.ln_1\.g is the same array as blocks\[0\]\.ln_1\.g"):
        AdamW(shared)
    with pytest.raises(ValueError, match=r"betas must be two numbers in \[0, 1\)"):
        AdamW(params, betas=(0.9, 1.0))
    with pytest.raises(TypeError, match="params wte: dtype int64, expected float32 or float64"):
        AdamW({"wte": np.zeros((2, 2), np.int64)})
