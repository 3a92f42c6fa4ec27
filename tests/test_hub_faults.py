"""Downloads and the cache under faults: a cache that heals, downloads that can run side by
side, honest progress, errors that name what failed.

A local HTTP server on 127.0.0.1 (started here) serves the tiny TF checkpoint under the fake
size "tiny", and can cut, trickle or stall a reply, omit its length, or redirect in a loop.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import pathlib
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from gpt2np import hub
from gpt2np.formats import WeightsError, read_tf_checkpoint, save_npz
from gpt2np.formats.npz import npz_metadata

from helpers import DATA, TINY_HP, VOCAB, check_npz, tiny, tiny_files  # noqa: F401  (tiny: a fixture)

ROOT = pathlib.Path(__file__).resolve().parent.parent
INDEX = "model.ckpt.index"
_sleep = time.sleep  # the server's own: the tiny fixture replaces time.sleep (hub's backoff) with a no-op


class FaultServer:
    """Serves ``files`` at /<size>/<name>; each fault is a plain attribute keyed by path."""

    def __init__(self, files: dict, size: str = "tiny"):
        self.files = {f"/{size}/{k}": v for k, v in files.items()}
        self.requests: list[tuple[str, str | None]] = []
        self.cut: dict[str, int] = {}  # path -> bytes sent before closing (once)
        self.no_length: set[str] = set()  # paths answered without Content-Length (close-delimited)
        self.trickle: dict[str, tuple[int, float]] = {}  # path -> (bytes per write, pause between writes)
        self.pause: dict[str, tuple[int, float]] = {}  # path -> (bytes first, then a pause of seconds) (once)
        self.status: dict[str, list[int]] = {}
        self.redirect: dict[str, str] = {}  # path -> Location
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                if server.status.get(self.path):
                    self.send_error(server.status[self.path].pop(0))
                    return
                if self.path in server.redirect:
                    self.send_response(302)
                    self.send_header("Location", server.redirect[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if rng:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                part = body[start:]
                if self.path not in server.no_length:
                    self.send_header("Content-Length", str(len(part)))
                self.end_headers()
                cut = server.cut.pop(self.path, None)
                if cut is not None:
                    part = part[:cut]
                try:
                    if self.path in server.trickle:
                        step, wait = server.trickle[self.path]
                        for i in range(0, len(part), step):
                            self.wfile.write(part[i:i + step])
                            self.wfile.flush()
                            _sleep(wait)
                    elif self.path in server.pause:
                        first, wait = server.pause.pop(self.path)
                        self.wfile.write(part[:first])
                        self.wfile.flush()
                        _sleep(wait)
                        self.wfile.write(part[first:])
                    else:
                        self.wfile.write(part)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def count(self, name: str, size: str = "tiny") -> int:
        return [p for p, _ in self.requests].count(f"/{size}/{name}")

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FaultServer(tiny_files())
    yield s
    s.close()


def fetch(server, tmp_path, **kw):
    return hub.pretrained_npz("tiny", base_url=server.url, cache_dir=tmp_path / "cache", progress=False, **kw)


def cached(tmp_path, name) -> pathlib.Path:
    return tmp_path / "cache" / "tiny" / name


# ---- whatever fails verification leaves the cache, found by structure -----------------------

def _damage_index_block_crc(body: bytes) -> bytes:
    b = bytearray(body)
    b[10] ^= 0x01  # inside the first data block: its CRC no longer matches
    return bytes(b)


def _damage_index_magic(body: bytes) -> bytes:
    return body[:-8] + bytes(8)


@pytest.mark.parametrize("name, damage, words", [
    (INDEX, _damage_index_block_crc, r"block CRC mismatch"),
    (INDEX, _damage_index_magic, r"magic"),
    ("hparams.json", lambda body: b"{" + body[1:].replace(b"}", b","), r"not valid JSON"),
    ("hparams.json", lambda body: body.replace(b'"n_head": 2', b'"n_head": 4'), r"expected .* for tiny"),
    (DATA, lambda body: body[:-3] + bytes([body[-3] ^ 0xFF]) + body[-2:], r"fails its CRC32C"),
    ("checkpoint", lambda body: bytes(len(body)), r"not a TensorFlow checkpoint state file"),
])
def test_a_file_that_fails_verification_is_removed_and_fetched_again(server, tiny, tmp_path, name, damage, words):
    """Same size as the good file, so only its structure can tell: the next run heals."""
    good = server.files[f"/tiny/{name}"]
    server.files[f"/tiny/{name}"] = damage(good)
    assert len(server.files[f"/tiny/{name}"]) == len(good)
    with pytest.raises(WeightsError, match=words) as e:
        fetch(server, tmp_path)
    assert "deleted from the cache" in str(e.value) and "\n" not in str(e.value)
    assert not cached(tmp_path, name).exists()
    others = [n for n in tiny_files() if n != name]
    assert all(cached(tmp_path, n).is_file() for n in others), "only the bad file goes"
    server.files[f"/tiny/{name}"] = good
    n_before = len(server.requests)
    check_npz(fetch(server, tmp_path))
    assert [p for p, _ in server.requests[n_before:]] == [f"/tiny/{name}"]


def test_unknown_size_file_cut_short_without_a_length_is_not_final(server, tiny, monkeypatch, tmp_path):
    """774M/1558M have no known index size: a close-delimited reply that ends early must not
    become the index.  The end is confirmed by asking for the bytes after it."""
    monkeypatch.setitem(tiny.files, INDEX, None)
    path = f"/tiny/{INDEX}"
    server.no_length.add(path)
    server.cut[path] = 300
    check_npz(fetch(server, tmp_path))
    assert cached(tmp_path, INDEX).read_bytes() == tiny_files()[INDEX]
    assert [r for p, r in server.requests if p == path] == [None, "bytes=300-"]  # the 206 says the length


def test_unknown_size_file_with_a_length_is_final_at_that_length(server, tiny, monkeypatch, tmp_path):
    monkeypatch.setitem(tiny.files, INDEX, None)
    check_npz(fetch(server, tmp_path))
    assert server.count(INDEX) == 1


def test_hparams_json_is_checked_by_content_not_by_a_calculated_size(server, tiny, tmp_path):
    """The registry's size for hparams.json is not enforced: a newline more is the same file."""
    server.files["/tiny/hparams.json"] = tiny_files()["hparams.json"].rstrip(b"\n") + b"\n\n"
    assert len(server.files["/tiny/hparams.json"]) != tiny.files["hparams.json"]
    check_npz(fetch(server, tmp_path))


