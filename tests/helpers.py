"""What the test files share: builders, fixtures and fakes (a helper module; pytest collects no tests here).

- ``FIXTURES`` and the tiny checkpoint's hparams ``TINY_HP``;
- params trees written out by hand, independently of gpt2np's own definition of the tree:
  ``params_tree``, ``tree_from_flat`` (the fixtures' ``params/blocks/0/...`` arrays),
  ``tree_from_hf`` / ``params_from_transformers`` / ``model_from_transformers`` (Hugging Face
  names), ``hf_name``;
- ``SIZE_NAMES``: every accepted name of each GPT-2 size, written independently of gpt2np.config;
- the forward-pass reference fixture: the ``ref`` fixture, ``reference_config``,
  ``reference_params``, ``reference_model``, ``assert_close``;
- comparisons: ``assert_same_tree``, ``assert_matches_tf_fixture``, ``check_npz``;
- a tiny checkpoint served over HTTP: ``tiny_files``, ``Server``, the ``tiny`` fixture;
- ``Scripted``: a stand-in model that follows a script;
- a TensorFlow bundle writer (``write_bundle`` and its parts), proved byte-exact against
  TensorFlow's own files by test_formats_tfwriter.py.

A test module imports a fixture from here by name (``from helpers import ref  # noqa: F401``).
"""

from __future__ import annotations

import hashlib
import http.server
import importlib.util
import pathlib
import struct
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from gpt2np import GPT2, Config, hub
from gpt2np.formats import flatten, load_npz
from gpt2np.formats.crc32c import crc32c, mask
from gpt2np.formats.names import flat_to_tf

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
SCRIPTS = pathlib.Path(__file__).resolve().parent.parent / "scripts"
TF_TINY = FIXTURES / "tf_tiny"  # a 2-layer checkpoint written by TensorFlow, and its values
TINY_HP = {"n_vocab": 20, "n_ctx": 8, "n_embd": 8, "n_head": 2, "n_layer": 2}  # tf_tiny's hparams
EOT = 50256


def load_script(name: str):
    """scripts/NAME.py as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- params trees, by hand -----------------------------------------------------------------------

BLOCK_LEAVES = ("ln_1.g", "ln_1.b", "attn.c_attn.w", "attn.c_attn.b", "attn.c_proj.w", "attn.c_proj.b",
                "ln_2.g", "ln_2.b", "mlp.c_fc.w", "mlp.c_fc.b", "mlp.c_proj.w", "mlp.c_proj.b")


def params_tree(n_layer: int, leaf) -> dict:
    """GPT-2's params tree of ``n_layer`` blocks with ``leaf(flat name)`` at each leaf
    ("wte", "wpe", "blocks.0.ln_1.g", ..., "ln_f.b"), in the tree's order."""

    def nest(prefix, names):
        out: dict = {}
        for name in names:
            *parents, last = name.split(".")
            node = out
            for p in parents:
                node = node.setdefault(p, {})
            node[last] = leaf(prefix + name)
        return out

    return {"wte": leaf("wte"), "wpe": leaf("wpe"),
            "blocks": [nest(f"blocks.{i}.", BLOCK_LEAVES) for i in range(n_layer)],
            "ln_f": nest("ln_f.", ("g", "b"))}


def tree_from_flat(arrays, prefix: str = "params/", dtype=None) -> dict:
    """The fixtures' arrays ``params/wte``, ``params/blocks/0/attn/c_attn/w``, ... (other keys are
    ignored) as a params tree, converted to ``dtype`` if given.  Every ``params/`` array is used."""
    names = [k[len(prefix):] for k in arrays if k.startswith(prefix)]
    n_layer = len({n.split("/")[1] for n in names if n.startswith("blocks/")})
    used = set()

    def leaf(name):
        key = prefix + name.replace(".", "/")
        used.add(key)
        return arrays[key] if dtype is None else arrays[key].astype(dtype)

    tree = params_tree(n_layer, leaf)
    unused = sorted(set(prefix + n for n in names) - used)
    assert not unused, f"not GPT-2 params tree names: {unused}"
    return tree


