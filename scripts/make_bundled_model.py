"""Make the bundled model's package files (gpt2np/assets/gpt2np-mini/) from a finished training run.

    python scripts/make_bundled_model.py [RUN.npz] [--after EARLIER.npz ...] [--out DIR] [--corpus DIR]
                                         [--outside FILE] [--from-checkpoint | --random] [--heldout-files N]
    python scripts/make_bundled_model.py --write-sample     # the committed held-out sample

RUN.npz is the model ``gpt2np train`` wrote (default
~/.cache/gpt2np-train/bundled/gpt2np-mini.npz, the second stage of scripts/train_bundled_model.sh);
beside it, RUN's ``.csv`` (the loss curve), ``.ckpt.npz`` (the settings, the step count and the
wall time) and its run script, RUN's name with ``.sh`` or else ``run.sh`` in its folder (the exact
command; or give ``--command``).  A run in stages, each started (``--init``) from the weights the
one before ended with, names the earlier stages' models with ``--after``, in order (default with
the default RUN: gpt2np-small.npz beside it, the first stage): the card records each stage and
their totals, and its curve is the stages' curves one after another.  The corpus is the work folder
of scripts/make_corpus.py (default ~/.cache/gpt2np-corpus: its corpus_record.json and
corpus/heldout/*.txt).  Writes into --out (default gpt2np/assets/gpt2np-mini):

    model.npz           the weights rounded to float16 (metadata "storage": "float16", and a
                        short record of what the model is), computed in float32 when loaded
    card.json           the machine-readable model card (gpt2np.bundled.read_card)
    MODEL_CARD.md       the same for people
    training.csv        RUN's loss curve (after those of the earlier stages)
    corpus_record.json  the corpus's record
    licences/           from scripts/corpus_licences/: its README and the licence files of the
                        sources the corpus record names (their licences and attributions)

Every loss is measured on the written model.npz, as the package loads it, with gpt2np's own
scoring (gpt2np.scoring.perplexity, windows of n_ctx tokens, stride n_ctx: what
``gpt2np score --model gpt2np-mini FILE`` prints), in nats per token:

- heldout: the corpus's held-out chapters (corpus/heldout/*.txt), each file scored on its own,
  the mean over all their scored tokens (and per source);
- heldout_sample: tests/fixtures/bundled_heldout_sample.txt, a few KB of that held-out text
  committed so that tests/test_bundled.py can check the file against this number;
- outside: English narrative prose outside the corpus: the first chapter of Mark Twain's
  The Adventures of Tom Sawyer (1876; public domain; Project Gutenberg's text, as the Go
  snappy library ships it for its tests: Debian's golang-github-golang-snappy-dev 0.0.2-3,
  testdata/Mark.Twain-Tom.Sawyer.txt, pinned by sha256 below; fetched with apt-get download
  into the corpus work folder when missing), with its hard line breaks joined into paragraphs
  as the corpus's are; beside it the loss of an add-one-smoothed unigram model of the
  training text (scripts/make_corpus.py's baseline) on the same text;
- train and validation: from RUN's CSV (the mean training loss of the last 100 steps; the
  last validation loss, on the run's fixed validation windows).

Then greedy and sampled continuations of three prompts, the sha256 of model.npz and the date.

Stand-ins, for development while the run is going: ``--from-checkpoint`` takes the weights of
RUN's .ckpt.npz, ``--random`` a GPT2.random of the bundled config; either marks the card
``"stand_in": true`` (``gpt2np info`` says so, and tests/test_bundled.py fails on it), so that a
stand-in is never taken for the model.  ``--heldout-files N`` scores only the first N held-out
files (quicker; the card records how many).

``--write-sample`` (re)writes tests/fixtures/bundled_heldout_sample.txt and its .json record
from the corpus's held-out text: the first paragraphs of the first held-out chapter of each
source (Austen's, then the Bible's), up to SAMPLE_BYTES each, cut at a sentence end.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import hashlib
import importlib.util
import json
import pathlib
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gpt2np import GPT2, Tokenizer, __version__  # noqa: E402
from gpt2np.bundled import CARD_FORMAT, sha256  # noqa: E402
from gpt2np.config import BUNDLED_MODEL, PRESETS  # noqa: E402
from gpt2np.formats import save_npz  # noqa: E402
from gpt2np.generation import generate_text  # noqa: E402
from gpt2np.scoring import perplexity  # noqa: E402
from gpt2np.train import RunPaths, TrainSettings  # noqa: E402

DEFAULT_RUN = pathlib.Path.home() / ".cache/gpt2np-train/bundled/gpt2np-mini.npz"
DEFAULT_AFTER = [DEFAULT_RUN.parent / "gpt2np-small.npz"]  # the first stage, before DEFAULT_RUN
DEFAULT_CORPUS = pathlib.Path("~/.cache/gpt2np-corpus")
DEFAULT_OUT = ROOT / "gpt2np" / "assets" / BUNDLED_MODEL
SAMPLE = ROOT / "tests" / "fixtures" / "bundled_heldout_sample.txt"
SAMPLE_BYTES = 3000  # per source
LICENCES = ROOT / "scripts" / "corpus_licences"

OUTSIDE = {
    "text": "Mark Twain, The Adventures of Tom Sawyer (1876), its preface and first chapter",
    "licence": "public domain (the novel, 1876; Project Gutenberg's text); the Debian package that "
               "ships it is BSD-3-Clause (the Go snappy library's test data)",
    "package": {"registry": "debian", "name": "golang-github-golang-snappy-dev", "version": "0.0.2-3",
                "file": "golang-github-golang-snappy-dev_0.0.2-3_all.deb",
                "sha256": "c44efb6569d1bb3b566593eb7247320766e213ade3f1a5c96e92a519a3b61313"},
    "member": "usr/share/gocode/src/github.com/golang/snappy/testdata/Mark.Twain-Tom.Sawyer.txt",
    "sha256": "bd8df876d2a05017bb302f506883a37817d256f16f2205a932399276e08a81af",
    "normalisation": "paragraphs split at blank lines, each one's whitespace runs -> one space; the "
                     "producer's credit and the letter-spaced headings ('P R E F A C E') dropped",
}
OUTSIDE_TARGET = 5.0  # nats/token: the target on narrative prose outside the corpus

PROMPTS = ("It was a fine morning, and Elizabeth", "And God said to Noah,", "The old man looked at the boy and said")
GREEDY = {"max_new_tokens": 40}
SAMPLED = {"max_new_tokens": 40, "temperature": 0.8, "top_k": 40, "seed": 0}


def load_make_corpus():
    """scripts/make_corpus.py as a module (its unigram baseline, its normalisation)."""
    spec = importlib.util.spec_from_file_location("make_corpus", ROOT / "scripts" / "make_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- inputs ----------------------------------------------------------------------------------

def run_files(run: pathlib.Path) -> dict:
    paths = RunPaths.of(run)
    return {"model": paths.out, "checkpoint": paths.checkpoint, "csv": paths.csv, "tokens": paths.tokens}


def read_weights(files: dict, how: str, seed: int = 0) -> GPT2:
    """The trained model (float32): RUN.npz, its checkpoint's weights, or a random stand-in."""
    if how == "random":
        return GPT2.random(PRESETS[BUNDLED_MODEL], seed=seed)
    if how == "checkpoint":
        from gpt2np.train import load_checkpoint

        ck = load_checkpoint(files["checkpoint"])
        return GPT2(ck.config, ck.params).astype(np.float32)
    return GPT2.load(files["model"]).astype(np.float32)