# ---- two processes, one cache ---------------------------------------------------------------

CHILD = textwrap.dedent("""
    import hashlib, json, sys
    from gpt2np import hub
    files = json.loads(sys.argv[3])
    hub.MODELS["tiny"] = hub.ModelSpec("tiny", json.loads(sys.argv[4]), files,
                                       sha256={"vocab.bpe": sys.argv[5]})
    print(hub.pretrained_npz("tiny", base_url=sys.argv[1], cache_dir=sys.argv[2], progress=False))
""")


def test_a_second_process_waits_for_the_first_and_finds_the_files_done(server, tiny, tmp_path):
    server.pause[f"/tiny/{DATA}"] = (100, 2.0)  # the first process holds the lock for ~2 s
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    args = [sys.executable, str(script), server.url, str(tmp_path / "cache"), json.dumps(tiny.files),
            json.dumps(TINY_HP), hashlib.sha256(VOCAB).hexdigest()]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 20
    while server.count(DATA) == 0 and time.time() < deadline:
        _sleep(0.02)
    second = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out1, err1 = first.communicate(timeout=60)
    out2, err2 = second.communicate(timeout=60)
    assert first.returncode == 0 and second.returncode == 0, (err1, err2)
    assert out1 == out2 == f"{tmp_path / 'cache' / 'gpt2-tiny.npz'}\n"
    assert "waiting" in err2 and "tiny" in err2 and len(err2.strip().splitlines()) == 1, err2
    assert all(server.count(n) == 1 for n in tiny_files()), server.requests  # fetched once, by the first
    check_npz(tmp_path / "cache" / "gpt2-tiny.npz")


# ---- retries: only what can heal, and said on one line ------------------------------------------

def test_a_host_name_that_does_not_resolve_is_not_retried(tiny, monkeypatch, tmp_path):
    waits = []
    monkeypatch.setattr(hub.time, "sleep", waits.append)
    with pytest.raises(hub.DownloadError, match=r"cannot reach no-such-host\.invalid \(the host name could not be resolved\)"):
        hub.download_file("http://no-such-host.invalid/x", tmp_path / "x", progress=False)
    assert waits == []