def hf_name(name: str) -> str:
    """A flat name as Hugging Face's GPT2Model has it: ``blocks.3.attn.c_attn.w`` ->
    ``h.3.attn.c_attn.weight``, ``ln_f.g`` -> ``ln_f.weight``, ``wte`` -> ``wte.weight``."""
    parts = name.split(".")
    if parts[0] in ("wte", "wpe"):
        return f"{parts[0]}.weight"
    if parts[0] == "blocks":
        parts[0] = "h"
    parts[-1] = "bias" if parts[-1] == "b" else "weight"
    return ".".join(parts)


def tree_from_hf(state_dict, n_layer: int, prefix: str = "") -> dict:
    """A Hugging Face GPT-2 state dict of NumPy arrays (names ``prefix + hf_name(...)``) as a
    params tree; Conv1D weights are ``[n_in, n_out]`` there too, so nothing is transposed."""
    return params_tree(n_layer, lambda name: state_dict[prefix + hf_name(name)])


def params_from_transformers(model) -> dict:
    """transformers' ``GPT2LMHeadModel`` as a params tree."""
    sd = {k: v.detach().numpy() for k, v in model.transformer.state_dict().items()}
    return tree_from_hf(sd, model.config.n_layer)


def model_from_transformers(model) -> GPT2:
    """transformers' ``GPT2LMHeadModel`` as a GPT2 with the same weights (and dtype)."""
    c = model.config
    config = Config(n_vocab=c.vocab_size, n_ctx=c.n_positions, n_embd=c.n_embd, n_head=c.n_head, n_layer=c.n_layer)
    return GPT2(config, params_from_transformers(model))


def assert_same_tree(a, b):
    """The same names, and each tensor equal with the same dtype."""
    fa, fb = flatten(a), flatten(b)
    assert sorted(fa) == sorted(fb)
    for k in fa:
        assert fa[k].dtype == fb[k].dtype and np.array_equal(fa[k], fb[k]), k


# ---- the names of the sizes ----------------------------------------------------------------------

# every name a size is known by -> OpenAI's name for it (any letter case and surrounding spaces work too)
SIZE_NAMES = {
    "124M": "124M", "117M": "124M", "gpt2": "124M", "small": "124M",
    "355M": "355M", "345M": "355M", "gpt2-medium": "355M", "medium": "355M",
    "774M": "774M", "gpt2-large": "774M", "large": "774M",
    "1558M": "1558M", "1.5B": "1558M", "gpt2-xl": "1558M", "xl": "1558M",
}


def spellings(name: str) -> list[str]:
    """``name`` as written, in lower case, in upper case, with its case swapped, and padded with spaces."""
    return [name, name.lower(), name.upper(), name.swapcase(), f"  {name.title()}\t"]


# ---- the forward-pass reference (tests/fixtures/reference_gpt2_tiny.npz) -------------------------

REFERENCE = FIXTURES / "reference_gpt2_tiny.npz"
ATOL_F64 = 1e-10
RTOL_F32 = 1e-5


def assert_close(name, ours, ref, dtype=np.float64, scale=None):
    """Fail with the tensor's name, a few values from each side and the largest difference.

    float64: |ours - ref| <= 1e-10.  float32: |ours - ref| <= 1e-5 · max|ref| (or · ``scale``).
    """
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape, f"{name}: shape {ours.shape}, reference {ref.shape}"
    if np.dtype(dtype) == np.float64:
        limit = ATOL_F64
    else:
        limit = RTOL_F32 * (np.abs(ref).max() if scale is None else scale)
    return assert_within(name, ours, ref, limit, f"{limit:.3e}")