def read_csv(path: pathlib.Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in csv.DictReader(f)]


def training_record(files: dict, model: GPT2, command: str | None) -> dict:
    """Steps, tokens, wall time and settings from the checkpoint; losses from the CSV."""
    out = {"command": command, "model": files["model"].name}
    if files["checkpoint"].is_file():
        from gpt2np.train import TrainSettings, read_checkpoint_meta

        meta = read_checkpoint_meta(files["checkpoint"])
        settings = TrainSettings.from_dict(meta["settings"])
        seq_len = settings.resolved_seq_len(model.config.n_ctx)
        step = int(meta["step"])
        out.update(steps=step, planned_steps=settings.steps, batch_size=settings.batch_size,
                   grad_accum=settings.grad_accum, seq_len=seq_len,
                   tokens_trained=step * settings.batch_size * settings.grad_accum * seq_len,
                   tokens_trained_means="steps x batch_size x grad_accum x seq_len predicted tokens",
                   wall_time_s=round(float(meta["elapsed"]), 1), settings=settings.to_dict())
    if files["csv"].is_file():
        rows = read_csv(files["csv"])
        train = [r["train_loss"] for r in rows if r.get("train_loss") is not None]
        val = [(r["step"], r["val_loss"]) for r in rows if r.get("val_loss") is not None]
        out["curve"] = "training.csv"
        out["train_loss_last_100_steps"] = round(float(np.mean(train[-100:])), 4) if train else None
        if val:
            out["val_loss"] = round(val[-1][1], 4)
            out["val_loss_step"] = int(val[-1][0])
    return out


