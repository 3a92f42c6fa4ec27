"""The ``gpt2np`` command.

Every subcommand is a pair of functions: ``_add_<name>(sub)`` declares its
arguments and ``_run_<name>(args)`` does the work.  User errors are raised as
``CLIError`` (or ``ValueError``/``OSError`` from the library) and printed as
one line on stderr with exit status 1, never as a traceback; bad arguments are
one line too (``_Parser``), with exit status 2.
"""

from __future__ import annotations

import argparse
import sys


class CLIError(Exception):
    """An error caused by the user's input; printed as one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    """Reports bad arguments in one line (no usage block), exit status 2; subparsers inherit it."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --- tokenize (tokenizer issue) -------------------------------------------------
def _add_tokenize(sub) -> None:
    p = sub.add_parser(
        "tokenize",
        help="text -> GPT-2 token ids and their pieces (or ids -> text with --decode)",
        description="Show how GPT-2 tokenizes TEXT: one row per token with its id and the text "
        "(or bytes) it stands for.  With --decode, the arguments are token ids and the command "
        "prints their text.  Without arguments (or with -), reads standard input." + _TEXT_RULES,
    )
    p.add_argument("items", nargs="*", metavar="TEXT_OR_ID",
                   help="text to encode (several arguments are joined by spaces), or ids with --decode")
    p.add_argument("--decode", action="store_true", help="read the arguments as token ids and print their text")
    p.add_argument("--ids", action="store_true", help="print only the ids, separated by spaces")
    _special_arg(p)
    # the old opt-in, now the default: still accepted so that scripts keep working
    p.add_argument("--allow-special", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=_run_tokenize)


def _run_tokenize(args) -> int:
    from .tokenizer import Tokenizer

    tok = Tokenizer.gpt2()
    text = _read_text(" ".join(args.items) if args.items else None, "ids" if args.decode else "text")
    if args.decode:
        ids = []
        for word in text.replace(",", " ").split():
            try:
                ids.append(int(word))
            except ValueError:
                raise CLIError(f"not a token id: {word!r} (ids are integers from 0 to {tok.n_vocab - 1})") from None
        sys.stdout.write(tok.decode(ids) + "\n")
        return 0
    ids = _encode(tok, text, args)
    if args.ids:
        print(" ".join(map(str, ids)))
        return 0
    width = max(5, len(str(max(ids, default=0))))
    print(f"{'id':>{width}}  piece")
    for token_id in ids:
        data = tok.decode_bytes([token_id])
        try:
            piece = repr(data.decode("utf-8"))
        except UnicodeDecodeError:  # part of a character: show the bytes
            piece = repr(data)
        print(f"{token_id:>{width}}  {piece}")
    print(f"{len(ids)} tokens, {len(text)} characters, {len(text.encode('utf-8', 'surrogatepass'))} bytes")
    return 0


# --- download / convert / info (weights issue) ----------------------------------
def _is_size_name(spec: str) -> bool:
    """A size the hub knows: "124M", ..., or an alias ("gpt2-medium", "1.5B", ...), in any letter
    case; or the bundled model ("gpt2np-mini", "mini", "bundled"), which is package data."""
    return _size_of(spec) is not None


def _size_of(spec: str) -> str | None:
    """The size ``spec`` names ("gpt2-medium" -> "355M", "mini" -> "gpt2np-mini"), or None."""
    from . import hub
    from .config import BUNDLED_MODEL, is_bundled

    if is_bundled(spec) and spec not in hub.MODELS:
        return BUNDLED_MODEL
    try:
        return hub.get_spec(spec).size
    except hub.DownloadError:
        return None


DEFAULT_MODEL = "124M"  # the size the generation commands use without --model (never a path)