def assert_within(name, ours, ref, limit, limit_text):
    """Fail unless |ours - ref| <= limit everywhere (NaN fails), naming the tensor, the worst
    entry and a few values of each side; returns the largest difference."""
    diff = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
    worst = diff.max() if diff.size else 0.0
    if not worst <= limit:  # also catches NaN
        at = np.unravel_index(np.nanargmax(diff) if np.isfinite(diff).any() else 0, diff.shape)
        pytest.fail(
            f"{name}: largest difference {worst:.3e} at index {tuple(int(i) for i in at)} "
            f"(ours {ours[at]!r}, reference {ref[at]!r}) exceeds {limit_text}\n"
            f"  ours      first values: {np.array2string(ours.ravel()[:6], precision=8)}\n"
            f"  reference first values: {np.array2string(ref.ravel()[:6], precision=8)}",
            pytrace=False,
        )
    return worst


@pytest.fixture(scope="module")
def ref():
    """The reference fixture's arrays, by name."""
    with np.load(REFERENCE) as z:
        return {k: z[k] for k in z.files}


def reference_config(ref) -> Config:
    return Config(**dict(zip(["n_vocab", "n_ctx", "n_embd", "n_head", "n_layer"], ref["hparams"].tolist())))


def reference_params(ref, dtype=np.float64) -> dict:
    """The fixture's flat ``params/blocks/0/attn/c_attn/w`` arrays as a params tree."""
    return tree_from_flat(ref, dtype=dtype)


def reference_model(ref, dtype=np.float64) -> GPT2:
    return GPT2(reference_config(ref), reference_params(ref, dtype))


# ---- the TF fixture and a tiny checkpoint served over HTTP ---------------------------------------

DATA = "model.ckpt.data-00000-of-00001"
VOCAB = b"#version: 0.2\nh e\n"  # stands in for a tokenizer file checked by sha256


def assert_matches_tf_fixture(params):
    """``params`` holds the values TensorFlow wrote into tests/fixtures/tf_tiny (Conv1D weights
    without their leading axis of 1)."""
    want = np.load(TF_TINY / "gpt2_expected.npz")
    for name, arr in flatten(params).items():
        tf = want[flat_to_tf(name)]
        np.testing.assert_array_equal(arr, tf[0] if name.endswith(".w") else tf, err_msg=name)


def check_npz(path):
    """``path`` is the tf_tiny checkpoint converted to an .npz."""
    hp, params = load_npz(path)
    assert hp == TINY_HP
    assert_matches_tf_fixture(params)


def tiny_files() -> dict[str, bytes]:
    """The files of the tf_tiny checkpoint, with a small stand-in for vocab.bpe."""
    files = {p.name: p.read_bytes() for p in (TF_TINY / "gpt2").iterdir()}
    files["vocab.bpe"] = VOCAB
    return files