def script_of(run: pathlib.Path) -> pathlib.Path:
    """The run script of RUN.npz: RUN.sh (a later stage beside the first), else run.sh in its folder."""
    own = run.with_suffix(".sh")
    return own if own.is_file() else run.parent / "run.sh"


def command_of(run_script: pathlib.Path | None) -> str | None:
    """The ``gpt2np train`` command of a run script as it starts a run: its continuation lines
    joined, ``exec`` and a trailing ``"$@"`` dropped, an array the script sets (such as
    ``INIT=(--init new)``, which ``--resume`` empties) written out, whitespace collapsed."""
    if run_script is None or not run_script.is_file():
        return None
    text = run_script.read_text(encoding="utf-8").replace("\\\n", " ")
    arrays = dict(re.findall(r"^(\w+)=\(([^)]*)\)", text, flags=re.M))
    for line in text.splitlines():
        if "gpt2np train" in line:
            line = re.sub(r'\s*"\$@"\s*$', "", line.strip())
            line = re.sub(r'"\$\{(\w+)\[@\]\}"', lambda m: arrays.get(m.group(1), m.group(0)), line)
            return " ".join(re.sub(r"^exec\s+", "", line).split())
    return None


STAGE_TOTALS = ("steps", "tokens_trained", "wall_time_s")


def staged_training(stages: list[dict]) -> dict:
    """One record of a run in stages, each started from the weights the one before ended with: the last
    stage's settings and losses, the stages' totals, their commands joined with ``&&`` (one shell line
    that makes the model), and each stage's own record under ``"stages"``."""
    if len(stages) == 1:
        return stages[0]
    out = {**stages[-1], "command": " && ".join(s.get("command") or "?" for s in stages)}
    for key in STAGE_TOTALS:
        values = [s.get(key) for s in stages]
        out[key] = None if None in values else round(sum(values), 1) if key == "wall_time_s" else sum(values)
    out.pop("planned_steps", None)
    if out.get("val_loss_step") is not None:  # counted as the joined curve counts it
        out["val_loss_step"] += sum(s["steps"] for s in stages[:-1])
    out["stages"] = [{k: v for k, v in s.items() if k != "curve"} for s in stages]
    return out


def joined_curve(csvs: list[pathlib.Path], stages: list[dict], dest: pathlib.Path) -> None:
    """The stages' CSVs one after another in one file, each stage's ``step`` and ``elapsed_s`` counted
    on from the end of the stages before it (their steps and wall times)."""
    steps = elapsed = 0
    with open(dest, "w", newline="", encoding="utf-8") as f:
        writer = None
        for path, stage in zip(csvs, stages):
            with open(path, newline="", encoding="utf-8") as g:
                reader = csv.DictReader(g)
                if writer is None:
                    writer = csv.DictWriter(f, fieldnames=reader.fieldnames, lineterminator="\n")
                    writer.writeheader()
                for row in reader:
                    row["step"] = str(int(row["step"]) + steps)
                    if row.get("elapsed_s"):
                        row["elapsed_s"] = f"{float(row['elapsed_s']) + elapsed:.3f}"
                    writer.writerow(row)
            steps += stage["steps"]
            elapsed += stage["wall_time_s"]


# ---- texts -----------------------------------------------------------------------------------

def outside_text(corpus: pathlib.Path, path: pathlib.Path | None) -> tuple[pathlib.Path, str]:
    """(file, normalised text) of the text outside the corpus; fetched into the corpus work
    folder when no file is given and it is not there yet."""
    if path is None:
        path = corpus / "outside" / pathlib.Path(OUTSIDE["member"]).name
        if not path.is_file():
            fetch_outside(path)
    raw = path.read_bytes()
    if path.name == pathlib.Path(OUTSIDE["member"]).name and hashlib.sha256(raw).hexdigest() != OUTSIDE["sha256"]:
        raise SystemExit(f"{path}: sha256 differs from the pinned {OUTSIDE['sha256']}")
    return path, normalise_outside(raw.decode("utf-8"))