def _weights_kind(spec: str) -> str:
    """What a weights argument names, the one dispatch of ``_read_weights`` and ``load_model_arg``:
    "size" (a size name or alias, for the cache), "tf" (a checkpoint folder or its ``.index``
    file), "safetensors" or "npz"; a one-line CLIError for anything else.

    A size name is the size even when a file or folder of that name is in the working folder
    (one line on stderr says so): "124M" means the same thing in every folder, and ``./124M``
    (any spelling with a folder separator) is the path."""
    import pathlib

    from .config import ALIASES, BUNDLED_MODEL, OPENAI_SIZES

    path = pathlib.Path(spec)
    if _is_size_name(spec):
        if path.exists():
            what = "folder" if path.is_dir() else "file"
            print(f"gpt2np: {spec!r} is a size name and also a {what} here: using the size "
                  f"{_size_of(spec)} (for the {what}, write ./{spec})",
                  file=sys.stderr)
        return "size"
    if path.is_dir() or path.suffix == ".index":
        return "tf"
    if path.suffix in (".safetensors", ".npz"):
        return path.suffix[1:]
    if path.exists():
        raise CLIError(f"{spec}: unknown kind of file (expected a TF checkpoint folder, .safetensors or .npz)")
    openai = [a for a, size in ALIASES.items() if size in OPENAI_SIZES]
    bundled = [a for a, size in ALIASES.items() if size == BUNDLED_MODEL]
    raise CLIError(f"{spec}: no such file or folder, and not a known size ({', '.join(OPENAI_SIZES)}) "
                   f"or alias ({', '.join(openai)}), nor the bundled model {BUNDLED_MODEL} ({', '.join(bundled)})")


def _read_weights(spec: str, verify: bool = True, hparams: dict | None = None):
    """(description, hparams, params tree) of a TF folder/.index, .safetensors, .npz, a cached
    size or the bundled model."""
    import pathlib

    from . import formats, hub

    kind, path = _weights_kind(spec), pathlib.Path(spec)
    if kind == "size" and _size_of(spec) == _bundled_name():
        from . import bundled

        npz = bundled.model_path()
        return f"gpt2np's bundled model {_bundled_name()} ({npz})", *formats.load_npz(npz, verify=verify)
    if kind == "tf":
        return "TensorFlow checkpoint", *formats.read_tf_checkpoint(path, verify=verify)
    if kind == "safetensors":
        return "safetensors", *formats.read_safetensors_model(path, hparams)
    if kind == "npz":
        return "gpt2np .npz", *formats.load_npz(path)
    npz = hub.npz_path(spec)
    if not npz.is_file():
        raise CLIError(f"{spec} is not in the cache {npz.parent}; run `gpt2np download {spec}` first")
    return f"cached {hub.get_spec(spec).size} ({npz})", *formats.load_npz(npz)


def load_model_arg(spec=None, base_url=None):
    """Turn a ``--model`` argument into a GPT2.

    ``spec`` is a size name or alias ("124M", "gpt2-medium", "1.5b", ..., in any letter case;
    downloaded and converted once into the cache), a TensorFlow checkpoint folder (or its
    ``.index`` file), a ``.safetensors`` file or an ``.npz`` written by ``gpt2np convert`` /
    ``GPT2.save``.  A size name is the size even if a path of that name exists (see
    ``_weights_kind``).  None (no ``--model``) is the size ``DEFAULT_MODEL``.  The bundled
    model's name ("gpt2np-mini", "mini", "bundled") loads it from the package (no network).
    """
    import pathlib

    from .model import GPT2

    if spec is None:
        return GPT2.from_pretrained(DEFAULT_MODEL, base_url=base_url)
    spec = str(spec)
    kind, path = _weights_kind(spec), pathlib.Path(spec)
    if kind == "tf":
        return GPT2.from_tf_checkpoint(path)
    if kind == "safetensors":
        return GPT2.from_safetensors(path)
    if kind == "npz":
        return GPT2.load(path)
    return GPT2.from_pretrained(spec, base_url=base_url)


