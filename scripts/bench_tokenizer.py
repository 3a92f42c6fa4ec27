"""Benchmark gpt2np's tokenizer, against tiktoken when it is installed (optional).

    python scripts/bench_tokenizer.py [--prose FILE] [--code FILE] [--repeats N]

Measures, single-threaded, in CPU time of this process (median of the runs):
- encode throughput on English prose and on source code, each run with a fresh tokenizer
  (an empty piece cache: "cold"), median of the runs; tiktoken's ``encode_ordinary`` on the
  same text, and the ratio;
- one 32,000-character piece of random letters (no spaces): time, and ids equal to tiktoken's;
- decode throughput; the time to load the vocabulary;
- the piece cache after encoding many distinct pieces (it must stay within its bound).

Default texts come with every Python: prose = the docstrings of the standard library,
code = its source files (about 500 KB each).
"""

from __future__ import annotations

import argparse
import ast
import os
import pathlib
import platform
import random
import statistics
import string
import sys
import sysconfig
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from gpt2np import tokenizer as tokmod  # noqa: E402
from gpt2np.tokenizer import Tokenizer  # noqa: E402

LIMIT = 500_000


def stdlib_files():
    std = pathlib.Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in std.glob("*.py"))


def default_prose() -> str:
    parts, size = [], 0
    for path in stdlib_files():
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 200:
                    parts.append(doc)
                    size += len(doc)
        if size > LIMIT:
            break
    return "\n\n".join(parts)[:LIMIT]


def default_code() -> str:
    parts, size = [], 0
    for path in stdlib_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        size += len(text)
        if size > LIMIT:
            break
    return "".join(parts)[:LIMIT]


def load_reference():
    try:
        from make_tokenizer_fixture import load_tiktoken

        tiktoken, enc = load_tiktoken()
        return f"tiktoken {tiktoken.__version__}", enc
    except ImportError:
        return None, None


def timed_pair(ours, theirs, repeats):
    """Median CPU seconds of ours() and theirs() over ``repeats`` rounds.  The two run
    alternately and are timed by the CPU time of this process (both are single-threaded), so
    other jobs on a shared machine disturb the comparison as little as possible.
    Returns ((seconds, result), (seconds, result))."""
    times: list[list[float]] = [[], []]
    results = [None, None]
    for _ in range(repeats):
        for k, fn in enumerate((ours, theirs)):
            if fn is None:
                continue
            start = time.process_time()
            results[k] = fn()
            times[k].append(time.process_time() - start)
    return tuple((statistics.median(t) if t else None, r) for t, r in zip(times, results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prose", type=pathlib.Path, help="an English text file (default: stdlib docstrings)")
    parser.add_argument("--code", type=pathlib.Path, help="a source file (default: stdlib sources)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    texts = {
        "English prose": args.prose.read_text(encoding="utf-8") if args.prose else default_prose(),
        "source code": args.code.read_text(encoding="utf-8") if args.code else default_code(),
    }
    ref_name, enc = load_reference()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{platform.system()}; reference: {ref_name or 'tiktoken not installed (skipped)'}")

    tokmod._bundled_vocab.cache_clear()
    start = time.perf_counter()
    Tokenizer.gpt2()
    load_s = time.perf_counter() - start
    print(f"load vocabulary (encoder.json + vocab.bpe): {load_s * 1000:.0f} ms\n")

    rows = []
    for name, text in texts.items():
        n_bytes = len(text.encode("utf-8"))
        fresh = [Tokenizer.gpt2() for _ in range(args.repeats)]  # made outside the timing
        (ours_s, ids), (ref_s, ref_ids) = timed_pair(
            lambda: fresh.pop().encode_ordinary(text),
            None if enc is None else lambda: enc.encode_ordinary(text), args.repeats)
        row = [name, f"{n_bytes / 1000:.0f} KB", f"{len(ids):,}", f"{n_bytes / ours_s / 1e6:.2f} MB/s"]
        if enc is not None:
            row += [f"{n_bytes / ref_s / 1e6:.2f} MB/s", f"{ref_s / ours_s:.2f}", "yes" if ids == ref_ids else "NO"]
        else:
            row += ["-", "-", "-"]
        rows.append(row)
    header = ["encode (cold cache)", "size", "tokens", "gpt2np", "tiktoken", "ratio", "same ids"]
    print_table(header, rows)

    rng = random.Random(0)
    letters = "".join(rng.choice(string.ascii_letters) for _ in range(32000))
    fresh = [Tokenizer.gpt2() for _ in range(args.repeats)]
    (ours_s, ids), (ref_s, ref_ids) = timed_pair(
        lambda: fresh.pop().encode_ordinary(letters),
        None if enc is None else lambda: enc.encode_ordinary(letters), args.repeats)
    line = f"\n32,000 random letters, one piece: {ours_s * 1000:.1f} ms, {len(ids):,} tokens"
    if enc is not None:
        line += f" (tiktoken {ref_s * 1000:.1f} ms); same ids as tiktoken: {'yes' if ids == ref_ids else 'NO'}"
    print(line)

    tok = Tokenizer.gpt2()
    prose_ids = tok.encode_ordinary(texts["English prose"])
    (ours_s, _), (ref_s, _) = timed_pair(
        lambda: tok.decode(prose_ids), None if enc is None else lambda: enc.decode(prose_ids), args.repeats)
    line = f"decode: {len(prose_ids) / ours_s / 1e6:.1f} M tokens/s"
    if enc is not None:
        line += f" (tiktoken {len(prose_ids) / ref_s / 1e6:.1f} M tokens/s)"
    print(line)

    tok = Tokenizer.gpt2()
    words = " ".join("".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(6, 12)))
                     for _ in range(200_000))
    tok.encode_ordinary(words)
    print(f"piece cache after {len(words) / 1e6:.1f} MB of random words: {len(tok._pieces.remembered):,} entries "
          f"(bound {tok._pieces.limit:,})")


def print_table(header, rows):
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |")


if __name__ == "__main__":
    main()