def fetch_outside(dest: pathlib.Path) -> None:
    pkg = OUTSIDE["package"]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", f"{pkg['name']}={pkg['version']}"], cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL)
        deb = pathlib.Path(tmp) / pkg["file"]
        if sha256(deb) != pkg["sha256"]:
            raise SystemExit(f"{deb.name}: sha256 differs from the pinned {pkg['sha256']}")
        subprocess.run(["dpkg-deb", "-x", str(deb), str(pathlib.Path(tmp) / "x")], check=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(pathlib.Path(tmp) / "x" / OUTSIDE["member"], dest)


def normalise_outside(text: str) -> str:
    """Paragraphs as the corpus has them: one line each, a blank line between them."""
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    keep = [p for p in paragraphs if p and not p.startswith("Produced by") and not re.fullmatch(r"(?:\S ){2,}\S", p)]
    return "\n\n".join(keep) + "\n"


def excerpt(text: str, limit: int) -> str:
    """Whole paragraphs of ``text`` up to ``limit`` UTF-8 bytes; the first that does not fit is
    cut after its last sentence end that fits (if any), and the excerpt ends there."""
    out, size = [], 0
    for p in text.split("\n\n"):
        p = p.strip()
        n = len(p.encode()) + (2 if out else 0)
        if size + n <= limit:
            out.append(p)
            size += n
            continue
        room = limit - size - (2 if out else 0)
        ends = [m.end() for m in re.finditer(r"[.!?;:]['\"’”)]?(?= )", p) if len(p[:m.end()].encode()) <= room]
        if ends:
            out.append(p[:ends[-1]])
        break
    return "\n\n".join(out) + "\n"


def write_sample(corpus: pathlib.Path, dest: pathlib.Path = SAMPLE) -> None:
    record = json.loads((corpus / "corpus_record.json").read_text(encoding="utf-8"))
    held = corpus / "corpus" / "heldout"
    parts, used = [], []
    for source in ("austen", "bible"):
        first = next(r for r in record["heldout"]["files"] if r["source"] == source)
        path = corpus / "corpus" / first["file"]
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != first["sha256"]:
            raise SystemExit(f"{path}: differs from the corpus record")
        parts.append(excerpt(data.decode("utf-8"), SAMPLE_BYTES).rstrip("\n"))
        used.append({"file": first["file"], "book": first["book"], "sha256": first["sha256"]})
    text = "\n\n".join(parts) + "\n"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text, encoding="utf-8")
    meta = {
        "made_by": "scripts/make_bundled_model.py",
        "what": "a few KB of the bundled model's held-out corpus text (public domain): the first paragraphs "
                f"of the first held-out chapter of each source, up to {SAMPLE_BYTES} bytes each, cut at a "
                "sentence end; tests/test_bundled.py checks the model's loss on it against card.json",
        "from": used, "corpus_record_script_sha256": record.get("script_sha256"), "held_out_folder": str(held.name),
        "bytes": len(text.encode()), "sha256": hashlib.sha256(text.encode()).hexdigest(),
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "gpt2np": __version__},
    }
    dest.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {dest} ({meta['bytes']} bytes) and {dest.with_suffix('.json').name}", file=sys.stderr)


# ---- measuring -------------------------------------------------------------------------------

def score(model: GPT2, tok: Tokenizer, text: str) -> tuple[float, int]:
    """(mean nats/token, tokens scored) of ``text`` by gpt2np.scoring.perplexity, windows of n_ctx."""
    ids = tok.encode(text, allowed_special="all")
    result = perplexity(model, ids, max_length=model.config.n_ctx, stride=model.config.n_ctx)
    return result.nll, result.n_tokens


def heldout_losses(model: GPT2, tok: Tokenizer, corpus: pathlib.Path, limit: int | None) -> dict:
    files = sorted((corpus / "corpus" / "heldout").glob("*.txt"))
    if not files:
        raise SystemExit(f"{corpus / 'corpus' / 'heldout'}: no held-out texts (run scripts/make_corpus.py)")
    scored = files if limit is None else files[:limit]
    total, count, by = 0.0, 0, {}
    for path in scored:
        nll, n = score(model, tok, path.read_text(encoding="utf-8"))
        source = path.stem.split("-", 1)[0]
        s = by.setdefault(source, [0.0, 0])
        s[0] += nll * n
        s[1] += n
        total += nll * n
        count += n
    return {"loss": round(total / count, 4), "tokens": count, "files": len(scored), "of_files": len(files),
            **{f"loss_{src}": round(s[0] / s[1], 4) for src, s in sorted(by.items())},
            "what": "the corpus's held-out chapters (corpus/heldout/*.txt), each file scored on its own"}


def train_counts(files: dict, corpus: pathlib.Path, tok: Tokenizer) -> Counter:
    """GPT-2 id counts of the training text, as scripts/make_corpus.py counts them: from the run's
    token files (minus the <|endoftext|> between documents), else by tokenizing corpus/train."""
    tokens = files["tokens"]
    if (tokens / "train.npy").is_file() and (tokens / "val.npy").is_file():
        counts = np.bincount(np.load(tokens / "train.npy"), minlength=tok.n_vocab)
        counts += np.bincount(np.load(tokens / "val.npy"), minlength=tok.n_vocab)
        counts[tok.eot_token] = 0
        return Counter({i: int(c) for i, c in enumerate(counts) if c})
    out = Counter()
    for path in sorted((corpus / "corpus" / "train").glob("*.txt")):
        out.update(tok.encode_ordinary(path.read_text(encoding="utf-8")))
    return out