def _add_download(sub):
    p = sub.add_parser("download", help="download, verify and convert OpenAI's checkpoint into the cache",
                       description="Download OpenAI's GPT-2 checkpoint files for SIZE, verify them (sizes, "
                                   "tensor CRC32C, tokenizer sha256), convert them once to .npz in the cache "
                                   "($GPT2NP_HOME, else $XDG_CACHE_HOME/gpt2np, else ~/.cache/gpt2np) and "
                                   "print its path.")
    p.add_argument("size", metavar="SIZE", help="124M, 355M, 774M or 1558M")
    p.add_argument("--base-url", help="mirror URL or folder holding SIZE/FILE (default $GPT2NP_BASE_URL, else OpenAI)")
    p.add_argument("--cache-dir", help="cache folder (default $GPT2NP_HOME, ...)")
    p.add_argument("--source", choices=["openai", "huggingface"], default="openai",
                   help="OpenAI's TF checkpoint (default) or Hugging Face's model.safetensors")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_download)


def _run_download(args):
    from . import hub

    path = hub.pretrained_npz(args.size, base_url=args.base_url, cache_dir=args.cache_dir,
                              progress=not args.quiet, source=args.source)
    print(path)


def _add_convert(sub):
    p = sub.add_parser("convert", help="convert weights between TF checkpoints, .safetensors and .npz",
                       description="Read SRC (a TensorFlow checkpoint folder such as OpenAI's models/124M, "
                                   "a Hugging Face .safetensors file or a gpt2np .npz) and write OUT, by its "
                                   "suffix: OUT.npz for GPT2.load, or OUT.safetensors with transformers' "
                                   "names and a config.json beside it, so that "
                                   "GPT2LMHeadModel.from_pretrained(folder) loads it (name it "
                                   "model.safetensors for that).")
    p.add_argument("src", metavar="SRC")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="OUT.npz or OUT.safetensors")
    p.add_argument("--no-verify", action="store_true", help="skip the tensor CRC32C checks (TF checkpoints)")
    p.add_argument("--hparams", metavar="JSON",
                   help="hparams.json for a .safetensors file (default: inferred, n_head = n_embd // 64)")
    p.set_defaults(func=_run_convert)


def _run_convert(args):
    import pathlib

    from . import formats

    hparams = _hparams_arg(args.hparams)
    if not pathlib.Path(args.src).exists():
        raise CLIError(f"{args.src}: no such file or folder")
    out = pathlib.Path(args.output)
    if out.suffix not in (".npz", ".safetensors"):
        raise CLIError(f"{out}: the output must end in .npz or .safetensors")
    kind, hparams, params = _read_weights(args.src, verify=not args.no_verify, hparams=hparams)
    if out.suffix == ".npz":
        formats.save_npz(out, hparams, params)
    else:  # transformers' names, and its config.json beside the file
        from .model import GPT2, Config

        GPT2(Config(**hparams), params).save_safetensors(out)
    n = sum(a.size for a in formats.flatten(params).values())
    extra = f" (and {out.parent / 'config.json'})" if out.suffix == ".safetensors" else ""
    print(f"{out}: {n:,} parameters from {kind} {args.src}{extra}")


def _hparams_arg(path: str | None) -> dict | None:
    """The checked contents of an ``--hparams`` JSON file (None when the option is not given)."""
    import json

    from . import formats

    if path is None:
        return None
    try:
        hparams = json.loads(_read_text(path, "hparams", file=True))
    except json.JSONDecodeError as err:
        raise CLIError(f"{path}: not a JSON hparams file ({err})") from None
    return formats.check_hparams(hparams, path)


def _bundled_name() -> str:
    from .config import BUNDLED_MODEL

    return BUNDLED_MODEL


def _add_info(sub):
    p = sub.add_parser("info", help="what a model is: its card, config, parameter count and tensor table",
                       description="MODEL is a size name already in the cache, the bundled model "
                                   f"{_bundled_name()}, a TF checkpoint folder, a .safetensors file or an .npz.  "
                                   "For the bundled model (or a copy of its file) it first says what the model "
                                   "is, from its model card: corpus, licences and attribution, training, losses.")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--hparams", metavar="JSON", help="hparams.json for a .safetensors file (default: inferred)")
    p.set_defaults(func=_run_info)


