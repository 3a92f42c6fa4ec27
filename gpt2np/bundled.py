"""gpt2np's bundled model: a small GPT-2 trained from scratch by ``gpt2np train``, shipped in the package.

``BUNDLED_MODEL`` ("gpt2np-mini"; aliases "mini" and "bundled", in any letter case) names it
wherever a size is accepted: ``GPT2.from_pretrained(BUNDLED_MODEL)``, ``--model gpt2np-mini``
of ``gpt2np generate``/``score``/``summarize``/``translate``/``answer``, ``gpt2np info
gpt2np-mini``, ``gpt2np train --init gpt2np-mini``.  It is package data: loading it never
touches the network or the cache (``GPT2NP_HOME``, ``GPT2NP_OFFLINE`` and ``--base-url`` do
not apply).  It is a demonstration model of GPT-2's architecture and tokenizer, trained on
public-domain English text (see its card); it is not OpenAI's GPT-2.

Its files, in ``gpt2np/assets/gpt2np-mini/`` (made by ``scripts/make_bundled_model.py``):

- ``model.npz``: the weights, stored as float16 (the ``.npz`` metadata says ``"storage":
  "float16"``; :func:`gpt2np.formats.load_npz` upcasts them to float32 once), and a short
  record of what the model is (``"model"``), so that the file alone still says it;
- ``card.json``: the model card, machine-readable: what it is, config, parameters, corpus with
  licences and attribution, training (command, steps, tokens), losses, the file's sha256,
  sample continuations (:func:`read_card`);
- ``MODEL_CARD.md``: the same for people; ``training.csv``: the loss curve (``gpt2np train``'s
  CSV); ``corpus_record.json``: ``scripts/make_corpus.py``'s record of the corpus;
  ``licences/``: the corpus's licence texts and attributions.

:func:`card_lines` is what ``gpt2np info`` prints of a card; :func:`card_of` finds the card of a
model file (the bundled one, or a copy of it).
"""

from __future__ import annotations

import hashlib
import json
import pathlib

from .config import BUNDLED_MODEL, PRESETS

CARD_FORMAT = "gpt2np-model-card/1"
NOT_OPENAI = ("a small demonstration model trained by gpt2np, not OpenAI's GPT-2: it has GPT-2's "
              "architecture and tokenizer, but its own weights, learned from its small corpus only")


class BundledModelMissing(FileNotFoundError):
    """A file of the bundled model is not in the installed package (one line, saying what to do)."""


def folder() -> pathlib.Path:
    """The folder of the bundled model's files in the installed package."""
    return pathlib.Path(__file__).resolve().parent / "assets" / BUNDLED_MODEL


def _file(name: str) -> pathlib.Path:
    path = folder() / name
    if not path.is_file():
        raise BundledModelMissing(f"{path}: missing; the bundled model {BUNDLED_MODEL} is not fully installed "
                                  f"(reinstall gpt2np; in a checkout, scripts/make_bundled_model.py makes it)")
    return path


def model_path() -> pathlib.Path:
    """The path of the bundled model's weights (``model.npz``)."""
    return _file("model.npz")


def read_card(path=None) -> dict:
    """The model card (``card.json``) of the bundled model, or the one at ``path``."""
    path = _file("card.json") if path is None else pathlib.Path(path)
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a valid model card ({e})") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise ValueError(f"{path}: not a gpt2np model card (format {CARD_FORMAT!r} expected)")
    return card