def samples(model: GPT2, tok: Tokenizer) -> list[dict]:
    return [{"prompt": p, "greedy": generate_text(model, tok, p, **GREEDY),
             "sampled": generate_text(model, tok, p, **SAMPLED)} for p in PROMPTS]


# ---- the card --------------------------------------------------------------------------------

BRIEF = {"austen": "Jane Austen's novels", "bible": "a public-domain Bible translation",
         "novels": "six 19th-century novels by Melville, Conan Doyle, Carroll, Wells, Verne and Dickens",
         "tolstoy": "Tolstoy's War and Peace in the Maudes' translation"}


def in_words(items: list[str], sep: str = "; ", last: str = "; and ") -> str:
    """'a', 'a and b', 'a; b; and c' (the default separators suit items that hold commas)."""
    if len(items) <= 2:
        return " and ".join(items)
    return sep.join(items[:-1]) + last + items[-1]


def sources_in_brief(record: dict) -> str:
    """The corpus's sources in a few words each, 'a, b and c' (a source without a brief name: its
    record's text)."""
    return in_words([BRIEF.get(key, src.get("text", key)) for key, src in record.get("sources", {}).items()],
                    ", ", " and ")


def corpus_summary(record: dict) -> dict:
    sources = {}
    for key, src in record.get("sources", {}).items():
        lf = src.get("licence_file", "")
        sources[key] = {"text": src.get("text"), "licence": src.get("licence"), "attribution": src.get("attribution"),
                        "licence_file": "licences/" + pathlib.Path(lf).name if lf else None}
    train, held = record.get("train", {}).get("total", {}), record.get("heldout", {}).get("total", {})
    return {"about": in_words([s["text"] for s in sources.values()]) + " (public domain), normalised by "
                     "scripts/make_corpus.py",
            "sources": sources, "packages": record.get("packages"), "train_tokens": train.get("tokens"),
            "train_bytes": train.get("bytes"), "heldout_tokens": held.get("tokens"),
            "heldout_rule": record.get("heldout_rule"), "record": "corpus_record.json", "licences": "licences/",
            "unigram_baseline": record.get("unigram_baseline")}


def file_record(card: dict) -> dict:
    """The short record stored in model.npz itself (what the file is, without its own sha256)."""
    keep = ("name", "what", "stand_in", "config", "parameters", "date")
    rec = {k: card[k] for k in keep if k in card}
    rec["card"] = "card.json"
    rec["corpus"] = {k: card["corpus"][k] for k in ("about", "sources", "train_tokens", "licences")}
    rec["training"] = {k: v for k, v in card["training"].items() if k in ("command", "steps", "tokens_trained",
                                                                             "wall_time_s", "date")}
    rec["losses"] = {"train": card["losses"]["train"], "validation": card["losses"]["validation"]}
    return rec