def _run_info(args):
    from . import formats

    hparams = _hparams_arg(args.hparams)
    kind, hparams, params = _read_weights(args.model, verify=False, hparams=hparams)
    flat = formats.flatten(params)
    n = sum(a.size for a in flat.values())
    nbytes = sum(a.nbytes for a in flat.values())
    print(f"{args.model}: {kind}")
    _print_card(args.model)
    print("config: " + ", ".join(f"{k}={v}" for k, v in hparams.items()))
    print(f"parameters: {n:,} ({nbytes / 2**20:.1f} MiB)")
    width = max(len(k) for k in flat)
    for name, a in flat.items():
        print(f"  {name:<{width}}  {str(list(a.shape)):<14} {a.dtype}")


def _print_card(spec: str) -> None:
    """The model card's lines (gpt2np.bundled.card_lines) when ``spec`` is the bundled model or
    an .npz that names its card; nothing for other weights."""
    import pathlib

    from . import bundled

    if _size_of(spec) == _bundled_name():
        path = bundled.model_path()
    elif pathlib.Path(spec).suffix == ".npz" and pathlib.Path(spec).is_file():
        path = pathlib.Path(spec)
    else:
        return
    card = bundled.card_of(path)
    if card is not None:
        for line in bundled.card_lines(card):
            print(line)


# --- generate / summarize / translate / answer / score (generation issue) -------
def _int_at_least(low: int):
    """argparse type: an integer >= low."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {low}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_nonnegative_int = _int_at_least(0)


def _float_in(low: float, high: float | None, low_open: bool, what: str):
    """argparse type: a finite float in the range [low or (low, high]."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        ok = (value > low if low_open else value >= low) and (high is None or value <= high)
        if not ok or value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value

    return parse


_temperature = _float_in(0.0, None, False, "a number >= 0 (0 = greedy)")
_probability = _float_in(0.0, 1.0, True, "a probability with 0 < p <= 1")
_penalty = _float_in(0.0, None, True, "a number > 0 (1 = no penalty)")


def _unescape(text: str) -> str:
    r"""argparse type for --stop: the escapes \n, \t and \\ (a shell cannot easily pass a newline)."""
    import re

    out = re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}.get(m[1], m[0]), text)
    if not out:
        raise argparse.ArgumentTypeError("a stop string must not be empty")
    return out


def _gen_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="a size (124M, 355M, 774M, 1558M, or an alias such as gpt2-medium; downloaded once), "
                        f"{_bundled_name()} (gpt2np's small bundled model: no download, runs offline), "
                        "a folder with a TF checkpoint, a .safetensors or an .npz file (default: the size "
                        f"{DEFAULT_MODEL}; a size name means the size even if a file or folder of that name "
                        f"is here: write ./{DEFAULT_MODEL} for that)")
    p.add_argument("--base-url", default=None, help="download mirror for the sizes (default: $GPT2NP_BASE_URL or OpenAI)")


def _gen_sampling_args(p: argparse.ArgumentParser, max_new_tokens: int = 50) -> None:
    p.add_argument("--max-new-tokens", type=_nonnegative_int, default=max_new_tokens,
                   help=f"at most this many new tokens (default: {max_new_tokens})")
    p.add_argument("--temperature", type=_temperature, default=0.0,
                   help="0 = greedy (default), 1 = the model's distribution")
    p.add_argument("--top-k", type=_positive_int, default=None, help="sample among the k most likely tokens")
    p.add_argument("--top-p", type=_probability, default=None, help="nucleus sampling: smallest set with this mass")
    p.add_argument("--repetition-penalty", type=_penalty, default=None, help="> 1 discourages repeating tokens")
    p.add_argument("--seed", type=_nonnegative_int, default=None, help="random seed for reproducible sampling")


def _generation_model(args):
    """The model named by --model (a size, TF folder, .safetensors or .npz; see load_model_arg)."""
    model = load_model_arg(args.model, base_url=args.base_url)
    if model.config.n_vocab < 50257:  # the commands speak text through GPT-2's tokenizer
        raise CLIError(f"{args.model or DEFAULT_MODEL}: the model knows {model.config.n_vocab} tokens, but "
                       f"GPT-2's tokenizer has 50257; this command needs a model with GPT-2's vocabulary")
    return model


