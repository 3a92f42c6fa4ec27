"""Byte-level BPE tokenizer (placeholder: the tokenizer issue writes this module)."""


class Tokenizer:
    pass
