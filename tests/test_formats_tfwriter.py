"""The minimal TensorFlow-bundle *writer* of helpers.py, checked against TensorFlow's bytes.

The package only reads checkpoints; the tests build corrupted or unusual ones (unknown dtypes,
slices, several shards, big-endian headers), and the benchmarks full-size random ones, with
``helpers.write_bundle``.  ``test_writer_reproduces_tensorflow`` proves it by re-encoding the
committed fixture, which TensorFlow wrote, byte for byte.
"""

from __future__ import annotations

import numpy as np

from helpers import TF_TINY, block, short_successor, varint, write_bundle


def test_writer_reproduces_tensorflow(tmp_path):
    """Re-encoding TF's own GPT-2 fixture gives TF's exact bytes, index and data."""
    expected = dict(np.load(TF_TINY / "gpt2_expected.npz"))
    write_bundle(tmp_path / "model.ckpt", expected)
    for suffix in (".index", ".data-00000-of-00001"):
        assert (tmp_path / f"model.ckpt{suffix}").read_bytes() == (TF_TINY / "gpt2" / f"model.ckpt{suffix}").read_bytes()


def test_varint_and_sstable_helpers():
    assert varint(300) == b"\xac\x02"
    assert varint(-1) == b"\xff" * 9 + b"\x01"
    assert short_successor(b"model/wte") == b"n"
    assert block([], 1) == bytes.fromhex("0000000001000000")
