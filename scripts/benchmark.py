"""Benchmark gpt2np against transformers (PyTorch, CPU) and against the machine's memory bandwidth.

    python scripts/benchmark.py [--quick] [--parts decode,nocache,prefill,bandwidth,tokenizer,load,rss]
                                [--threads 2] [--repeats 5] [--out bench-results.json]

Every contender uses the same weights: a random full-size GPT-2 124M (``GPT2.random("124M",
seed=0)``), written once as OpenAI's TF checkpoint and as an ``.npz`` (with scripts/bench_load.py's
writer); gpt2np loads the ``.npz`` and transformers gets the same arrays in a GPT2LMHeadModel.

Parts (each reports the median of ``--repeats`` runs; the contenders run alternately, each in a
worker process of its own, so that both see the same load on a shared machine, with a pause of
SETTLE seconds before each run so that neither pays for the other's spinning idle threads):

- decode: tokens/s of greedy generation with the KV cache, prompt 16 tokens, 128 new tokens
  (``model.generate`` against transformers' ``generate``); time includes the prompt's prefill;
- nocache: the same without a cache: every step recomputes the whole sequence;
- prefill: one forward pass over 128 and 1024 tokens that fills a cache and returns the last
  position's logits (what generation does first);
- bandwidth: the floor for one decode step is reading every weight matrix once; its bytes over
  the read bandwidth measured with NumPy (a float32 GEMV over a 4096x8192 matrix, a GEMV over a
  matrix as large as the weights, and ``arr.sum()``) give the bound in tokens/s, and each
  contender's decode speed as a fraction of it.  Two bounds are reported: from the fastest read
  (the 128 MiB matrix, which may partly stay in a large L3 cache) and from the weights-size GEMV
  (which, like a decode step, streams from memory);
- tokenizer: encode MB/s on English prose, cold cache (scripts/bench_tokenizer.py) against tiktoken;
- load: ``GPT2.load`` of the ``.npz`` and the TF checkpoint (scripts/bench_load.py's child process);
- rss: peak RSS of a fresh process that loads the ``.npz`` and generates 128 tokens, against
  the weights' bytes.

transformers, torch, tiktoken and threadpoolctl are optional dev tools: a part whose contender
is missing is skipped and the table says so.  ``--threads N`` sets the BLAS/torch threads of both
contenders (default: all cores); ``--threads 1,2`` runs the model parts once per setting.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

PROMPT_LEN = 16
SEED = 0
# Seconds of quiet before every timed call.  A BLAS or OpenMP pool keeps its idle threads
# spinning for a while after a call (OpenBLAS about 0.1 s; torch's GNU OpenMP spins too),
# and on 2 cores those threads slow down whatever the other contender runs next.
SETTLE = 0.3


def prompt_ids(n: int):
    import numpy as np

    return (np.arange(n, dtype=np.int64) * 997 + 464) % 50257  # any fixed ids


# --------------------------------------------------------------------------------------------
# Workers: one process per contender, driven over a pipe (so the two never share threads)
# --------------------------------------------------------------------------------------------


class Ours:
    name = "gpt2np"

    def __init__(self, npz, threads):
        import numpy as np

        from gpt2np import GPT2

        self.np = np
        self.limits = None
        try:
            from threadpoolctl import threadpool_limits

            self.limits = threadpool_limits(threads)  # kept for the worker's lifetime
        except ImportError:
            pass
        self.model = GPT2.load(npz)
        self.model.generate_ids(prompt_ids(PROMPT_LEN), 4, stop_ids=())  # warm up: touch every page

    def decode(self, n_new):
        out = self.model.generate_ids(prompt_ids(PROMPT_LEN), n_new, stop_ids=())
        assert len(out) == n_new
        return out

    def nocache(self, n_new):
        np, ids = self.np, list(prompt_ids(PROMPT_LEN))
        for _ in range(n_new):
            ids.append(int(np.argmax(self.model(np.array(ids), last_only=True))))
        return ids[PROMPT_LEN:]

    def prefill(self, T):
        cache = self.model.new_cache(1, T)
        return self.model(prompt_ids(T)[None], cache=cache, last_only=True)

    def bandwidth(self, n_bytes):
        """Seconds of: GEMV on 4096x8192, GEMV on a matrix of n_bytes, sum() of that matrix."""
        np = self.np
        small = np.full((4096, 8192), 0.5, np.float32)
        big = np.full((max(1, n_bytes // (4 * 8192)), 8192), 0.5, np.float32)
        xs = np.full(8192, 0.25, np.float32)
        times = {}
        for name, fn, nb in (("gemv_4096x8192", lambda: small @ xs, small.nbytes),
                             ("gemv_weights_size", lambda: big @ xs, big.nbytes),
                             ("sum_weights_size", lambda: big.sum(), big.nbytes)):
            fn()
            runs = []
            for _ in range(5):
                t = time.perf_counter()
                fn()
                runs.append(time.perf_counter() - t)
            times[name] = {"bytes": int(nb), "seconds": statistics.median(runs)}
        return times

    def info(self):
        info = {"numpy": self.np.__version__}
        try:
            import threadpoolctl

            info["threadpool"] = threadpoolctl.threadpool_info()
        except ImportError:
            info["threadpool"] = "threadpoolctl not installed: BLAS threads left at their default"
        return info


class Theirs:
    name = "transformers"

    def __init__(self, npz, threads):
        import numpy as np
        import torch
        import transformers

        from gpt2np.formats import load_npz

        self.np, self.torch = np, torch
        torch.set_num_threads(threads)
        hparams, p = load_npz(npz)
        cfg = transformers.GPT2Config(n_embd=hparams["n_embd"], n_head=hparams["n_head"],
                                      n_layer=hparams["n_layer"], n_positions=hparams["n_ctx"],
                                      vocab_size=hparams["n_vocab"])
        model = transformers.GPT2LMHeadModel(cfg).eval()
        sd = {"wte.weight": p["wte"], "wpe.weight": p["wpe"],
              "ln_f.weight": p["ln_f"]["g"], "ln_f.bias": p["ln_f"]["b"]}
        for i, blk in enumerate(p["blocks"]):
            for ln in ("ln_1", "ln_2"):
                sd[f"h.{i}.{ln}.weight"], sd[f"h.{i}.{ln}.bias"] = blk[ln]["g"], blk[ln]["b"]
            for group, names in (("attn", ("c_attn", "c_proj")), ("mlp", ("c_fc", "c_proj"))):
                for n in names:  # Conv1D keeps OpenAI's [n_in, n_out] layout: no transpose
                    sd[f"h.{i}.{group}.{n}.weight"] = blk[group][n]["w"]
                    sd[f"h.{i}.{group}.{n}.bias"] = blk[group][n]["b"]
        sd = {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}  # copies out of the memory map
        missing, unexpected = model.transformer.load_state_dict(sd, strict=False)
        assert not unexpected and all(".attn.bias" in k or "masked_bias" in k for k in missing), missing
        model.tie_weights()
        self.model = model
        self.decode(4)

    def _generate(self, n_new, use_cache):
        ids = self.torch.tensor(prompt_ids(PROMPT_LEN)[None])
        with self.torch.inference_mode():
            out = self.model.generate(ids, attention_mask=self.torch.ones_like(ids), max_new_tokens=n_new,
                                      min_new_tokens=n_new, do_sample=False, use_cache=use_cache,
                                      pad_token_id=50256)
        return out[0, PROMPT_LEN:].tolist()

    def decode(self, n_new):
        return self._generate(n_new, True)

    def nocache(self, n_new):
        return self._generate(n_new, False)

    def prefill(self, T):
        ids = self.torch.tensor(prompt_ids(T)[None])
        with self.torch.inference_mode():
            return self.model(ids, use_cache=True, logits_to_keep=1).logits

    def info(self):
        import transformers

        return {"torch": self.torch.__version__, "transformers": transformers.__version__,
                "torch_threads": self.torch.get_num_threads(), "torch_config": self.torch.__config__.parallel_info()}


def _serve(kind, npz, threads, conn):
    try:
        worker = {"ours": Ours, "theirs": Theirs}[kind](npz, threads)
        conn.send(("ready", None))
    except Exception as e:  # noqa: BLE001 - reported to the parent
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    while True:
        msg = conn.recv()
        if msg is None:
            return
        method, arg = msg
        t, c = time.perf_counter(), time.process_time()
        result = getattr(worker, method)(arg) if arg is not None else getattr(worker, method)()
        seconds, cpu = time.perf_counter() - t, time.process_time() - c
        if hasattr(result, "shape"):
            result = None
        conn.send(("ok", (seconds, cpu, result)))


class Worker:
    def __init__(self, kind, npz, threads):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(kind, str(npz), threads, child), daemon=True)
        self.proc.start()
        status, err = self.conn.recv()
        if status != "ready":
            self.proc.join()
            raise RuntimeError(err)

    def call(self, method, arg=None):
        """(wall seconds, CPU seconds of the worker, result) of ``method(arg)`` in the worker."""
        self.conn.send((method, arg))
        status, value = self.conn.recv()
        return value

    def close(self):
        self.conn.send(None)
        self.proc.join(timeout=30)


# --------------------------------------------------------------------------------------------
# Parts
# --------------------------------------------------------------------------------------------


def alternate(workers, method, arg, repeats):
    """Median wall seconds per worker of ``method(arg)``, the workers taking turns each round;
    also every run's wall and CPU seconds, and each worker's last result."""
    runs = {w: {"wall": [], "cpu": []} for w in workers}
    results = {}
    for _ in range(repeats):
        for name, w in workers.items():
            time.sleep(SETTLE)
            wall, cpu, results[name] = w.call(method, arg)
            runs[name]["wall"].append(wall)
            runs[name]["cpu"].append(cpu)
    return {name: statistics.median(r["wall"]) for name, r in runs.items()}, runs, results


def model_parts(args, npz, threads, weight_bytes, read_bytes, rows, out):
    workers = {"gpt2np": Worker("ours", npz, threads)}
    try:
        workers["transformers"] = Worker("theirs", npz, threads)
    except Exception as e:  # noqa: BLE001
        print(f"transformers skipped: {e}")
        out["skipped"].append(f"transformers: {e}")
    tag = f"{threads} thread{'s' * (threads > 1)}"
    res = out.setdefault("threads", {}).setdefault(str(threads), {})
    res["info"] = {n: w.call("info")[2] for n, w in workers.items()}
    if isinstance(res["info"]["gpt2np"]["threadpool"], str) and threads != os.cpu_count():
        out["skipped"].append(f"threadpoolctl not installed: gpt2np ran with NumPy's default BLAS threads, "
                              f"not {threads}")
    n_new = 32 if args.quick else 128

    def record(key, label, unit, med, runs, per):
        ours, theirs = med.get("gpt2np"), med.get("transformers")
        res[key] = {"unit": unit, "median_seconds": med, "runs": runs, "per": per}
        v = {n: per / s for n, s in med.items()} if unit.endswith("/s") else {n: s * 1000 for n, s in med.items()}
        res[key]["value"] = v
        # transformers' time over gpt2np's: > 1 means gpt2np is faster (for tokens/s and for ms)
        ratio = None if theirs is None else theirs / ours
        res[key]["speed_ratio_gpt2np_over_transformers"] = ratio
        rows.append([f"{label} ({tag})", f"{v['gpt2np']:.1f} {unit}",
                     "-" if theirs is None else f"{v['transformers']:.1f} {unit}",
                     "-" if ratio is None else f"{ratio:.2f}x"])
        print(" | ".join(rows[-1]), flush=True)

    if "decode" in args.parts:
        med, runs, results = alternate(workers, "decode", n_new, args.repeats)
        record("decode", f"decode, KV cache, {PROMPT_LEN}+{n_new} tokens", "tokens/s", med, runs, n_new)
        if len(results) == 2:
            res["decode"]["same_tokens"] = results["gpt2np"] == results["transformers"]
    if "nocache" in args.parts:
        k = 16 if args.quick else n_new
        med, runs, _ = alternate(workers, "nocache", k, max(1, args.repeats // 2))
        record("nocache", f"decode, no cache, {PROMPT_LEN}+{k} tokens", "tokens/s", med, runs, k)
    if "prefill" in args.parts:
        for T in (128, 1024):
            med, runs, _ = alternate(workers, "prefill", T, args.repeats)
            record(f"prefill_{T}", f"prefill {T} tokens", "ms", med, runs, T)
    if "bandwidth" in args.parts:
        bw = workers["gpt2np"].call("bandwidth", read_bytes)[2]
        res["bandwidth"] = bw
        for name, m in bw.items():
            gbs = m["bytes"] / m["seconds"] / 1e9
            m["GB_per_s"] = gbs
            m["bound_tokens_per_s"] = gbs * 1e9 / read_bytes
        best = max(bw.values(), key=lambda m: m["GB_per_s"])
        res["bandwidth_bound_tokens_per_s"] = best["bound_tokens_per_s"]
        rows.append([f"read bandwidth, NumPy ({tag})",
                     ", ".join(f"{k.split('_')[0]} {m['bytes'] / 2**20:.0f} MiB {m['GB_per_s']:.1f} GB/s"
                               for k, m in bw.items()), "", ""])
        print(" | ".join(rows[-1]), flush=True)
        # two bounds: the fastest read seen (a matrix that may partly stay in a large L3 cache),
        # and a GEMV over a matrix as large as the weights (which, like decoding, cannot)
        bounds = [("bandwidth_bound", "bandwidth bound", best),
                  ("weights_size_bound", "bound from a weights-size GEMV", bw["gemv_weights_size"])]
        for key, label, m in bounds:
            line = [f"{label}: {read_bytes / 1e6:.0f} MB/token at {m['GB_per_s']:.1f} GB/s ({tag})",
                    f"{m['bound_tokens_per_s']:.1f} tokens/s", "", ""]
            if "decode" in res:
                frac = res["decode"]["value"]["gpt2np"] / m["bound_tokens_per_s"]
                res[f"decode_fraction_of_{key}"] = frac
                line[2] = f"gpt2np decode = {frac:.0%} of it"
                if "transformers" in res["decode"]["value"]:
                    line[3] = f"transformers {res['decode']['value']['transformers'] / m['bound_tokens_per_s']:.0%}"
            rows.append(line)
            print(" | ".join(rows[-1]), flush=True)
    for w in workers.values():
        w.close()


def tokenizer_part(args, rows, out):
    from bench_tokenizer import default_prose, load_reference, timed_pair

    from gpt2np.tokenizer import Tokenizer

    text = default_prose()
    n_bytes = len(text.encode("utf-8"))
    ref_name, enc = load_reference()
    repeats = max(2, args.repeats)
    fresh = [Tokenizer.gpt2() for _ in range(repeats)]  # a fresh (cold) piece cache for every run
    (ours_s, ids), (ref_s, ref_ids) = timed_pair(lambda: fresh.pop().encode_ordinary(text),
                                                 None if enc is None else lambda: enc.encode_ordinary(text), repeats)
    res = {"bytes": n_bytes, "gpt2np_MB_per_s": n_bytes / ours_s / 1e6, "reference": ref_name}
    row = [f"tokenizer encode, {n_bytes / 1e3:.0f} KB English prose, cold cache", f"{n_bytes / ours_s / 1e6:.2f} MB/s"]
    if enc is None:
        row += ["tiktoken not installed", "-"]
        out["skipped"].append("tiktoken not installed")
    else:
        res.update(tiktoken_MB_per_s=n_bytes / ref_s / 1e6, ratio=ref_s / ours_s, same_ids=ids == ref_ids)
        row += [f"{n_bytes / ref_s / 1e6:.2f} MB/s (tiktoken)", f"{ref_s / ours_s:.2f}x"]
    out["tokenizer"] = res
    rows.append(row)
    print(" | ".join(row), flush=True)


def load_part(args, base, npz, folder, weight_bytes, rows, out):
    from bench_load import child

    res = {}
    for what, path, label in (("npz", npz, "load .npz (GPT2.load, memory-mapped, CRC checked)"),
                              ("tf", folder, "load TF checkpoint (no CRC32C; memory map, pages read later)"),
                              ("tf_verify", folder, "load TF checkpoint (CRC32C verified)")):
        runs = [child(what, path)["seconds"] for _ in range(max(1, min(3, args.repeats)))]
        res[what] = {"median_seconds": statistics.median(runs), "runs_seconds": runs}
        rows.append([label, f"{statistics.median(runs) * 1000:.0f} ms", "", ""])
        print(" | ".join(rows[-1]), flush=True)
    out["load"] = res


# Peak RSS from /proc/self/status VmHWM (reset by exec) and getrusage's ru_maxrss (which a child
# process inherits from its parent across fork + exec, so it can report the parent's peak).
RSS_CHILD = r"""
import json, resource, sys, time