def test_each_retry_is_one_line_with_the_attempt_and_the_wait(server, tiny, monkeypatch, capsys, tmp_path):
    waits = []
    monkeypatch.setattr(hub.time, "sleep", waits.append)
    server.status["/tiny/vocab.bpe"] = [503, 500]
    url = server.url + "/tiny/vocab.bpe"
    hub.download_file(url, tmp_path / "v", len(VOCAB), progress=False, retries=4, backoff=1.0)
    lines = capsys.readouterr().err.strip().splitlines()
    assert waits == [1.0, 2.0]
    assert len(lines) == 2
    assert "HTTP 503" in lines[0] and "retrying in 1 s (attempt 2 of 5)" in lines[0] and url in lines[0]
    assert "HTTP 500" in lines[1] and "retrying in 2 s (attempt 3 of 5)" in lines[1]


def test_a_redirect_loop_names_the_url(server, tiny, tmp_path):
    server.redirect["/loop"] = "/loop"
    with pytest.raises(hub.DownloadError, match=rf"{server.url}/loop: too many redirects"):
        hub.download_file(server.url + "/loop", tmp_path / "x", progress=False)
    assert len(server.requests) <= 31  # followed once, not retried


@pytest.mark.parametrize("url", ["http://exa mple.com/x", "http://[::1/x", "http://"])
def test_an_invalid_url_names_the_url(tmp_path, url):
    with pytest.raises(hub.DownloadError) as e:
        hub.download_file(url, tmp_path / "x", progress=False, retries=0)
    assert str(e.value).startswith(f"{url}: invalid URL"), str(e.value)


# ---- progress as bytes arrive, and stalls ------------------------------------------------------------

def test_bytes_are_written_as_they_arrive(server, tiny, tmp_path):
    """A slow link: the first 1000 bytes are in the .part file while the rest is still coming."""
    path = f"/tiny/{DATA}"
    server.pause[path] = (1000, 1.5)
    dest = tmp_path / DATA
    part = tmp_path / (DATA + ".part")
    t = threading.Thread(target=hub.download_file, args=(server.url + path, dest, len(server.files[path])),
                         kwargs={"progress": False})
    t.start()
    seen = 0
    deadline = time.time() + 1.2
    while time.time() < deadline and seen < 1000:
        seen = part.stat().st_size if part.exists() else 0
        _sleep(0.02)
    t.join(10)
    assert seen == 1000
    assert dest.read_bytes() == server.files[path]


def test_what_arrived_before_an_interruption_is_kept(server, tiny, tmp_path):
    path = f"/tiny/{DATA}"
    server.cut[path] = 3000
    hub.download_file(server.url + path, tmp_path / DATA, len(server.files[path]), progress=False)
    assert [r for p, r in server.requests if p == path] == [None, "bytes=3000-"]


def test_progress_bar_counts_bytes_as_they_arrive(server, tiny, monkeypatch, tmp_path):
    updates = []

    class Bar:
        def __init__(self, *a, **k):
            updates.append(("start", k.get("initial", 0), k.get("total")))

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def update(self, n):
            updates.append(("update", n))

    import tqdm.auto
    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    path = f"/tiny/{DATA}"
    server.trickle[path] = (500, 0.01)
    hub.download_file(server.url + path, tmp_path / DATA, len(server.files[path]), chunk_size=1 << 20)
    sizes = [u[1] for u in updates if u[0] == "update"]
    assert sum(sizes) == len(server.files[path]) and max(sizes) <= 500 * 4, sizes


def test_a_trickling_transfer_is_a_stall(server, tiny, tmp_path):
    """10 bytes every 50 ms never trips a socket timeout; under 1 KiB in `timeout` s is a stall."""
    path = f"/tiny/{DATA}"
    server.trickle[path] = (10, 0.05)
    start = time.time()
    with pytest.raises(hub.DownloadError, match=r"stalled"):
        hub.download_file(server.url + path, tmp_path / DATA, len(server.files[path]), progress=False,
                          retries=0, timeout=0.5)
    assert time.time() - start < 5


def test_a_silent_server_times_out_and_the_download_resumes(server, tiny, tmp_path):
    path = f"/tiny/{DATA}"
    server.pause[path] = (2000, 3.0)
    start = time.time()
    hub.download_file(server.url + path, tmp_path / DATA, len(server.files[path]), progress=False, timeout=0.5)
    assert time.time() - start < 3
    assert [r for p, r in server.requests if p == path] == [None, "bytes=2000-"]
    assert (tmp_path / DATA).read_bytes() == server.files[path]


# ---- the Hugging Face source ------------------------------------------------------------------------