class Server:
    """Serves ``files`` at /<size>/<name> on 127.0.0.1; behaviour switches are plain attributes."""

    def __init__(self, files: dict, size: str = "tiny"):
        self.files = {f"/{size}/{k}": v for k, v in files.items()}
        self.requests: list[tuple[str, str | None]] = []
        self.drop_after: dict[str, int] = {}  # path -> bytes sent before closing (once)
        self.ignore_range = False
        self.status: dict[str, list[int]] = {}  # path -> statuses to return first
        self.lie_length: dict[str, int] = {}  # path -> Content-Length to claim
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                if self.path in server.status and server.status[self.path]:
                    self.send_error(server.status[self.path].pop(0))
                    return
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if rng and not server.ignore_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                part = body[start:]
                self.send_header("Content-Length", str(server.lie_length.get(self.path, len(part))))
                self.end_headers()
                cut = server.drop_after.pop(self.path, None)
                if cut is not None:
                    self.wfile.write(part[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(part)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def tiny(monkeypatch, tmp_path_factory):
    """Register the fake size "tiny" with exact sizes and a sha256 for vocab.bpe; isolate the env.

    ``GPT2NP_HOME`` points at a fresh folder of its own (outside the test's ``tmp_path``), as
    conftest.py's fixture does: a test that forgets ``cache_dir`` writes there, never to the
    user's cache.  The mirror and offline variables are cleared."""
    files = tiny_files()
    spec = hub.ModelSpec("tiny", TINY_HP, {k: len(v) for k, v in files.items()},
                         sha256={"vocab.bpe": hashlib.sha256(VOCAB).hexdigest()})
    monkeypatch.setitem(hub.MODELS, "tiny", spec)
    monkeypatch.setenv("GPT2NP_HOME", str(tmp_path_factory.mktemp("gpt2np-home")))
    for var in ("GPT2NP_BASE_URL", "GPT2NP_OFFLINE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hub.time, "sleep", lambda s: None)  # no real backoff waits in tests
    return spec


# ---- a scripted stand-in for the model -----------------------------------------------------------


class Scripted:
    """A model whose next token is the next id of its script (one script per row), then EOT.

    Its cache has the attributes of gpt2np's KVCache that the generation loop uses when it
    drops finished rows; the original row index rides along in ``keys`` so the script of
    each row is still known after rows were dropped.
    """

    def __init__(self, *scripts, n_ctx=1024):
        self.scripts = [list(s) for s in scripts]
        self.config = SimpleNamespace(n_vocab=50257, n_ctx=n_ctx)
        self.calls = 0
        self.prompts = None

    def new_cache(self, batch_size=1, max_len=None):
        keys = np.zeros((1, batch_size, 1, max_len, 1))
        keys[0, :, 0, 0, 0] = np.arange(batch_size)
        return SimpleNamespace(keys=keys, values=np.zeros_like(keys), mask=np.zeros((batch_size, max_len), bool),
                               next_position=np.zeros(batch_size, np.int64), length=0, max_len=max_len)

    def __call__(self, ids, attention_mask=None, cache=None, last_only=False):
        ids = np.asarray(ids)
        if cache.length == 0:
            mask = np.ones(ids.shape, bool) if attention_mask is None else np.asarray(attention_mask, bool)
            self.prompts = [row[m].tolist() for row, m in zip(ids, mask)]
            self.prompt_len = ids.shape[1]
        step = 0 if cache.length == 0 else cache.length - self.prompt_len + 1
        cache.length += ids.shape[1]
        self.calls += 1
        logits = np.zeros((ids.shape[0], 50257), dtype=np.float32)
        for i, row in enumerate(cache.keys[0, :, 0, 0, 0].astype(int)):
            script = self.scripts[row % len(self.scripts)]
            logits[i, script[step] if step < len(script) else EOT] = 50.0  # p ~ 1 even when sampling
        return logits


# ---- a TensorFlow bundle writer ------------------------------------------------------------------
# The package only reads checkpoints.  To build corrupted or unusual checkpoints (unknown dtypes,
# slices, several shards, big-endian headers) and full-size random ones for benchmarks, these
# functions encode bundles the way TF's BundleWriter does.

NP_TO_TF = {"<f4": 1, "<f8": 2, "<i4": 3, "|u1": 4, "<i2": 5, "|i1": 6, "<c8": 8, "<i8": 9, "|b1": 10,
            "<u2": 17, "<c16": 18, "<f2": 19, "<u4": 22, "<u8": 23}


def varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(num: int, wt: int, value) -> bytes:
    tag = varint(num << 3 | wt)
    if wt == 0:
        return tag + varint(value)
    if wt == 2:
        return tag + varint(len(value)) + value
    if wt == 5:
        return tag + struct.pack("<I", value)
    raise ValueError(f"wire type {wt} is not one of 0, 2, 5")


def entry_proto(dtype: int, shape, offset: int, size: int, crc: int | None, shard_id: int = 0,
                slices: int = 0) -> bytes:
    """BundleEntryProto with proto3 rules: fields at their default value are omitted."""
    shape_msg = b"".join(field(2, 2, field(1, 0, d) if d else b"") for d in shape)
    out = (field(1, 0, dtype) if dtype else b"") + field(2, 2, shape_msg)
    out += field(3, 0, shard_id) if shard_id else b""
    out += field(4, 0, offset) if offset else b""
    out += field(5, 0, size) if size else b""
    out += field(6, 5, crc) if crc is not None else b""
    out += b"".join(field(7, 2, field(1, 2, field(1, 0, 0) + field(2, 0, 1))) for _ in range(slices))
    return out


def header_proto(num_shards=1, endianness=0, producer=1, min_consumer=0, bad_consumers=()) -> bytes:
    version = field(1, 0, producer) if producer else b""
    version += field(2, 0, min_consumer) if min_consumer else b""
    version += b"".join(field(3, 0, b) for b in bad_consumers)
    out = field(1, 0, num_shards) if num_shards else b""
    out += field(2, 0, endianness) if endianness else b""
    return out + field(3, 2, version)


def block(items, restart_interval: int) -> bytes:
    """Prefix-compressed entries + restart array + count (LevelDB BlockBuilder)."""
    out, restarts, prev = bytearray(), [], b""
    for i, (key, value) in enumerate(items):
        shared = 0
        if i % restart_interval == 0:
            restarts.append(len(out))
        else:
            while shared < min(len(prev), len(key)) and prev[shared] == key[shared]:
                shared += 1
        out += varint(shared) + varint(len(key) - shared) + varint(len(value)) + key[shared:] + value
        prev = key
    restarts = restarts or [0]
    return bytes(out) + struct.pack(f"<{len(restarts)}I", *restarts) + struct.pack("<I", len(restarts))


def with_trailer(contents: bytes) -> bytes:
    return contents + b"\x00" + struct.pack("<I", mask(crc32c(contents + b"\x00")))


def short_successor(key: bytes) -> bytes:
    for i, b in enumerate(key):
        if b != 0xFF:
            return key[:i] + bytes([b + 1])
    return key


def sstable(items) -> bytes:
    """One data block (fine below 256 KiB, like every GPT-2 index), empty metaindex, index, footer."""
    data = block(items, 16)
    out = with_trailer(data)
    meta_handle = varint(len(out)) + varint(8)
    out += with_trailer(block([], 1))
    index_handle = varint(len(out))
    index = block([(short_successor(items[-1][0]), varint(0) + varint(len(data)))], 1)
    index_handle += varint(len(index))
    out += with_trailer(index)
    footer = meta_handle + index_handle
    return out + footer + b"\x00" * (40 - len(footer)) + bytes.fromhex("57fb808b247547db")


def write_bundle(prefix, tensors: dict, dtype_override: dict | None = None, endianness: int = 0,
                 header: bytes | None = None, entry_edit=None) -> None:
    """Write ``{name: array}`` as a TF bundle at ``prefix`` (data in sorted-name order, like TF 2.x).

    ``entry_edit(name, fields: dict) -> dict`` may change an entry's fields before encoding.
    """
    prefix = pathlib.Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    items = [(b"", header if header is not None else header_proto(endianness=endianness))]
    offset = 0
    with open(f"{prefix}.data-00000-of-00001", "wb") as f:
        for name in sorted(tensors, key=lambda s: s.encode()):
            arr = np.ascontiguousarray(tensors[name])
            code = NP_TO_TF[arr.dtype.newbyteorder("<").str]
            if endianness:
                arr = arr.astype(arr.dtype.newbyteorder(">"))
            raw = arr.tobytes()
            fields = dict(dtype=(dtype_override or {}).get(name, code), shape=arr.shape, offset=offset,
                          size=len(raw), crc=mask(crc32c(raw)))
            if entry_edit:
                fields = entry_edit(name, fields)
            items.append((name.encode(), entry_proto(**fields)))
            f.write(raw)
            offset += len(raw)
    pathlib.Path(f"{prefix}.index").write_bytes(sstable(items))
