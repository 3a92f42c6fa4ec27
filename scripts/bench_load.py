"""Measure weight loading on a random full-size 124M checkpoint (no download needed).

    python scripts/bench_load.py [--dir /tmp/gpt2np-bench] [--size 124M]

Writes, once, a random 124M model as OpenAI's TF checkpoint layout (with the test-only bundle
writer of tests/helpers.py, proven byte-exact against TensorFlow) and as the
converted .npz, then times each load in a fresh subprocess and reports its peak RSS
(VmHWM) against the weights' size:

- GPT2.load(npz), cold-ish (first run) and warm (second run in a new process); without the zip CRC-32
- read_tf_checkpoint with and without the tensor CRC32C check
- GPT2.load + generating 8 tokens greedily (peak memory while loading and generating)
- hub.pretrained_npz("124M") from a local-folder mirror of the random checkpoint (plus the bundled
  tokenizer files): the registry's exact sizes and sha256 checks, the CRC checks and the conversion
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time


def hwm():
    # peak RSS of this process (VmHWM is reset by exec, unlike ru_maxrss)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

t0 = time.perf_counter()
import numpy as np
from gpt2np import GPT2
from gpt2np.formats import read_tf_checkpoint, flatten
base = hwm()
what, path = sys.argv[1], sys.argv[2]
t = time.perf_counter()
if what == "npz":
    model = GPT2.load(path)
elif what == "pretrained":
    # first call of pretrained_npz with a local-folder mirror: copy, verify, convert
    import shutil, pathlib
    from gpt2np import hub
    cache = pathlib.Path(path).parent / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    out = hub.pretrained_npz("124M", base_url=str(pathlib.Path(path).parent / "mirror"), cache_dir=cache,
                             progress=False)
    seconds = time.perf_counter() - t
    model = GPT2.load(out)
elif what == "npz_noverify":
    from gpt2np.formats import load_npz
    hp, params = load_npz(path, verify=False)
    model = GPT2(__import__("gpt2np").Config(**hp), params)
elif what == "tf":
    hp, params = read_tf_checkpoint(path, verify=False)
    model = GPT2(__import__("gpt2np").Config(**hp), params)
elif what == "tf_verify":
    hp, params = read_tf_checkpoint(path, verify=True)
    model = GPT2(__import__("gpt2np").Config(**hp), params)
elif what == "npz_generate":
    model = GPT2.load(path)
if what != "pretrained":
    seconds = time.perf_counter() - t
if what in ("tf", "npz", "npz_noverify", "npz_generate"):
    # touch every weight once (a forward pass does), so memory-mapped pages are counted
    total = sum(float(a.reshape(-1)[:: 4096].sum()) for a in flatten(model.params).values())
if what == "npz_generate":
    t = time.perf_counter()
    out = model.generate_ids(np.array([464, 2068, 7586, 21831]), max_new_tokens=8)
    gen_seconds = time.perf_counter() - t
else:
    gen_seconds = None
peak = hwm()
weights = sum(a.nbytes for a in flatten(model.params).values())
print(json.dumps({"what": what, "seconds": seconds, "generate_seconds": gen_seconds, "peak_rss": peak,
                  "baseline_rss": base, "weights_bytes": weights}))
"""


def make_checkpoint(folder: pathlib.Path, size: str) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import write_bundle  # noqa: E402

    from gpt2np import GPT2, Config
    from gpt2np.formats import flatten
    from gpt2np.formats.names import flat_to_tf

    model = GPT2.random(Config.preset(size), seed=0)
    tensors = {flat_to_tf(k): (v[None] if k.endswith(".w") else v) for k, v in flatten(model.params).items()}
    folder.mkdir(parents=True, exist_ok=True)
    write_bundle(folder / "model.ckpt", tensors)
    (folder / "hparams.json").write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    (folder / "checkpoint").write_text('model_checkpoint_path: "model.ckpt"\n'
                                       'all_model_checkpoint_paths: "model.ckpt"\n')
    model.save(folder.parent / f"gpt2-{size}.npz")


def child(what: str, path: pathlib.Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, what, str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/tmp/gpt2np-bench")
    ap.add_argument("--size", default="124M")
    args = ap.parse_args()
    base = pathlib.Path(args.dir)
    folder, npz = base / args.size, base / f"gpt2-{args.size}.npz"
    if not npz.is_file() or not (folder / "model.ckpt.index").is_file():
        t = time.perf_counter()
        make_checkpoint(folder, args.size)
        print(f"wrote a random {args.size} checkpoint and .npz under {base} in {time.perf_counter() - t:.1f} s")
    data = folder / "model.ckpt.data-00000-of-00001"
    print(f"data file {data.stat().st_size:,} bytes, npz {npz.stat().st_size:,} bytes")
    mirror = base / "mirror" / args.size
    mirror.mkdir(parents=True, exist_ok=True)
    for p in list(folder.iterdir()) + [ROOT / "gpt2np" / "assets" / n for n in ("encoder.json", "vocab.bpe")]:
        if not (mirror / p.name).exists():
            (mirror / p.name).symlink_to(p)
    runs = [("npz", npz, "GPT2.load(.npz), first run"), ("npz", npz, "GPT2.load(.npz), warm"),
            ("npz_noverify", npz, "load_npz(verify=False) -> GPT2, warm"),
            ("tf", folder, "TF checkpoint, no CRC (memory map)"),
            ("tf_verify", folder, "TF checkpoint, CRC32C verified"),
            ("npz_generate", npz, "GPT2.load(.npz) + generate 8 tokens")]
    if args.size == "124M":  # the registry's exact sizes and sha256 are those of 124M
        runs.append(("pretrained", folder, "pretrained_npz: copy+verify+convert"))
    results = []
    for what, path, label in runs:
        r = child(what, path)
        r["label"] = label
        results.append(r)
        extra = f", generate {r['generate_seconds']:.2f} s" if r["generate_seconds"] else ""
        print(f"{label:<40} {r['seconds']:6.3f} s{extra}   peak RSS {r['peak_rss'] / 2**20:7.1f} MiB "
              f"= {r['peak_rss'] / r['weights_bytes']:.2f} x weights ({r['weights_bytes'] / 2**20:.1f} MiB; "
              f"interpreter + numpy alone {r['baseline_rss'] / 2**20:.0f} MiB)")
    (ROOT / f"bench-weights-{args.size}.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
