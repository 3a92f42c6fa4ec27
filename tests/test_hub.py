"""Downloads against a local HTTP server on 127.0.0.1 started by the tests.

The server serves a tiny checkpoint (the committed TF fixture plus a small fake tokenizer file)
under a fake size "tiny" added to the registry, and can be told to drop the connection
part-way, ignore Range, return errors or lie about a file's size.
"""

from __future__ import annotations

import hashlib
import pathlib

import numpy as np
import pytest

from gpt2np import hub
from gpt2np.config import PRESETS
from gpt2np.formats import WeightsError, flatten, load_npz

from helpers import DATA, SIZE_NAMES, TINY_HP, VOCAB, Server, check_npz, spellings, tiny, tiny_files  # noqa: F401  (tiny: a fixture)


@pytest.fixture
def server():
    s = Server(tiny_files())
    yield s
    s.close()


def fetch(server, tmp_path, **kw):
    return hub.pretrained_npz("tiny", base_url=server.url, cache_dir=tmp_path / "cache", progress=False, **kw)


def no_leftovers(folder: pathlib.Path):
    return [p.name for p in folder.rglob("*") if p.name.endswith((".part", ".tmp"))]


def test_complete_download_convert_and_cache(server, tiny, tmp_path):
    path = fetch(server, tmp_path)
    assert path == tmp_path / "cache" / "gpt2-tiny.npz"
    check_npz(path)
    for name, body in tiny_files().items():
        assert (tmp_path / "cache" / "tiny" / name).read_bytes() == body
    assert not no_leftovers(tmp_path / "cache")
    n = len(server.requests)
    assert n == len(tiny_files()) and all(r is None for _, r in server.requests)
    assert fetch(server, tmp_path) == path  # second call: from the cache, no request
    assert len(server.requests) == n


def test_resume_after_dropped_connection(server, tiny, tmp_path):
    path = f"/tiny/{DATA}"
    server.drop_after[path] = 3072
    fetch(server, tmp_path, chunk_size=1024)  # the bytes of complete chunks are kept
    data_requests = [r for p, r in server.requests if p == path]
    assert data_requests == [None, "bytes=3072-"]
    assert (tmp_path / "cache" / "tiny" / DATA).read_bytes() == tiny_files()[DATA]


def test_server_ignoring_range_restarts(server, tiny, tmp_path):
    path = f"/tiny/{DATA}"
    server.drop_after[path] = 1024
    server.ignore_range = True
    dest = hub.download_file(server.url + path, tmp_path / DATA, len(tiny_files()[DATA]), progress=False,
                             chunk_size=512)
    assert [r for p, r in server.requests if p == path] == [None, "bytes=1024-"]
    assert dest.read_bytes() == tiny_files()[DATA]


def test_partial_file_from_an_earlier_run_is_resumed(server, tiny, tmp_path):
    body = tiny_files()[DATA]
    (tmp_path / (DATA + ".part")).write_bytes(body[:123])
    hub.download_file(server.url + f"/tiny/{DATA}", tmp_path / DATA, len(body), progress=False)
    assert server.requests == [(f"/tiny/{DATA}", "bytes=123-")]
    assert (tmp_path / DATA).read_bytes() == body


def test_transient_errors_are_retried(server, tiny, tmp_path):
    server.status["/tiny/hparams.json"] = [503, 429]
    check_npz(fetch(server, tmp_path))
    assert [p for p, _ in server.requests].count("/tiny/hparams.json") == 3


def test_persistent_5xx_gives_up(server, tiny, tmp_path):
    server.status["/tiny/hparams.json"] = [500] * 10
    with pytest.raises(hub.DownloadError, match=r"HTTP 500 .*hparams.json \(after 3 attempts\)"):
        fetch(server, tmp_path, retries=2)


def test_404(server, tiny, tmp_path):
    del server.files[f"/tiny/{DATA}"]
    with pytest.raises(hub.DownloadError, match=rf"HTTP 404 .* for {server.url}/tiny/{DATA}"):
        fetch(server, tmp_path)
    assert not (tmp_path / "cache" / "tiny" / DATA).exists()
    assert not (tmp_path / "cache" / "gpt2-tiny.npz").exists()


def test_size_mismatch_refused(server, tiny, tmp_path):
    server.files[f"/tiny/{DATA}"] += b"extra"
    with pytest.raises(hub.DownloadError, match=r"reports \d+ bytes, expected \d+; refusing"):
        fetch(server, tmp_path)
    assert not (tmp_path / "cache" / "tiny" / DATA).exists()
    assert not no_leftovers(tmp_path / "cache")