def model_card_md(card: dict) -> str:
    c, tr, lo, co = card["config"], card["training"], card["losses"], card["corpus"]
    f = card["file"]
    lines = [f"# {card['name']}: model card", ""]
    if card.get("stand_in"):
        lines += ["**STAND-IN**: these weights are not the final bundled model (a partly trained or random model, "
                  "for development). Run `scripts/make_bundled_model.py` on the finished training run.", ""]
    lines += [
        f"**What it is**: {card['what']}.", "",
        "It is **not OpenAI's GPT-2**: it has GPT-2's architecture and tokenizer, but its own weights, learned "
        "from its small corpus only. For OpenAI's weights use a size such as `--model 124M` (downloaded once).", "",
        "## Using it", "",
        f"    gpt2np generate --model {card['name']} \"It was a fine morning, and\" --temperature 0.8 --top-k 40 --seed 0",
        f"    gpt2np score --model {card['name']} FILE.txt",
        f"    gpt2np info {card['name']}",
        f"    python -c \"from gpt2np import GPT2; m = GPT2.from_pretrained('{card['name']}')\"", "",
        "It is package data: it needs no network and no cache.", "",
        "## Model", "",
        f"- GPT-2's architecture and tokenizer: {c['n_layer']} layers, {c['n_embd']} wide, {c['n_head']} heads, "
        f"n_ctx {c['n_ctx']}, GPT-2's {c['n_vocab']:,}-token vocabulary; {card['parameters']:,} parameters.",
        f"- `{f['name']}`: {f['bytes']:,} bytes, weights stored as {f['storage']}, computed in {f['computed_in']}; "
        f"sha256 `{f['sha256']}`.", "",
        "## Corpus", "",
        f"{co['about']}: {co['train_tokens']:,} training tokens, {co['heldout_tokens']:,} held out "
        f"({co['heldout_rule']}). The record of how it was made is `corpus_record.json`; the licence texts are in "
        "`licences/`.", "",
    ]
    for key, src in co["sources"].items():
        lines += [f"- **{key}**: {src['text']}. Licence: {src['licence']}. {src['attribution']}"
                  + (f" (`{src['licence_file']}`)" if src.get("licence_file") else "")]
    lines += ["", "## Training", ""]
    stages = tr.get("stages")
    if stages:
        lines += [f"In {len(stages)} stages, each started (`--init`) from the weights the one before ended with. "
                  "The exact commands (`gpt2np train`, each resumable with `--resume`), in order:", ""]
        lines += ["    " + (s.get("command") or "?") for s in stages] + [""]
        for i, s in enumerate(stages, 1):
            lines += [f"- stage {i}: " + _steps_line(s, _lr(s.get("settings")))]
        lines += ["", f"In all: {_steps_line(tr)} The loss curve is `training.csv` (the stages one after another).", ""]
    else:
        if tr.get("command"):
            lines += ["The exact command (`gpt2np train`, resumable with `--resume`):", "", "    " + tr["command"], ""]
        if "steps" in tr:
            lines += [f"{_steps_line(tr)} The loss curve is `training.csv`.", ""]
    lines += ["## Losses (nats per token)", "",
              f"Measured on `{f['name']}` as the package loads it, with `gpt2np.scoring.perplexity` "
              f"(windows of {c['n_ctx']} tokens, stride {c['n_ctx']}: what `gpt2np score` prints).", "",
              "| text | loss | tokens |", "|---|---|---|",
              f"| training (mean of the run's last 100 steps) | {_fmt(lo['train'])} | |",
              f"| validation (the run's last evaluation) | {_fmt(lo['validation'])} | |"]
    h = lo["heldout"]
    part = f" ({h['files']} of {h['of_files']} files)" if h["files"] != h["of_files"] else ""
    lines += [f"| the corpus's held-out chapters{part} | {_fmt(h['loss'])} | {h['tokens']:,} |"]
    for k, v in h.items():
        if k.startswith("loss_"):
            lines += [f"| held out, {k[5:]} | {_fmt(v)} | |"]
    s = lo["heldout_sample"]
    lines += [f"| `{s['file']}` | {_fmt(s['loss'])} | {s['tokens']:,} |"]
    o = lo["outside"]
    lines += [f"| outside the corpus: {o['text']} | {_fmt(o['loss'])} | {o['tokens']:,} |",
              f"| the same text, unigram model of the corpus | {_fmt(o['unigram'])} | |", "",
              f"The target outside the corpus is at most {o['target']} nats per token, against "
              f"{_fmt(o['unigram'])} for a unigram model of the corpus on the same text: "
              f"{'met' if o['meets_target'] else 'not met'} ({_fmt(o['loss'])}). The outside text: "
              f"{o['licence']}.", "",
              "## Samples", "",
              f"Greedy (`{json.dumps(card['sample_settings']['greedy'])}`) and sampled "
              f"(`{json.dumps(card['sample_settings']['sampled'])}`) continuations of three prompts (in italics):", ""]
    for smp in card["samples"]:
        lines += [f"- greedy: *{_md(smp['prompt'])}*{_md(smp['greedy'])}",
                  f"- sampled: *{_md(smp['prompt'])}*{_md(smp['sampled'])}"]
    lines += ["", f"Made on {card['date']} by `{card['made_by']}` (gpt2np {card['versions']['gpt2np']}, "
                  f"NumPy {card['versions']['numpy']}, Python {card['versions']['python']})."]
    return "\n".join(lines) + "\n"


def _steps_line(tr: dict, extra: str = "") -> str:
    """"6,000 steps of 8 x 256 tokens: 12,288,000 tokens trained, 3.69 h of wall time." """
    if "steps" not in tr:
        return "?"
    per = f"{tr['batch_size']} x {tr['seq_len']} tokens" if "batch_size" in tr else "?"
    accum = f" x {tr['grad_accum']}" if tr.get("grad_accum", 1) != 1 else ""
    wall = f", {tr['wall_time_s'] / 3600:.2f} h of wall time" if tr.get("wall_time_s") else ""
    return f"{tr['steps']:,} steps of {per}{accum}{extra}: {tr['tokens_trained']:,} tokens trained{wall}."


def _lr(settings: dict | None) -> str:
    """", lr 0.001 to 0.0001": the peak learning rate and where its schedule ends (the last step's)."""
    if not settings or settings.get("lr") is None:
        return ""
    st = TrainSettings.from_dict(settings)
    return f", lr {st.lr:g} to {st.lr_at(st.steps):g}"


