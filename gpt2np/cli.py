"""The ``gpt2np`` command.

Every subcommand is a pair of functions: ``_add_<name>(sub)`` declares its
arguments and ``_run_<name>(args)`` does the work.  User errors are raised as
``CLIError`` (or ``ValueError``/``OSError`` from the library) and printed as
one line on stderr with a non-zero exit status, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys


class CLIError(Exception):
    """An error caused by the user's input; printed as one line, exit status 1."""


# --- tokenize (tokenizer issue) -------------------------------------------------
def _add_tokenize(sub) -> None:
    p = sub.add_parser(
        "tokenize",
        help="text -> GPT-2 token ids and their pieces (or ids -> text with --decode)",
        description="Show how GPT-2 tokenizes TEXT: one row per token with its id and the text "
        "(or bytes) it stands for.  With --decode, the arguments are token ids and the command "
        "prints their text.  Without arguments, reads standard input.",
    )
    p.add_argument("items", nargs="*", metavar="TEXT_OR_ID",
                   help="text to encode (several arguments are joined by spaces), or ids with --decode")
    p.add_argument("--decode", action="store_true", help="read the arguments as token ids and print their text")
    p.add_argument("--ids", action="store_true", help="print only the ids, separated by spaces")
    p.add_argument("--allow-special", action="store_true",
                   help="encode '<|endoftext|>' as the special token 50256 (default: as ordinary text)")
    p.set_defaults(func=_run_tokenize)


def _run_tokenize(args) -> int:
    from .tokenizer import Tokenizer

    tok = Tokenizer.gpt2()
    text = " ".join(args.items) if args.items else sys.stdin.read()
    if args.decode:
        ids = []
        for word in text.replace(",", " ").split():
            try:
                ids.append(int(word))
            except ValueError:
                raise CLIError(f"not a token id: {word!r} (ids are integers from 0 to {tok.n_vocab - 1})") from None
        sys.stdout.write(tok.decode(ids) + "\n")
        return 0
    ids = tok.encode(text, allowed_special="all" if args.allow_special else set(), disallowed_special=())
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
# WEIGHTS-SECTION


# --- generate / summarize / translate / answer / score (generation issue) -------
# GENERATION-SECTION


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpt2np",
        description="GPT-2 in NumPy: tokenize, download, convert, generate, score.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, value in list(globals().items()):
        if name.startswith("_add_") and callable(value):
            value(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("gpt2np: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except (CLIError, ValueError, OSError, NotImplementedError) as err:
        print(f"gpt2np {args.command}: error: {err}", file=sys.stderr)
        return 1