def test_final_size_checked_when_server_lies(server, tiny, tmp_path):
    """Content-Length agrees with the registry but the body is 8 bytes short: the short reply is
    not taken as the file; the retry asks for the rest, the server says nothing follows (416),
    so the partial file cannot be completed: it is deleted and the download refused."""
    body = tiny_files()[DATA]
    server.files[f"/tiny/{DATA}"] = body[:-8]
    server.lie_length[f"/tiny/{DATA}"] = len(body)
    with pytest.raises(hub.DownloadError, match=r"^HTTP 416 for a partial file \(after 2 attempts\)$"):
        hub.download_file(server.url + f"/tiny/{DATA}", tmp_path / DATA, len(body), progress=False, retries=1)
    assert server.requests == [(f"/tiny/{DATA}", None), (f"/tiny/{DATA}", f"bytes={len(body) - 8}-")]
    assert not (tmp_path / DATA).exists()
    assert not no_leftovers(tmp_path), "the .part that cannot be completed is deleted"


def test_sha256_mismatch_refused(server, tiny, tmp_path):
    server.files["/tiny/vocab.bpe"] = VOCAB.replace(b"h e", b"e h")  # same size, other bytes
    with pytest.raises(hub.DownloadError, match="sha256 .* does not match"):
        fetch(server, tmp_path)
    assert not (tmp_path / "cache" / "tiny" / "vocab.bpe").exists()
    assert not no_leftovers(tmp_path / "cache")


def test_corrupt_tensor_names_the_tensor_and_is_deleted(server, tiny, tmp_path):
    body = bytearray(tiny_files()[DATA])
    body[-3] ^= 0xFF  # the last tensor in sorted order: model/wte
    server.files[f"/tiny/{DATA}"] = bytes(body)
    with pytest.raises(WeightsError, match="tensor model/wte fails its CRC32C"):
        fetch(server, tmp_path)
    assert not (tmp_path / "cache" / "tiny" / DATA).exists()
    assert not (tmp_path / "cache" / "gpt2-tiny.npz").exists()
    server.files[f"/tiny/{DATA}"] = tiny_files()[DATA]  # the next call downloads it anew
    check_npz(fetch(server, tmp_path))


def test_wrong_hparams_for_the_size(server, tiny, monkeypatch, tmp_path):
    monkeypatch.setitem(hub.MODELS, "tiny", hub.ModelSpec("tiny", {**TINY_HP, "n_head": 4}, tiny.files, sha256=tiny.sha256))
    with pytest.raises(WeightsError, match="expected .* for tiny"):
        fetch(server, tmp_path)


def test_offline(server, tiny, monkeypatch, tmp_path):
    monkeypatch.setenv("GPT2NP_OFFLINE", "1")
    with pytest.raises(hub.DownloadError, match=r"offline .* not in the cache"):
        fetch(server, tmp_path)
    assert server.requests == []
    monkeypatch.delenv("GPT2NP_OFFLINE")
    path = fetch(server, tmp_path)
    n = len(server.requests)
    path.unlink()  # checkpoint files are cached: offline conversion works without the network
    monkeypatch.setenv("GPT2NP_OFFLINE", "1")
    check_npz(fetch(server, tmp_path))
    assert len(server.requests) == n


def test_mirror_env_var_and_cache_env(server, tiny, monkeypatch, tmp_path):
    monkeypatch.setenv("GPT2NP_BASE_URL", server.url + "/")
    monkeypatch.setenv("GPT2NP_HOME", str(tmp_path / "home"))
    path = hub.pretrained_npz("tiny", progress=False)
    assert path == tmp_path / "home" / "gpt2-tiny.npz"
    assert server.requests and all(p.startswith("/tiny/") for p, _ in server.requests)
    check_npz(path)


def test_local_folder_mirror(tiny, tmp_path):
    for name, body in tiny_files().items():
        (tmp_path / "mirror" / "tiny").mkdir(parents=True, exist_ok=True)
        (tmp_path / "mirror" / "tiny" / name).write_bytes(body)
    check_npz(hub.pretrained_npz("tiny", base_url=str(tmp_path / "mirror"), cache_dir=tmp_path / "c", progress=False))
    (tmp_path / "mirror" / "tiny" / "vocab.bpe").unlink()
    with pytest.raises(hub.DownloadError, match="not found in the local mirror"):
        hub.pretrained_npz("tiny", base_url=(tmp_path / "mirror").as_uri(), cache_dir=tmp_path / "d", progress=False)


