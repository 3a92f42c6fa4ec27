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
# TOKENIZE-SECTION


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