def _fmt(x) -> str:
    return "?" if x is None else f"{x:.4f}"


def _md(text: str) -> str:
    """One line of Markdown: whitespace runs -> one space (a leading one kept), ``*`` and ``_`` escaped."""
    lead = " " if text[:1].isspace() else ""
    return lead + " ".join(text.split()).replace("*", r"\*").replace("_", r"\_")


# ---- main ------------------------------------------------------------------------------------

def make(run: pathlib.Path, out: pathlib.Path, corpus: pathlib.Path, *, how: str = "model", command=None,
         after=(), outside: pathlib.Path | None = None, heldout_files: int | None = None, date: str | None = None,
         sample: pathlib.Path = SAMPLE, seed: int = 0, log=print) -> dict:
    """Write the package files of the bundled model into ``out``; returns the card.  ``after``: the
    models of the earlier stages, in order (each later stage started from the one before)."""
    t0 = time.perf_counter()
    files = run_files(run)
    tok = Tokenizer.gpt2()
    record = json.loads((corpus / "corpus_record.json").read_text(encoding="utf-8"))
    trained = read_weights(files, how, seed)
    stand_in = how != "model"
    if command is None:
        command = command_of(script_of(run))
    if date is None:
        stamp = run.stat().st_mtime if how == "model" else time.time()
        date = datetime.datetime.fromtimestamp(stamp, datetime.timezone.utc).date().isoformat()
    earlier = [run_files(pathlib.Path(a)) for a in after]
    for f in earlier:
        if not (f["checkpoint"].is_file() and f["csv"].is_file()):
            raise SystemExit(f"--after {f['model']}: its .ckpt.npz and .csv are needed beside it")
    stages = [training_record(f, trained, command_of(script_of(f["model"]))) for f in earlier]
    training = staged_training(stages + [training_record(files, trained, command)])
    training["date"] = date

    card = {
        "format": CARD_FORMAT,
        "name": BUNDLED_MODEL,
        "stand_in": stand_in,
        "stand_in_source": {"model": None, "checkpoint": str(files["checkpoint"]), "random": f"GPT2.random(seed={seed})"}[
            how] if stand_in else None,
        "what": "a small demonstration model of GPT-2's architecture and tokenizer, trained from scratch by "
                "gpt2np (`gpt2np train`) on public-domain English prose (" + sources_in_brief(record) + "); "
                "it is not OpenAI's GPT-2",
        "not_openai_gpt2": True,
        "config": trained.config.to_dict(),
        "parameters": trained.num_params(),
        "corpus": corpus_summary(record),
        "training": training,
        "date": date,
    }
    card["losses"] = {"unit": "nats per token", "train": training.get("train_loss_last_100_steps"),
                      "validation": training.get("val_loss")}

    out.mkdir(parents=True, exist_ok=True)
    npz = out / "model.npz"
    save_npz(npz, trained.config.to_dict(), trained.params, metadata={"storage": "float16", "model": file_record(card)})
    model = GPT2.load(npz)  # what the package loads: float16 upcast to float32
    assert model.dtype == np.float32
    log(f"wrote {npz} ({npz.stat().st_size:,} bytes) in {time.perf_counter() - t0:.1f} s")

    sample_text = sample.read_text(encoding="utf-8")
    s_loss, s_n = score(model, tok, sample_text)
    s32, _ = score(trained, tok, sample_text)
    card["losses"]["heldout_sample"] = {
        "file": str(sample.relative_to(ROOT)) if sample.is_relative_to(ROOT) else str(sample),
        "sha256": hashlib.sha256(sample_text.encode()).hexdigest(), "tokens": s_n, "loss": round(s_loss, 6),
        "loss_before_float16": round(s32, 6)}
    log(f"held-out sample: {s_loss:.4f} ({s_n} tokens; float32 weights {s32:.4f}) at {time.perf_counter() - t0:.1f} s")
    card["losses"]["heldout"] = heldout_losses(model, tok, corpus, heldout_files)
    log(f"held out: {card['losses']['heldout']['loss']:.4f} ({card['losses']['heldout']['tokens']:,} tokens) "
        f"at {time.perf_counter() - t0:.1f} s")

    o_path, o_text = outside_text(corpus, outside)
    o_loss, o_n = score(model, tok, o_text)
    mc = load_make_corpus()
    counts = train_counts(files, corpus, tok)
    uni = mc.unigram_nats(counts, Counter(tok.encode(o_text, allowed_special="all")), tok.n_vocab)
    uni_sample = mc.unigram_nats(counts, Counter(tok.encode(sample_text, allowed_special="all")), tok.n_vocab)
    outside_record = {k: OUTSIDE[k] for k in ("text", "licence", "package", "sha256", "normalisation")}
    if outside is not None and o_path.name != pathlib.Path(OUTSIDE["member"]).name:
        outside_record = {"text": o_path.name, "licence": "see the file", "sha256": sha256(o_path)}
    card["losses"]["outside"] = {**outside_record, "tokens": o_n, "loss": round(o_loss, 4),
                                 "unigram": round(uni, 4), "target": OUTSIDE_TARGET,
                                 "meets_target": bool(o_loss <= OUTSIDE_TARGET)}
    card["losses"]["heldout_sample"]["unigram"] = round(uni_sample, 4)
    card["losses"]["method"] = (f"gpt2np.scoring.perplexity on the model as loaded from {npz.name}: windows of "
                                f"n_ctx={model.config.n_ctx} tokens, stride {model.config.n_ctx} (gpt2np score's "
                                "default); the text encoded as gpt2np score does")
    log(f"outside ({o_path.name}): {o_loss:.4f} ({o_n} tokens); unigram {uni:.4f} at {time.perf_counter() - t0:.1f} s")

    card["sample_settings"] = {"greedy": GREEDY, "sampled": SAMPLED}
    card["samples"] = samples(model, tok)
    card["file"] = {"name": npz.name, "bytes": npz.stat().st_size, "sha256": sha256(npz), "storage": "float16",
                    "computed_in": "float32"}
    card["made_by"] = "scripts/make_bundled_model.py"
    card["versions"] = {"gpt2np": __version__, "numpy": np.__version__, "python": platform.python_version()}

    if earlier and files["csv"].is_file():
        joined_curve([f["csv"] for f in earlier] + [files["csv"]], training["stages"], out / "training.csv")
    elif files["csv"].is_file():
        shutil.copyfile(files["csv"], out / "training.csv")
    shutil.copyfile(corpus / "corpus_record.json", out / "corpus_record.json")
    if (out / "licences").exists():
        shutil.rmtree(out / "licences")
    (out / "licences").mkdir()
    for name in ["README.txt"] + [pathlib.Path(src["licence_file"]).name
                                  for src in record.get("sources", {}).values() if src.get("licence_file")]:
        shutil.copyfile(LICENCES / name, out / "licences" / name)  # those of the sources used
    (out / "card.json").write_text(json.dumps(card, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "MODEL_CARD.md").write_text(model_card_md(card), encoding="utf-8")
    log(f"wrote {out} in {time.perf_counter() - t0:.1f} s{' (a STAND-IN)' if stand_in else ''}")
    return card


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", nargs="?", type=pathlib.Path, default=DEFAULT_RUN, help=f"the trained model (default {DEFAULT_RUN})")
    ap.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT, help="the folder to write (default: the package's)")
    ap.add_argument("--corpus", type=pathlib.Path, default=DEFAULT_CORPUS, help=f"make_corpus.py's work folder ({DEFAULT_CORPUS})")
    ap.add_argument("--outside", type=pathlib.Path, help="a text outside the corpus (default: Tom Sawyer, fetched once)")
    ap.add_argument("--after", action="append", type=pathlib.Path, metavar="EARLIER.npz",
                    help="an earlier stage's model, RUN started from (repeat in order; default with the default "
                         f"RUN: {DEFAULT_AFTER[0]})")
    ap.add_argument("--command", help="the exact training command (default: from RUN.sh or run.sh beside RUN)")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--from-checkpoint", action="store_true", help="a stand-in: the weights of RUN's .ckpt.npz")
    group.add_argument("--random", action="store_true", help="a stand-in: GPT2.random of the bundled config")
    ap.add_argument("--heldout-files", type=int, help="score only the first N held-out files (quicker)")
    ap.add_argument("--date", help="the date to record (default: RUN's modification date, UTC)")
    ap.add_argument("--write-sample", action="store_true", help=f"(re)write {SAMPLE.relative_to(ROOT)} and stop")
    args = ap.parse_args(argv)
    corpus = args.corpus.expanduser()
    if args.write_sample:
        write_sample(corpus)
        return 0
    how = "checkpoint" if args.from_checkpoint else "random" if args.random else "model"
    after = args.after if args.after is not None else DEFAULT_AFTER if args.run == DEFAULT_RUN else []
    make(args.run, args.out, corpus, how=how, command=args.command, after=after, outside=args.outside,
         heldout_files=args.heldout_files, date=args.date, log=lambda m: print(m, file=sys.stderr))
    return 0


if __name__ == "__main__":
    sys.exit(main())