ST = pathlib.Path(__file__).parent / "fixtures" / "st_tiny" / "gpt2.safetensors"
HF_HP = {"n_vocab": 20, "n_ctx": 8, "n_embd": 64, "n_head": 1, "n_layer": 2}


@pytest.fixture
def tinyhf(monkeypatch):
    body = ST.read_bytes()
    spec = hub.ModelSpec("tinyhf", HF_HP, {}, hf_repo="org/tiny", hf_size=len(body),
                         hf_sha256=hashlib.sha256(body).hexdigest())
    monkeypatch.setitem(hub.MODELS, "tinyhf", spec)
    monkeypatch.setattr(hub, "HF_URL", "http://127.0.0.1:9/{repo}/resolve/{revision}/{file}")  # never reached
    return body


def test_huggingface_source_honours_the_base_url(tinyhf, monkeypatch, tmp_path):
    s = FaultServer({"model.safetensors": tinyhf}, size="tinyhf")
    try:
        path = hub.pretrained_npz("tinyhf", source="huggingface", base_url=s.url, cache_dir=tmp_path, progress=False)
        assert s.requests == [("/tinyhf/model.safetensors", None)]
        monkeypatch.setenv("GPT2NP_BASE_URL", s.url)
        path.unlink()
        (tmp_path / "tinyhf" / "model.safetensors").unlink()
        hub.pretrained_npz("tinyhf", source="huggingface", cache_dir=tmp_path, progress=False)
        assert len(s.requests) == 2
        assert hub.provenance(path)["source"] == "huggingface"
    finally:
        s.close()


def test_huggingface_source_leaves_no_empty_size_folder(tinyhf, tmp_path):
    s = FaultServer({}, size="tinyhf")
    try:
        with pytest.raises(hub.DownloadError, match="HTTP 404"):
            hub.pretrained_npz("tinyhf", source="huggingface", base_url=s.url, cache_dir=tmp_path, progress=False)
    finally:
        s.close()
    assert not (tmp_path / "tinyhf").exists()


def test_a_corrupt_safetensors_file_is_removed(tinyhf, tmp_path):
    bad = bytearray(tinyhf)
    bad[8:16] = b"[[[[[[[["  # same size, header no longer JSON
    s = FaultServer({"model.safetensors": bytes(bad)}, size="tinyhf")
    try:
        spec = hub.MODELS["tinyhf"]
        hub.MODELS["tinyhf"] = hub.ModelSpec("tinyhf", HF_HP, {}, hf_repo="org/tiny", hf_size=len(bad))
        with pytest.raises(WeightsError, match="deleted from the cache"):
            hub.pretrained_npz("tinyhf", source="huggingface", base_url=s.url, cache_dir=tmp_path, progress=False)
        assert not (tmp_path / "tinyhf" / "model.safetensors").exists()
    finally:
        hub.MODELS["tinyhf"] = spec
        s.close()


# ---- provenance ----------------------------------------------------------------------------------------

def test_the_converted_file_records_where_it_came_from(server, tiny, tmp_path):
    from gpt2np import __version__

    path = fetch(server, tmp_path)
    record = hub.provenance(path)
    assert record["source"] == "openai" and record["size"] == "tiny" and record["gpt2np"] == __version__
    for name, body in tiny_files().items():
        assert record["files"][name] == {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    assert npz_metadata(path)["provenance"] == record  # (stored in the .npz itself)
    assert "OpenAI's" in hub.describe(path)


def test_a_cached_file_without_provenance_is_not_taken_for_openais(server, tiny, monkeypatch, tmp_path):
    """Whatever sits at gpt2-tiny.npz is no longer trusted as it is: it is converted again from
    the verified checkpoint files if they are cached, and refused (offline) if not."""
    path = tmp_path / "cache" / "gpt2-tiny.npz"
    hp, params = read_tf_checkpoint(pathlib.Path(__file__).parent / "fixtures" / "tf_tiny" / "gpt2")
    params["wte"] = np.zeros_like(params["wte"])  # someone else's weights
    save_npz(path, hp, params)
    assert hub.provenance(path) is None and "OpenAI's" not in hub.describe(path)
    monkeypatch.setenv("GPT2NP_OFFLINE", "1")
    with pytest.raises(hub.DownloadError, match=r"gpt2-tiny\.npz .*no record of where"):
        fetch(server, tmp_path)
    monkeypatch.delenv("GPT2NP_OFFLINE")
    check_npz(fetch(server, tmp_path))  # downloaded, verified, converted anew
    assert hub.provenance(path)["source"] == "openai"