def test_cache_folder_resolution(monkeypatch, tmp_path):
    for var in ("GPT2NP_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert hub.cache_folder() == tmp_path / ".cache" / "gpt2np"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.cache_folder() == tmp_path / "xdg" / "gpt2np"
    monkeypatch.setenv("GPT2NP_HOME", str(tmp_path / "h"))
    assert hub.cache_folder() == tmp_path / "h"
    assert hub.cache_folder(tmp_path / "x") == tmp_path / "x"


def test_unknown_size_lists_known_ones():
    with pytest.raises(hub.DownloadError, match=r"unknown model size '7B'; known sizes: 124M, 355M, 774M, 1558M"):
        hub.pretrained_npz("7B")
    assert hub.get_spec("117M").size == "124M"
    for name, size in (("124m", "124M"), ("1558m", "1558M"), ("GPT2-Medium", "355M"), ("345m", "355M")):
        assert hub.get_spec(name).size == size  # any letter case
    with pytest.raises(hub.DownloadError, match=r"unknown model size '124k'"):
        hub.get_spec("124k")


@pytest.mark.parametrize("name, size", SIZE_NAMES.items())
def test_every_size_name_and_alias_in_any_letter_case(name, size, tmp_path):
    for spelling in spellings(name):
        assert hub.get_spec(spelling) is hub.MODELS[size], spelling
        assert hub.npz_path(spelling, tmp_path) == tmp_path / f"gpt2-{size}.npz", spelling


def test_registry_is_keyed_by_the_config_sizes():
    assert list(hub.MODELS) == [name for name in PRESETS if name != "gpt2np-mini"]  # OpenAI's; not the bundled one
    for name in ("gpt2np-mini", "mini", "Bundled"):  # package data: never downloaded
        with pytest.raises(hub.DownloadError, match=r"^gpt2np-mini is gpt2np's bundled model, shipped in the package"):
            hub.get_spec(name)
    for size, spec in hub.MODELS.items():
        assert spec.size == size and spec.hparams == PRESETS[size].to_dict()
    with pytest.raises(hub.DownloadError, match=r"or an alias \(124M: 117M, gpt2, small; .*1558M: 1\.5B"):
        hub.get_spec("gpt3")


def test_network_unreachable_says_what_to_do(tiny, tmp_path):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(hub.DownloadError, match=r"cannot reach 127\.0\.0\.1:\d+ \(connection refused\);.*GPT2NP_BASE_URL.*gpt2np convert"):
        hub.pretrained_npz("tiny", base_url=f"http://127.0.0.1:{port}", cache_dir=tmp_path, progress=False, retries=1)
    assert not no_leftovers(tmp_path)
    assert not (tmp_path / "tiny").exists(), "nothing was fetched, so no empty folder is left in the cache"


def test_registry_matches_formats_doc():
    """Sizes from docs/formats.md; exact where observed, None (approximate) where only calculated."""
    s = hub.MODELS["124M"]
    assert s.files["model.ckpt.data-00000-of-00001"] == 124_439_808 * 4
    assert s.files["model.ckpt.index"] == 5215
    assert hub.MODELS["355M"].files["model.ckpt.data-00000-of-00001"] == 354_823_168 * 4
    assert hub.MODELS["774M"].files["model.ckpt.data-00000-of-00001"] == 774_030_080 * 4
    assert hub.MODELS["1558M"].files["model.ckpt.data-00000-of-00001"] == 1_557_611_200 * 4
    assert hub.MODELS["774M"].files["model.ckpt.index"] is None  # approximate: never enforced
    for spec in hub.MODELS.values():
        assert "model.ckpt.meta" not in spec.files
        d, L = spec.hparams["n_embd"], spec.hparams["n_layer"]
        n = 50257 * d + 1024 * d + L * (12 * d * d + 13 * d) + 2 * d
        assert spec.files["model.ckpt.data-00000-of-00001"] == 4 * n


def test_registry_claims_no_size_for_the_files_checked_by_content():
    """hparams.json and the checkpoint state file are checked by what they say: the registry
    holds no (calculated) size for them, exact or approximate (issue 15)."""
    for spec in hub.MODELS.values():
        for name in ("hparams.json", "checkpoint"):
            assert name in spec.files and spec.files[name] is None, (spec.size, name)
            assert name not in spec.approx_sizes, (spec.size, name)


def test_hparams_json_without_a_registry_size_is_checked_by_content(server, tiny, monkeypatch, tmp_path):
    """As in the real registry (no size for hparams.json): other spacing is the same file, other
    values are refused, naming the file and the size."""
    import json

    spec = hub.ModelSpec("tiny", TINY_HP, {**tiny.files, "hparams.json": None, "checkpoint": None},
                         sha256=tiny.sha256)
    monkeypatch.setitem(hub.MODELS, "tiny", spec)
    server.files["/tiny/hparams.json"] = json.dumps(TINY_HP, indent=4).encode() + b"\n\n"
    check_npz(fetch(server, tmp_path))
    server.files["/tiny/hparams.json"] = json.dumps({**TINY_HP, "n_layer": 3}).encode()
    with pytest.raises(WeightsError, match=r"hparams\.json says .*n_layer.: 3.*expected .* for tiny"):
        fetch(server, tmp_path / "other")


def test_registry_tokenizer_files_match_the_bundled_assets():
    """The bundled vocabulary is the one OpenAI serves: same sizes and sha256 as the registry."""
    import hashlib
    assets = pathlib.Path(hub.__file__).parent / "assets"
    for name, digest in hub.TOKENIZER_SHA256.items():
        body = (assets / name).read_bytes()
        assert hashlib.sha256(body).hexdigest() == digest
        assert all(spec.files[name] == len(body) for spec in hub.MODELS.values())


def test_disk_full_during_download(server, tiny, monkeypatch, tmp_path):
    """The disk fills after 2048 bytes of the data file: one line saying so (not retried), the
    bytes written so far kept in the .part, nothing under the final name; with room again, the
    next run asks only for the rest, as the message promises."""
    import builtins
    import errno

    room = 2048

    class Full:
        """The .part file of a disk with ``room`` bytes left: a short write, then ENOSPC."""

        def __init__(self, path, mode="r", *a, **k):
            self.f = real_open(path, mode, *a, **k)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()
            return False

        def write(self, b):
            nonlocal room
            self.f.write(b[:room])
            if len(b) > room:
                room = 0
                raise OSError(errno.ENOSPC, "No space left on device")
            room -= len(b)

        def flush(self):
            self.f.flush()

    real_open = builtins.open
    part = tmp_path / "cache" / "tiny" / (DATA + ".part")
    monkeypatch.setattr(hub, "open", lambda p, mode="r", *a, **k: (Full if str(p) == str(part) else real_open)(p, mode, *a, **k),
                        raising=False)
    with pytest.raises(hub.DownloadError) as e:
        fetch(server, tmp_path, chunk_size=1024)
    msg = str(e.value)
    assert msg.startswith(f"disk full while writing {tmp_path / 'cache' / 'tiny' / DATA}; free some space") and "\n" not in msg
    assert [r for p, r in server.requests if p == f"/tiny/{DATA}"] == [None], "a full disk is not retried"
    assert part.read_bytes() == tiny_files()[DATA][:2048]
    assert not (tmp_path / "cache" / "tiny" / DATA).exists() and not (tmp_path / "cache" / "gpt2-tiny.npz").exists()
    monkeypatch.delattr(hub, "open")  # room again
    check_npz(fetch(server, tmp_path))
    assert [r for p, r in server.requests if p == f"/tiny/{DATA}"] == [None, "bytes=2048-"]


def test_hugging_face_source(monkeypatch, tmp_path):
    st = pathlib.Path(__file__).parent / "fixtures" / "st_tiny" / "gpt2.safetensors"
    body = st.read_bytes()
    s = Server({"model.safetensors": body}, size="org/tiny/resolve/main")
    try:
        monkeypatch.setattr(hub, "HF_URL", s.url + "/{repo}/resolve/{revision}/{file}")
        hp = {"n_vocab": 20, "n_ctx": 8, "n_embd": 64, "n_head": 1, "n_layer": 2}
        monkeypatch.setitem(hub.MODELS, "tinyhf", hub.ModelSpec("tinyhf", hp, {}, hf_repo="org/tiny",
                                                                hf_size=len(body),
                                                                hf_sha256=hashlib.sha256(body).hexdigest()))
        path = hub.pretrained_npz("tinyhf", source="huggingface", cache_dir=tmp_path, progress=False)
        got_hp, params = load_npz(path)
        assert got_hp == hp
        want = np.load(st.parent / "gpt2_expected.npz")
        for k, v in flatten(params).items():
            np.testing.assert_array_equal(v, want[k], err_msg=k)
        assert s.requests == [("/org/tiny/resolve/main/model.safetensors", None)]
    finally:
        s.close()