def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024


import numpy as np
from gpt2np import GPT2
from gpt2np.formats import flatten
imported = hwm()
model = GPT2.load(sys.argv[1])
n_new = int(sys.argv[2])
ids = (np.arange(16) * 997 + 464) % 50257
t = time.perf_counter()
out = model.generate_ids(ids, n_new, stop_ids=())
seconds = time.perf_counter() - t
peak = hwm()
weights = sum(a.nbytes for a in flatten(model.params).values())
print(json.dumps({"peak_rss": peak, "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "after_import_rss": imported, "weights_bytes": weights,
                  "new_tokens": len(out), "seconds": seconds}))
"""


def rss_part(args, npz, rows, out):
    n_new = 32 if args.quick else 128
    r = subprocess.run([sys.executable, "-c", RSS_CHILD, str(npz), str(n_new)], capture_output=True, text=True,
                       check=True, cwd=ROOT)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["ratio"] = res["peak_rss"] / res["weights_bytes"]
    out["rss"] = res
    rows.append([f"peak RSS, load .npz + generate {n_new} tokens (gpt2np)",
                 f"{res['peak_rss'] / 2**20:.0f} MiB = {res['ratio']:.2f}x weights",
                 f"weights {res['weights_bytes'] / 2**20:.0f} MiB", f"python+numpy {res['after_import_rss'] / 2**20:.0f} MiB"])
    print(" | ".join(rows[-1]), flush=True)


# --------------------------------------------------------------------------------------------


def machine_info():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "platform": platform.platform(), "loadavg": os.getloadavg(),
            "env": {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS", "OMP_", "MKL_"))}}


def print_table(rows):
    header = ["measurement", "gpt2np", "transformers / other", "ratio"]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer tokens and repeats (about a minute or two)")
    ap.add_argument("--parts", default="decode,nocache,prefill,bandwidth,tokenizer,load,rss")
    ap.add_argument("--threads", default=str(os.cpu_count()), help="comma-separated thread counts (default: all cores)")
    ap.add_argument("--repeats", type=int, default=None, help="runs per measurement (default 5, --quick 2)")
    ap.add_argument("--dir", default="/tmp/gpt2np-speedbench", help="where the random checkpoint is written")
    ap.add_argument("--out", default="bench-results.json")
    args = ap.parse_args()
    args.parts = set(args.parts.split(","))
    args.repeats = args.repeats or (2 if args.quick else 5)

    from bench_load import make_checkpoint

    from gpt2np import Config

    base = pathlib.Path(args.dir)
    folder, npz = base / "124M", base / "gpt2-124M.npz"
    if not npz.is_file() or not (folder / "model.ckpt.index").is_file():
        t = time.perf_counter()
        make_checkpoint(folder, "124M")  # GPT2.random(Config.preset("124M"), seed=0), .npz and TF layout
        print(f"wrote a random 124M checkpoint and .npz under {base} in {time.perf_counter() - t:.1f} s")
    cfg = Config.preset("124M")
    weight_bytes = 4 * cfg.num_params()
    # one decode step reads every matrix once: the blocks, the final norm and wte (the tied head);
    # of wpe only one row
    read_bytes = weight_bytes - 4 * (cfg.n_ctx - 1) * cfg.n_embd
    out = {"machine": machine_info(), "args": {k: sorted(v) if isinstance(v, set) else v for k, v in vars(args).items()},
           "weights_bytes": weight_bytes, "read_bytes_per_token": read_bytes, "skipped": []}
    print(f"machine: {out['machine']['nproc']} cores, {out['machine']['cpu']}, load average "
          f"{' '.join(f'{x:.1f}' for x in out['machine']['loadavg'])}")
    rows = []
    started = time.perf_counter()
    if args.parts & {"decode", "nocache", "prefill", "bandwidth"}:
        for threads in (int(t) for t in args.threads.split(",")):
            model_parts(args, npz, threads, weight_bytes, read_bytes, rows, out)
    if "tokenizer" in args.parts:
        tokenizer_part(args, rows, out)
    if "load" in args.parts:
        load_part(args, base, npz, folder, weight_bytes, rows, out)
    if "rss" in args.parts:
        rss_part(args, npz, rows, out)
    out["machine"]["loadavg_after"] = os.getloadavg()
    out["seconds"] = time.perf_counter() - started
    table = print_table(rows)
    out["table"] = table
    print()
    print(table)
    print(f"\nload average before {out['machine']['loadavg'][0]:.1f}, after {out['machine']['loadavg_after'][0]:.1f} "
          f"on {out['machine']['nproc']} cores; {out['seconds']:.0f} s")
    for s in out["skipped"]:
        print("skipped:", s)
    pathlib.Path(args.out).write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