def load():
    """The bundled model as a :class:`gpt2np.GPT2` computing in float32 (no network, no cache).

    Its config must be ``PRESETS[BUNDLED_MODEL]``: a file of another shape is refused."""
    from .model import GPT2

    path = model_path()
    model = GPT2.load(path)
    if model.config != PRESETS[BUNDLED_MODEL]:
        raise ValueError(f"{path}: holds a model of {model.config}, not the bundled model's "
                         f"{PRESETS[BUNDLED_MODEL]}; reinstall gpt2np")
    return model


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def card_of(path) -> dict | None:
    """The card that describes the model file ``path``, or None if it is not such a model.

    The file's metadata names its card (``"model": {"card": "card.json", ...}``): that card,
    when it is beside the file and its sha256 is this file's; otherwise the short record in the
    file itself, with ``"card_note"`` saying why the full card was not used."""
    from .formats import WeightsError
    from .formats.npz import npz_metadata

    path = pathlib.Path(path)
    try:
        record = npz_metadata(path).get("model")
    except WeightsError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("name"), str):
        return None
    beside = path.parent / str(record.get("card", "card.json"))
    if beside.is_file():
        try:
            card = read_card(beside)
        except ValueError as e:
            return {**record, "card_note": str(e)}
        if card.get("file", {}).get("sha256") == sha256(path):
            return card
        return {**record, "card_note": f"{beside} describes another file (its sha256 differs): the file's own record"}
    return {**record, "card_note": f"no {beside.name} beside the file: the file's own record"}


def _loss(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "?"


def card_lines(card: dict) -> list[str]:
    """What ``gpt2np info`` prints of a model card (or of the short record in a model file)."""
    out = []
    if card.get("stand_in"):
        out.append("STAND-IN: these are not the final weights of the bundled model (a partly trained or random "
                   "model, for development); run scripts/make_bundled_model.py on the finished training run")
    out.append(f"what it is: {card.get('name', '?')}, {card.get('what', NOT_OPENAI)}")
    if card.get("card_note"):
        out.append(f"card: {card['card_note']}")
    if "parameters" in card:
        f = card.get("file", {})
        storage = f" (stored as {f['storage']}, computed in {f.get('computed_in', 'float32')})" if f.get("storage") else ""
        out.append(f"parameters: {card['parameters']:,}{storage}")
    corpus = card.get("corpus", {})
    if corpus:
        tokens = corpus.get("train_tokens")
        out.append(f"corpus: {corpus.get('about', '?')}" + (f"; {tokens:,} training tokens" if tokens else ""))
        for key, src in corpus.get("sources", {}).items():
            out.append(f"  {key}: {src.get('text', '?')}; licence: {src.get('licence', '?')}")
            out.append(f"    attribution: {src.get('attribution', '?')}")
        if corpus.get("licences"):
            out.append(f"  licence texts: {corpus['licences']}")
    tr = card.get("training", {})
    if tr:
        tokens = tr.get("tokens_trained")
        wall = tr.get("wall_time_s")
        parts = [f"{tr.get('steps', '?'):,} steps" if isinstance(tr.get("steps"), int) else "? steps",
                 f"{tokens:,} tokens trained" if isinstance(tokens, int) else "? tokens trained"]
        if isinstance(wall, (int, float)):
            parts.append(f"{wall / 3600:.2f} h of wall time")
        if tr.get("stages"):
            parts.append(f"in {len(tr['stages'])} stages (each from the one before's weights)")
        out.append("training: " + ", ".join(parts) + (f", ended {tr['date']}" if tr.get("date") else ""))
        if tr.get("command"):
            out.append(f"  command: {tr['command']}")
    losses = card.get("losses", {})
    if losses:
        items = [f"train {_loss(losses.get('train'))}", f"validation {_loss(losses.get('validation'))}"]
        if "heldout" in losses:
            h = losses["heldout"]
            part = f" ({h['files']} of {h['of_files']} files)" if h.get("files") != h.get("of_files") else ""
            items.append(f"held-out {_loss(h.get('loss'))}{part}")
        if "heldout_sample" in losses:
            items.append(f"held-out sample {_loss(losses['heldout_sample'].get('loss'))}")
        out.append("losses (nats/token): " + ", ".join(items))
        outside = losses.get("outside")
        if outside:
            out.append(f"  outside the corpus ({outside.get('text', '?')}): {_loss(outside.get('loss'))}, "
                       f"against {_loss(outside.get('unigram'))} for a unigram model of the corpus")
    if card.get("date"):
        out.append(f"date: {card['date']}")
    if card.get("file", {}).get("sha256"):
        out.append(f"sha256 of {card['file'].get('name', 'model.npz')}: {card['file']['sha256']}")
    out.append(f"not OpenAI's GPT-2: {NOT_OPENAI}")
    return out