# --- text in: one policy for every command that reads text ---------------------------------
# Text is UTF-8, whether it comes as an argument, a file or standard input; a leading byte-order
# mark is skipped, nothing else is changed (line ends stay as they are), and anything that is not
# UTF-8 is refused, naming where it came from and the byte offset.  "<|endoftext|>" in the text is
# GPT-2's document separator, the special token 50256 (as in its training data and in
# `gpt2np train`), unless --special-as-text; the Python API's Tokenizer.encode keeps tiktoken's rule.
_TEXT_RULES = ("  Text is UTF-8 (anything else is refused, naming the byte offset); '<|endoftext|>' "
               "in it is GPT-2's document separator, token 50256, unless --special-as-text.")


def _special_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--special-as-text", action="store_true",
                   help="read '<|endoftext|>' in the text as ordinary characters (default: the special "
                        "token 50256, GPT-2's document separator)")


def _encode(tok, text: str, args) -> list[int]:
    """``text`` as token ids under the commands' rule for '<|endoftext|>' (see _special_arg)."""
    return tok.encode_ordinary(text) if args.special_as_text else tok.encode(text, allowed_special="all")


def _read_text(value: str | None, what: str, *, file: bool = False) -> str:
    """The one way the commands read text: the argument ``value`` itself, or with ``file`` the
    file it names; None or "-" is standard input.  ``what`` names it in errors ("prompt")."""
    if value is None or value == "-":
        stdin = sys.stdin
        if stdin is None or stdin.isatty():
            raise CLIError(f"give the {what} as an argument or pipe it on standard input")
        buffer = getattr(stdin, "buffer", None)  # bytes, so that the decoding is ours
        data = buffer.read() if buffer is not None else _argument_bytes(stdin.read())
        return _utf8(data, f"the {what} on standard input")
    if file:
        try:
            with open(value, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise CLIError(f"{what} file {value}: no such file") from None
        return _utf8(data, f"{what} file {value}")
    return _utf8(_argument_bytes(value), f"the {what} argument")


def _argument_bytes(text: str) -> bytes:
    """The bytes behind a str from the command line (Python keeps bytes that are not UTF-8 as
    lone surrogates, U+DC80-U+DCFF) or from a text stream."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # other lone surrogates (only from Python callers): not UTF-8 either
        return text.encode("utf-8", "surrogatepass")


def _utf8(data: bytes, where: str) -> str:
    bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as err:
        raise CLIError(f"{where}: not UTF-8 text ({err.reason} at byte {err.start + bom}); "
                       "convert it first, e.g. with iconv -t utf-8") from None


# --- the commands ---------------------------------------------------------------------------
def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="continue a prompt",
                       description="Continue PROMPT (or standard input) with GPT-2." + _TEXT_RULES)
    p.add_argument("prompt", nargs="?", default=None, help='the prompt text ("-" or omitted: read standard input)')
    _gen_model_args(p)
    _gen_sampling_args(p)
    _special_arg(p)
    p.add_argument("--stop", action="append", default=None, metavar="TEXT", type=_unescape,
                   help=r"end the text before this string (repeatable; \n, \t and \\ are understood)")
    p.add_argument("--no-stream", dest="stream", action="store_false", help="print the text only when it is complete")
    p.add_argument("--echo", action="store_true", help="print the prompt before its continuation")
    p.set_defaults(func=_run_generate)


def _run_generate(args) -> int:
    from .generation import GenerationSettings, generate_text
    from .tokenizer import Tokenizer

    prompt = _read_text(args.prompt, "prompt")
    tok = Tokenizer.gpt2()
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                  top_k=args.top_k, top_p=args.top_p, repetition_penalty=args.repetition_penalty,
                                  seed=args.seed, stop_ids=(tok.eot_token,))
    out = generate_text(_generation_model(args), tok, prompt, stop=args.stop, stream=args.stream, settings=settings,
                        special_tokens=not args.special_as_text)
    printed = False
    try:
        if args.echo:
            print(prompt, end="", flush=True)
            printed = True
        for piece in out if args.stream else [out]:
            print(piece, end="", flush=True)
            printed = True
    except ValueError:
        if printed:  # end the streamed line, so that the error (on stderr) starts a line of its own
            print(flush=True)
        raise
    print()
    return 0


def _task_parser(sub, name: str, run, text: str, max_new_tokens: int, help: str, description: str,
                 examples: str | None = None, text_help: str | None = None):
    """The parser of a task command: its ``text`` argument ("-" or omitted: standard input), the
    model, --max-new-tokens, --special-as-text, and --examples (help ``examples``) if given."""
    p = sub.add_parser(name, help=help, description=description + _TEXT_RULES)
    p.add_argument(text, nargs="?", default=None, help=text_help or f'the {text} ("-" or omitted: standard input)')
    _gen_model_args(p)
    p.add_argument("--max-new-tokens", type=_positive_int, default=max_new_tokens,
                   help=f"tokens to generate (default: {max_new_tokens})")
    _special_arg(p)
    if examples:
        p.add_argument("--examples", default=None, metavar="FILE", help=examples)
    p.set_defaults(func=run)
    return p


def _run_task(args, task, text: str, **options) -> int:
    """Print ``task(model, tokenizer, text, ...)`` with the options every task command shares."""
    from .tokenizer import Tokenizer

    if getattr(args, "examples", None) is not None:
        from .tasks import load_pairs

        options["examples"] = load_pairs(args.examples, text=_read_text(args.examples, "examples", file=True))
    print(task(_generation_model(args), Tokenizer.gpt2(), text, max_new_tokens=args.max_new_tokens,
               special_tokens=not args.special_as_text, **options))
    return 0


def _add_summarize(sub) -> None:
    p = _task_parser(sub, "summarize", _run_summarize, "article", 100, help='summarize an article ("TL;DR:")',
                     description="Summarize an article as in the GPT-2 paper: article + "
                                 "'TL;DR:', top-k 2 sampling, 100 tokens, first 3 sentences.",
                     text_help='a text file holding the article ("-" or omitted: standard input)')
    p.add_argument("--top-k", type=_positive_int, default=2, help="top-k sampling (default: 2)")
    p.add_argument("--temperature", type=_temperature, default=1.0, help="(default: 1)")
    p.add_argument("--sentences", type=_positive_int, default=3, help="sentences to keep (default: 3)")
    p.add_argument("--seed", type=_nonnegative_int, default=None, help="random seed")


def _run_summarize(args) -> int:
    from .tasks import summarize

    return _run_task(args, summarize, _read_text(args.article, "article", file=True), top_k=args.top_k,
                     temperature=args.temperature, sentences=args.sentences, seed=args.seed)


def _add_translate(sub) -> None:
    _task_parser(sub, "translate", _run_translate, "sentence", 64,
                 help="translate a sentence (English to French by default)",
                 description="Translate as in the GPT-2 paper: example lines "
                             "'english = french', then 'SENTENCE =', greedy, first line.",
                 examples="example pairs (.tsv: source<TAB>target per line, or .json list of pairs)")


def _run_translate(args) -> int:
    from .tasks import translate

    return _run_task(args, translate, _read_text(args.sentence, "sentence"))


def _add_answer(sub) -> None:
    p = _task_parser(sub, "answer", _run_answer, "question", 32, help="answer a question (optionally about a document)",
                     description="Answer as in the GPT-2 paper: document, example Q/A pairs, "
                                 "'Q: QUESTION A:', greedy, first line.",
                     examples="example question/answer pairs (.tsv or .json, as for translate)")
    p.add_argument("--document", default=None, metavar="FILE", help="a text the question is about")


def _run_answer(args) -> int:
    from .tasks import answer

    question = _read_text(args.question, "question")
    document = None if args.document is None else _read_text(args.document, "document", file=True)
    return _run_task(args, answer, question, document=document)


def _add_score(sub) -> None:
    p = sub.add_parser("score", help="perplexity of a text file (sliding window)",
                       description="Token count, mean negative log-likelihood and perplexity "
                                   "of FILE, with the sliding window of transformers' guide." + _TEXT_RULES)
    p.add_argument("file", help="a UTF-8 text file (- = standard input)")
    _gen_model_args(p)
    p.add_argument("--max-length", type=_positive_int, default=None, help="window length (default: n_ctx)")
    p.add_argument("--stride", type=_positive_int, default=None,
                   help="tokens between window starts (default: min(512, window length))")
    _special_arg(p)
    p.set_defaults(func=_run_score)


def _run_score(args) -> int:
    from .scoring import perplexity
    from .tokenizer import Tokenizer

    ids = _encode(Tokenizer.gpt2(), _read_text(args.file, "text", file=True), args)
    if len(ids) < 2:
        raise CLIError(f"{args.file}: {len(ids)} token(s); scoring needs at least 2")
    result = perplexity(_generation_model(args), ids, max_length=args.max_length, stride=args.stride)
    print(f"tokens scored: {result.n_tokens}")
    print(f"mean NLL: {result.nll:.4f} nats/token")
    print(f"perplexity: {result.ppl:.4f}")
    return 0


# --- train (training issue) -------------------------------------------------------
_TRAIN_SETTINGS = ("steps", "batch_size", "seq_len", "grad_accum", "lr", "min_lr", "warmup", "weight_decay",
                   "clip", "seed", "eval_every", "eval_windows", "save_every", "val_fraction")
_TRAIN_SHAPE = {"n_layer": 12, "n_head": 12, "n_embd": 768, "n_ctx": 1024}  # --init new's defaults: 124M's


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train", help="fine-tune GPT-2 on text files, or train one from scratch",
        description="Train on TEXT files (UTF-8; each a document, <|endoftext|> between them): tokenized "
                    "once into OUT's .tokens/ folder, the last --val-fraction of each file kept for "
                    "validation; random windows of --seq-len + 1 tokens; AdamW with warm-up and cosine "
                    "decay; losses in OUT's .csv, checkpoints in OUT's .ckpt.npz (every --save-every "
                    "steps, at the end and on Ctrl-C); the model in OUT (.npz, or .safetensors with a "
                    "config.json for transformers).  --resume continues the checkpoint exactly: a run "
                    "stopped and resumed ends with the weights of one that never stopped.  Python: "
                    "gpt2np.train.train_text does the same.")
    p.add_argument("texts", nargs="+", metavar="TEXT", help="UTF-8 text files")
    p.add_argument("--out", required=True, metavar="OUT", help="the model to write: OUT.npz or OUT.safetensors")
    p.add_argument("--init", default=None, metavar="MODEL",
                   help="the start: a size (124M, 355M, ...; downloaded once), a model file (.npz, "
                        ".safetensors, a TF checkpoint folder), or 'new' (GPT-2's initialisation with "
                        "--n-layer/--n-head/--n-embd/--n-ctx) (default: 124M)")
    for name, default in _TRAIN_SHAPE.items():
        p.add_argument("--" + name.replace("_", "-"), type=_positive_int, default=None, metavar="N",
                       help=f"with --init new (default: {default})")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT's checkpoint; its settings apply unless given here")
    p.add_argument("--steps", metavar="N", type=_positive_int, help="optimizer steps of the whole run (default: 1000)")
    p.add_argument("--batch-size", metavar="N", type=_positive_int, help="windows per micro-batch (default: 4)")
    p.add_argument("--seq-len", metavar="N", type=_positive_int, help="tokens read per window, at most n_ctx "
                                                          "(default: min(256, n_ctx))")
    p.add_argument("--grad-accum", metavar="N", type=_positive_int,
                   help="micro-batches per optimizer step, their gradients averaged (default: 1)")
    p.add_argument("--lr", metavar="LR", type=_float_in(0.0, None, True, "a learning rate > 0"),
                   help="peak learning rate (default: 3e-4)")
    p.add_argument("--min-lr", metavar="LR", type=_float_in(0.0, None, False, "a learning rate >= 0"),
                   help="the cosine's floor, reached at the last step (default: lr / 10)")
    p.add_argument("--warmup", metavar="N", type=_nonnegative_int, help="steps of linear warm-up (default: steps / 20)")
    p.add_argument("--weight-decay", metavar="WD", type=_float_in(0.0, None, False, "a number >= 0"),
                   help="AdamW's decoupled weight decay of the 2-D weights (default: 0.1)")
    p.add_argument("--clip", metavar="NORM",
                   type=_float_in(0.0, None, False, "a number >= 0 (0 = no clipping)"),
                   help="clip the gradient norm to this (default: 1.0; 0 = no clipping)")
    p.add_argument("--seed", metavar="N", type=_nonnegative_int,
                   help="seed of the batches (and of --init new) (default: 0)")
    p.add_argument("--eval-every", metavar="N", type=_positive_int,
                   help="steps between validation losses (default: 100)")
    p.add_argument("--eval-windows", metavar="N", type=_positive_int, help="fixed validation windows (default: 16)")
    p.add_argument("--save-every", metavar="N", type=_positive_int, help="steps between checkpoints (default: 500)")
    p.add_argument("--val-fraction", metavar="F", type=_float_in(0.0, 1.0, False, "a fraction 0 <= f < 1"),
                   help="share of each file's tokens, from its end, for validation (default: 0.05; 0 = none)")
    p.add_argument("--base-url", metavar="URL", default=None, help="download mirror for --init sizes")
    p.add_argument("--quiet", action="store_true", help="no progress bar and messages")
    p.set_defaults(func=_run_train)


def _run_train(args) -> int:
    from .model import Config
    from .train import TrainingInterrupted, train_text

    shape = {k: getattr(args, k) for k in _TRAIN_SHAPE if getattr(args, k) is not None}
    new = (args.init or "").lower() == "new"
    if shape and not new and not args.resume:
        flags = ", ".join("--" + k.replace("_", "-") for k in shape)
        args.parser.error(f"{flags} apply only to --init new")
    if args.resume and args.init is not None:
        args.parser.error("--resume continues the checkpoint's weights; drop --init")
    config = Config(n_vocab=50257, **{**_TRAIN_SHAPE, **shape}) if new else None
    settings = {k: getattr(args, k) for k in _TRAIN_SETTINGS if getattr(args, k) is not None}
    log = (lambda message: None) if args.quiet else None
    try:
        model, history = train_text(args.texts, args.out, init=args.init or "124M", config=config,
                                    settings=settings, resume=args.resume, base_url=args.base_url,
                                    progress=not args.quiet, log=log)
    except TrainingInterrupted as stop:
        where = f"; saved {stop.checkpoint}, continue with --resume" if stop.checkpoint else ""
        print(f"gpt2np train: interrupted after step {stop.step}{where}", file=sys.stderr)
        return 130
    last = history[-1] if history else {}
    train_loss = next((r["train_loss"] for r in reversed(history) if r["train_loss"] is not None), None)
    parts = [f"{args.out}: step {last.get('step', 0)}"]
    if train_loss is not None:
        parts.append(f"train loss {train_loss:.4f}")
    if last.get("val_loss") is not None:
        parts.append(f"validation loss {last['val_loss']:.4f}")
    print(", ".join(parts))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gpt2np",
        description="GPT-2 in NumPy: tokenize, download, convert, generate, score, train.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"gpt2np {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, value in list(globals().items()):
        if name.startswith("_add_") and callable(value):
            value(sub)
    for p in sub.choices.values():  # so that main() reports stray arguments as the subcommand's
        p.set_defaults(parser=p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        args.parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("gpt2np: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as err:
        print(f"gpt2np {args.command}: error: {_os_error_text(err)}", file=sys.stderr)
        return 1
    except (CLIError, ValueError, NotImplementedError) as err:
        print(f"gpt2np {args.command}: error: {err}", file=sys.stderr)
        return 1


def _os_error_text(err: OSError) -> str:
    """'FILE: No such file or directory' rather than "[Errno 2] No such file or directory: 'FILE'"."""
    if err.strerror and err.filename is not None:
        return f"{err.filename}: {err.strerror}"
    return err.strerror or str(err)
