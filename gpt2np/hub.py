"""OpenAI's GPT-2 checkpoints: the registry of sizes, downloading, verifying and caching.

``pretrained_npz("124M")`` returns the path of a converted ``.npz`` in the cache; the first call
downloads OpenAI's TensorFlow checkpoint files, verifies them (byte sizes, every tensor's CRC32C,
the tokenizer files' sha256, hparams.json against the registry), converts them once and caches
the result.

Downloads stream with ``requests`` under a ``tqdm`` bar; the bytes go to ``<name>.part`` as they
arrive and are renamed to ``<name>`` only once complete (by a known length) and verified; an
interrupted or stalled transfer resumes with an HTTP ``Range`` request (a server that ignores it
makes the download restart); dropped connections, stalls, 5xx and 429 are retried with
exponential backoff, each retry said on one line; errors that cannot heal (a host name that does
not resolve, a redirect loop, an invalid URL, 404) are not retried.  One process at a time works on
a size (an OS lock, ``<cache>/<size>.lock``); a file that fails verification is deleted, so the next
run fetches it again; the converted ``.npz`` records where it came from (:func:`provenance`).

Environment:
- ``GPT2NP_HOME``: the cache folder (else ``$XDG_CACHE_HOME/gpt2np``, else ``~/.cache/gpt2np``);
- ``GPT2NP_BASE_URL``: a mirror replacing OpenAI's base URL; files are fetched from
  ``{base}/{size}/{file}``; ``base`` may also be a local folder (or ``file://`` URL) laid out the same way;
- ``GPT2NP_OFFLINE=1``: never touch the network; use the cache only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import os
import pathlib
import re
import shutil
import socket
import sys
import threading
import time
import urllib.parse

from .config import BUNDLED_MODEL, PRESETS, canonical_name, is_bundled
from .formats import WeightsError, read_safetensors_model, read_tf_checkpoint, save_npz

OPENAI_BASE_URL = "https://openaipublic.blob.core.windows.net/gpt-2/models"
HF_URL = "https://huggingface.co/{repo}/resolve/{revision}/{file}"

# tiktoken pins these for gpt-2/encodings/main/; the per-model copies have the same sizes.
TOKENIZER_SHA256 = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}


class DownloadError(OSError):
    """A download or cache failure, with a one-line message saying what to do."""


# Said by every error of a download that cannot reach OpenAI's files (no network, offline).
BUNDLED_HINT = (f"; or use gpt2np's small bundled model, which runs offline: --model {BUNDLED_MODEL} "
                f"(GPT2.from_pretrained({BUNDLED_MODEL!r}))")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One downloadable size.

    files: the checkpoint files to fetch (the ``.meta`` graph is not needed), name -> exact byte size,
    or None when no size is certain: an approximate one is in ``approx_sizes`` (never enforced);
    ``hparams.json`` and ``checkpoint`` have none, they are checked by their content.
    sha256: files with a known digest.  hparams: what ``hparams.json`` must say.
    hf_repo / hf_revision / hf_size / hf_sha256: Hugging Face's ``model.safetensors`` (second source).
    """

    size: str
    hparams: dict
    files: dict
    approx_sizes: dict = dataclasses.field(default_factory=dict)
    sha256: dict = dataclasses.field(default_factory=dict)
    hf_repo: str | None = None
    hf_revision: str = "main"
    hf_size: int | None = None
    hf_sha256: str | None = None


def _openai(size, index, data, approx=None, **hf):
    # hparams.json and checkpoint: no size (checked by content, see _BY_CONTENT)
    files = {"checkpoint": None, "encoder.json": 1_042_301, "hparams.json": None,
             "model.ckpt.index": index, "model.ckpt.data-00000-of-00001": data, "vocab.bpe": 456_318}
    return ModelSpec(size, PRESETS[size].to_dict(), files, approx or {}, dict(TOKENIZER_SHA256), **hf)


# Keyed by the sizes of gpt2np.config (their hparams are its PRESETS); file sizes from docs/formats.md.
# 774M/1558M index sizes are calculated, not observed: approximate.
MODELS: dict[str, ModelSpec] = {
    "124M": _openai("124M", 5_215, 497_759_232, hf_repo="openai-community/gpt2",
                    hf_revision="607a30d783dfa663caf39e06633721c8d4cfcd7e", hf_size=548_105_171,
                    hf_sha256="248dfc3911869ec493c76e65bf2fcf7f615828b0254c12b473182f0f81d3a707"),
    "355M": _openai("355M", 10_399, 1_419_292_672, hf_repo="openai-community/gpt2-medium"),
    "774M": _openai("774M", None, 3_096_120_320, approx={"model.ckpt.index": 15_535},
                    hf_repo="openai-community/gpt2-large"),
    "1558M": _openai("1558M", None, 6_230_444_800, approx={"model.ckpt.index": 20_724},
                     hf_repo="openai-community/gpt2-xl"),
}


def get_spec(size: str) -> ModelSpec:
    """The registry's entry for ``size``: a size or an alias, in any letter case ("124M", "124m",
    "117M", "gpt2-medium", "GPT2-XL", "1.5b"; see :func:`gpt2np.config.canonical_name`).  A name
    added to MODELS as it is (tests serve a tiny size) is found as it is.  The bundled model
    (gpt2np-mini) is package data, not in the registry: DownloadError saying so."""
    if isinstance(size, str) and size in MODELS:
        return MODELS[size]
    try:
        name = canonical_name(size)
    except ValueError as e:
        raise DownloadError(str(e)) from None
    if name not in MODELS:  # the bundled model: nothing to download
        raise DownloadError(f"{name} is gpt2np's bundled model, shipped in the package: nothing to download "
                            f"or cache (GPT2.from_pretrained({name!r}), --model {name})")
    return MODELS[name]


# ---- the cache ---------------------------------------------------------------------------

def cache_folder(cache_dir=None) -> pathlib.Path:
    """``cache_dir``, else ``$GPT2NP_HOME``, else ``$XDG_CACHE_HOME/gpt2np``, else ``~/.cache/gpt2np``."""
    if cache_dir:
        return pathlib.Path(cache_dir).expanduser()
    if os.environ.get("GPT2NP_HOME"):
        return pathlib.Path(os.environ["GPT2NP_HOME"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return pathlib.Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "gpt2np"
    return pathlib.Path.home() / ".cache" / "gpt2np"


def npz_path(size: str, cache_dir=None) -> pathlib.Path:
    return cache_folder(cache_dir) / f"gpt2-{get_spec(size).size}.npz"


def _base_url(base_url) -> str:
    return (base_url or os.environ.get("GPT2NP_BASE_URL") or OPENAI_BASE_URL).rstrip("/")


def _offline(offline) -> bool:
    if offline is not None:
        return bool(offline)
    return os.environ.get("GPT2NP_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


# Small text files whose registry size is calculated, not observed: they are checked by their
# content (hparams.json against the registry's hparams; the state file must name a checkpoint)
# and their size is never enforced.  The sizes of the data files (params x 4) and of the
# tokenizer files (pinned by sha256) are certain and stay exact.
_BY_CONTENT = ("hparams.json", "checkpoint")


def _expected_size(spec: ModelSpec, name: str) -> int | None:
    """The exact size ``name`` must have, or None when it is not known for certain."""
    return None if name in _BY_CONTENT else spec.files.get(name)


def _complete(folder: pathlib.Path, spec: ModelSpec) -> bool:
    """Every checkpoint file present under its final name, with its exact size where known.

    (A file gets its final name only once it is whole, so a file of unknown size is complete
    when present; its content is verified before conversion.)"""
    for name in spec.files:
        p = folder / name
        size = _expected_size(spec, name)
        if not p.is_file() or (size is not None and p.stat().st_size != size):
            return False
    return True


def _say(message: str) -> None:
    """One line on stderr: a retry, or waiting for another process."""
    print(f"gpt2np: {message}", file=sys.stderr, flush=True)


# ---- one process at a time per size ------------------------------------------------------

_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()
_HELD: dict[str, int] = {}  # lock file -> how many times this process holds it (re-entrant)


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError:  # a file system without locks (some network mounts): go on unlocked
        return True


def _wait_lock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:
        while not _try_lock(fd):
            time.sleep(0.5)
        return
    fcntl.flock(fd, fcntl.LOCK_EX)


def _unlock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:
        import msvcrt
        try:
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        except OSError:
            pass
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    except OSError:
        pass  # (closing the file releases it anyway)


@contextlib.contextmanager
def _size_lock(cache: pathlib.Path, size: str):
    """Hold the OS lock on ``<cache>/<size>.lock`` while the files of ``size`` are fetched and
    converted.  Another process asking for the same size says that it waits, waits, and then
    finds the work done; the lock goes with the process if it dies.  Re-entrant per process."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{size}.lock"
    key = os.path.realpath(path)
    with _LOCKS_GUARD:
        rlock = _LOCKS.setdefault(key, threading.RLock())
    with rlock:
        if _HELD.get(key):
            _HELD[key] += 1
            try:
                yield
            finally:
                _HELD[key] -= 1
            return
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:  # a cache we cannot write to: nothing to protect (a download fails on its own)
            yield
            return
        try:
            if not _try_lock(fd):
                _say(f"waiting for another gpt2np process that is fetching {size} into {cache} (lock {path.name})")
                _wait_lock(fd)
            _HELD[key] = 1
            try:
                yield
            finally:
                _HELD[key] = 0
                _unlock(fd)
        finally:
            os.close(fd)


# ---- downloading ---------------------------------------------------------------------------

class _Transient(Exception):
    """A failure worth retrying (dropped connection, stall, 5xx, 429)."""


_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_UNSATISFIED_RANGE = re.compile(r"^bytes \*/(\d+)$")
_STALL_BYTES = 1024  # fewer bytes than this in `timeout` seconds: the transfer is stalled


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _causes(err):
    """``err`` and every exception inside it (requests wraps urllib3, which wraps the socket's)."""
    seen, todo = set(), [err]
    while todo:
        e = todo.pop()
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__, getattr(e, "reason", None), *getattr(e, "args", ())]


def _unresolved(err) -> bool:
    """The host name could not be resolved: retrying within seconds does not help."""
    return any(isinstance(e, socket.gaierror) or type(e).__name__ == "NameResolutionError" for e in _causes(err))


def _never_connected(err) -> bool:
    """The connection was never made (as opposed to a transfer that broke off)."""
    return any(isinstance(e, (socket.gaierror, ConnectionRefusedError))
               or type(e).__name__ in ("NewConnectionError", "NameResolutionError", "ConnectTimeoutError", "ConnectTimeout")
               for e in _causes(err))


def _why_unreachable(err) -> str:
    """A few words for a connection failure; requests' own message nests three exceptions deep."""
    if _unresolved(err):
        return "the host name could not be resolved"
    for e in _causes(err):
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        if isinstance(e, ConnectionResetError):
            return "connection reset"
        if type(e).__name__ == "IncompleteRead":
            return "the connection closed before the end"
        if isinstance(e, TimeoutError) or "Timeout" in type(e).__name__:
            return "timed out"
        if isinstance(e, OSError) and e.errno == errno.ENETUNREACH:
            return "network is unreachable"
    text = str(err)
    for pattern, words in (("Failed to resolve|Name or service not known|nodename nor servname",
                            "the host name could not be resolved"),
                           ("Connection refused", "connection refused"),
                           ("timed out|Timeout", "timed out"),
                           ("Network is unreachable", "network is unreachable")):
        if re.search(pattern, text):
            return words
    return f"{type(err).__name__}: {text[:200]}"


def _unreachable(url: str, err) -> DownloadError:
    host = urllib.parse.urlsplit(url).netloc or url
    return DownloadError(
        f"cannot reach {host} ({_why_unreachable(err)}); check the network, or use a mirror "
        f"(GPT2NP_BASE_URL=URL-or-folder holding <size>/<file>, or --base-url), or convert a local "
        f"checkpoint with `gpt2np convert FOLDER -o OUT.npz`{BUNDLED_HINT}")


def _finish(part: pathlib.Path, dest: pathlib.Path, url: str, expected_size, sha256) -> None:
    """Verify the complete ``.part`` file, then rename it; a bad file is deleted, never renamed."""
    got = part.stat().st_size
    if expected_size is not None and got != expected_size:
        part.unlink()
        raise DownloadError(f"{url}: got {got} bytes, expected {expected_size}; refusing the file")
    if sha256 is not None:
        digest = _sha256(part)
        if digest != sha256:
            part.unlink()
            raise DownloadError(f"{url}: sha256 {digest} does not match the expected {sha256}; refusing the file")
    os.replace(part, dest)


def _copy_local(src: pathlib.Path, dest: pathlib.Path, expected_size, sha256) -> None:
    if not src.is_file():
        raise DownloadError(f"{src}: file not found in the local mirror folder")
    part = dest.with_name(dest.name + ".part")
    try:
        shutil.copyfile(src, part)
    except OSError as e:
        part.unlink(missing_ok=True)
        raise _disk_error(e, dest) from None
    _finish(part, dest, str(src), expected_size, sha256)


def _disk_error(e: OSError, dest) -> OSError:
    if e.errno == errno.ENOSPC:
        return DownloadError(f"disk full while writing {dest}; free some space or point GPT2NP_HOME "
                             f"at a larger disk, then run the command again (the download resumes)")
    return e


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _hostname(url: str) -> str | None:
    """The host name of URL, or None when it has none or cannot be parsed (such as an open '[')."""
    try:
        return urllib.parse.urlsplit(url).hostname
    except ValueError:
        return None


def download_file(url: str, dest, expected_size: int | None = None, sha256: str | None = None,
                  progress: bool = True, retries: int = 4, backoff: float = 1.0,
                  timeout: float = 30.0, session=None, chunk_size: int = 1 << 20) -> pathlib.Path:
    """Download ``url`` to ``dest``, resuming, retrying and verifying; returns ``dest``.

    The bytes go to ``dest.part`` as they arrive (and the progress bar moves with them); after an
    interruption the next attempt asks for the rest with ``Range: bytes=<have>-`` and appends
    only if the server answers ``206`` with a matching ``Content-Range`` (otherwise it starts
    again).  The file is complete only when a length says so: ``expected_size``, the server's
    ``Content-Length``/``Content-Range``, or, when there is none, a chunked reply's last chunk or
    a ``416`` to a request for the bytes after the end.  A size other than ``expected_size`` or
    a different ``sha256`` is refused and the file deleted.

    ``timeout`` (seconds) bounds connecting, and marks a transfer as stalled when no byte, or
    under 1 KiB, arrives in that long.  Dropped connections, stalls, 5xx, 408, 425 and 429 are
    retried ``retries`` times (waits ``backoff``, 2 x ``backoff``, ...), each retry said on one
    line on stderr; a host name that does not resolve, a redirect loop, an invalid URL, a TLS
    certificate error and other 4xx are not retried.
    """
    import requests
    from tqdm.auto import tqdm  # noqa: F401  (the progress bar, used by _receive)

    urllib3_error = requests.packages.urllib3.exceptions.HTTPError  # what read1 raises (requests' own copy)
    dest = pathlib.Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not re.match(r"^https?://", url):
        scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", url)
        if scheme and scheme[1].lower() != "file":
            raise DownloadError(f"{url}: unsupported URL scheme {scheme[1]!r}; the base URL must be "
                                f"http://, https://, file:// or a local folder")
        src = pathlib.Path(urllib.parse.urlsplit(url).path if url.startswith("file://") else url)
        _copy_local(src, dest, expected_size, sha256)
        return dest

    if re.search(r"[\s\x00-\x1f\x7f]", url) or not _hostname(url):
        # checked here, not left to requests, whose versions differ in what they refuse
        raise DownloadError(f"{url}: invalid URL (expected http(s)://HOST/PATH, without spaces or control characters)")
    if session is None:
        with requests.Session() as own:
            return download_file(url, dest, expected_size, sha256, progress, retries, backoff, timeout,
                                 own, chunk_size)
    part = dest.with_name(dest.name + ".part")
    state = {"confirming": False}
    attempt = 0
    while True:
        try:
            if _fetch_once(session, url, dest, part, expected_size, progress, timeout, chunk_size, state):
                break
            continue  # a reply without a length ended: ask whether anything follows
        except requests.TooManyRedirects:
            raise DownloadError(f"{url}: too many redirects (a redirect loop?); check the URL or the mirror") from None
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema, requests.exceptions.InvalidHeader,
                requests.exceptions.URLRequired) as e:
            raise DownloadError(f"{url}: invalid URL ({str(e)[:200]})") from None
        except requests.exceptions.SSLError as e:
            raise DownloadError(f"{url}: TLS failed ({str(e)[:200]}); not retried") from None
        except _Transient as e:
            last, reason = e, str(e)
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                urllib3_error) as e:
            if _unresolved(e):
                raise _unreachable(url, e) from None
            last, reason = e, _why_unreachable(e)
        attempt += 1
        if attempt > retries:
            if isinstance(last, _Transient):
                reason = reason.removesuffix("; restarting")  # giving up now: no restart follows
                what = reason if reason.startswith("HTTP") else f"{url}: {reason}"
                raise DownloadError(f"{what} (after {_plural(attempt, 'attempt')})") from None
            if not _never_connected(last):
                raise DownloadError(f"{url}: the transfer broke off ({reason}) "
                                    f"(after {_plural(attempt, 'attempt')}); run the command again to resume") from None
            raise _unreachable(url, last) from None
        wait = backoff * 2 ** (attempt - 1)
        where = "" if url in reason else f"{url}: "
        _say(f"{where}{reason}; retrying in {wait:g} s (attempt {attempt + 1} of {retries + 1})")
        time.sleep(wait)
    _finish(part, dest, url, expected_size, sha256)
    return dest


def _fetch_once(session, url, dest, part, expected_size, progress, timeout, chunk_size, state) -> bool:
    """One request; True when ``part`` is known to be whole, False when a reply without a length
    ended and the server must be asked whether more follows.  Raises _Transient to retry."""
    have = part.stat().st_size if part.exists() else 0
    if expected_size is not None and have > expected_size:
        part.unlink()
        have = 0
    headers = {"Accept-Encoding": "identity"}  # the bytes of the file, not a compressed form of them
    if have:
        headers["Range"] = f"bytes={have}-"
    with session.get(url, headers=headers, stream=True, timeout=(timeout, timeout)) as r:
        if r.status_code == 416 and have:  # nothing left to send: the .part may be complete
            m = _UNSATISFIED_RANGE.match(r.headers.get("Content-Range", ""))
            if have == expected_size or (expected_size is None and m and int(m.group(1)) == have):
                return True
            part.unlink()
            raise _Transient("HTTP 416 for a partial file; restarting")
        if r.status_code in (408, 425, 429) or r.status_code >= 500:
            raise _Transient(f"HTTP {r.status_code} {r.reason} for {url}")
        if r.status_code >= 400:
            raise DownloadError(f"HTTP {r.status_code} {r.reason} for {url}")
        total, mode = None, "wb"
        m = _CONTENT_RANGE.match(r.headers.get("Content-Range", ""))
        length = r.headers.get("Content-Length", "")
        if r.status_code == 206:
            if not (have and m and int(m.group(1)) == have):
                part.unlink(missing_ok=True)
                raise _Transient(f"unexpected partial content ({r.headers.get('Content-Range')}); restarting")
            mode = "ab"
            total = None if m.group(3) == "*" else int(m.group(3))
        else:  # a full answer (the server ignored Range, or there was none): start over
            if state["confirming"] and not length.isdigit():
                part.unlink(missing_ok=True)
                raise DownloadError(f"{url}: the server sends no length and ignores Range requests, so a "
                                    f"complete file cannot be told from a cut one; use another mirror")
            have = 0
            if length.isdigit() and "Content-Encoding" not in r.headers:
                total = int(length)
        if expected_size is not None and total is not None and total != expected_size:
            raise DownloadError(f"{url}: the server reports {total} bytes, expected {expected_size}; "
                                f"refusing (wrong file or a broken mirror)")
        chunked = "chunked" in r.headers.get("Transfer-Encoding", "").lower()
        got = _receive(r, part, mode, have, total, dest, progress, timeout, chunk_size)
    known = total if total is not None else expected_size
    if known is not None:
        if got < known:
            raise _Transient(f"connection closed after {got} of {known} bytes")
        return True  # (more than expected: _finish refuses it)
    if chunked:
        return True  # the last chunk arrived (a chunked reply cut short raises instead)
    if state["confirming"] and mode == "ab" and got == have:
        raise _Transient("the server sent nothing more but did not say the file ended")
    state["confirming"] = True
    return False


def _receive(r, part: pathlib.Path, mode: str, have: int, total, dest: pathlib.Path, progress: bool,
             timeout: float, chunk_size: int) -> int:
    """Write the body of ``r`` to ``part`` as it arrives; returns the size of ``part``."""
    from tqdm.auto import tqdm

    read1 = getattr(r.raw, "read1", None)  # urllib3 2: whatever has arrived, up to chunk_size
    if read1 is not None:
        chunks = iter(lambda: read1(chunk_size, decode_content=True), b"")
    else:  # urllib3 1.26: reads block until their size is full, so keep them small
        chunks = r.iter_content(min(chunk_size, 16 << 10))
    got = have
    window_start, window_bytes = time.monotonic(), 0
    with open(part, mode) as f, tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                                     desc=dest.name, disable=not progress, leave=False) as bar:
        for chunk in chunks:
            try:
                f.write(chunk)
                f.flush()  # on disk as it arrives: an interruption keeps it
            except OSError as e:
                raise _disk_error(e, dest) from None
            got += len(chunk)
            bar.update(len(chunk))
            window_bytes += len(chunk)
            now = time.monotonic()
            if now - window_start >= timeout:
                if window_bytes < _STALL_BYTES:
                    raise _Transient(f"stalled: {window_bytes} bytes in {now - window_start:.1f} s "
                                     f"(under 1 KiB in {timeout:g} s)")
                window_start, window_bytes = now, 0
    return got


def download_checkpoint(size: str, base_url=None, cache_dir=None, progress: bool = True,
                        **download_kwargs) -> pathlib.Path:
    """Fetch OpenAI's checkpoint files of ``size`` into ``<cache>/<size>/``; returns that folder.

    Files already present (with the right size, where it is known for certain) are kept.  URLs
    are ``{base}/{size}/{file}``.  Holds the size's lock (see :func:`pretrained_npz`).
    """
    spec = get_spec(size)
    cache = cache_folder(cache_dir)
    folder = cache / spec.size
    base = _base_url(base_url)
    with _size_lock(cache, spec.size):
        existed = folder.exists()
        try:
            for name in spec.files:
                dest = folder / name
                nbytes = _expected_size(spec, name)
                if dest.is_file() and (nbytes is None or dest.stat().st_size == nbytes):
                    continue
                download_file(f"{base}/{spec.size}/{name}", dest, nbytes, spec.sha256.get(name),
                              progress=progress, **download_kwargs)
        except BaseException:
            if not existed and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()  # nothing was fetched: leave no empty folder behind (a .part stays, to resume)
            raise
    return folder


# ---- verifying, converting, and where the weights came from ---------------------------------

class _Corrupt(Exception):
    """``names`` (files of the size's folder) failed verification with ``error``."""

    def __init__(self, names: list[str], error: Exception):
        super().__init__(str(error))
        self.names, self.error = names, error


def _verify_checkpoint(folder: pathlib.Path, spec: ModelSpec) -> tuple[dict, dict]:
    """``(hparams, params)`` of the checkpoint in ``folder``, each file verified on its own, in
    an order that tells which file is bad: hparams.json (valid, and the registry's hparams),
    the state file (names a checkpoint), the index (parses: footer, block CRCs, entries that
    fit the data file and the hparams), then the data (every tensor's CRC32C).  Raises
    _Corrupt naming the failing file."""
    from .formats.names import from_tf_names
    from .formats.tf_checkpoint import read_bundle, read_hparams_json

    try:
        hparams = read_hparams_json(folder / "hparams.json")
    except WeightsError as e:
        raise _Corrupt(["hparams.json"], e) from None
    if hparams != spec.hparams:
        raise _Corrupt(["hparams.json"], WeightsError(
            f"{folder / 'hparams.json'} says {hparams}, expected {spec.hparams} for {spec.size}"))
    if "checkpoint" in spec.files:
        state = folder / "checkpoint"
        try:
            ok = "model_checkpoint_path" in state.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            ok = False
        if not ok:
            raise _Corrupt(["checkpoint"], WeightsError(
                f"{state}: not a TensorFlow checkpoint state file (no model_checkpoint_path in UTF-8 text)"))
    prefix = folder / "model.ckpt"
    data = [n for n in spec.files if n.startswith("model.ckpt.data-")]
    unsure = [n for n in data if _expected_size(spec, n) is None]  # could be the one that is short

    def tree(tensors):
        params = from_tf_names(tensors, hparams, str(prefix))
        for name, arr in tensors.items():
            if arr.dtype.name != "float32":
                raise WeightsError(f"{prefix}: {name} has dtype {arr.dtype}, GPT-2 weights are float32")
        return params

    try:
        tree(read_bundle(prefix, verify=False))
    except (WeightsError, NotImplementedError) as e:
        raise _Corrupt(["model.ckpt.index", *unsure], e) from None
    try:
        return hparams, tree(read_bundle(prefix, verify=True))
    except WeightsError as e:
        raise _Corrupt(data, e) from None


def convert_checkpoint(folder, out, spec: ModelSpec | None = None, verify: bool = True) -> pathlib.Path:
    """Read a TF checkpoint folder (every tensor CRC checked) and write the ``.npz`` atomically.

    With ``spec``, each file is verified against the registry as :func:`pretrained_npz` does
    (nothing is deleted here)."""
    if spec is None:
        hparams, params = read_tf_checkpoint(folder, verify=verify)
    else:
        try:
            hparams, params = _verify_checkpoint(pathlib.Path(folder), spec)
        except _Corrupt as c:
            raise c.error from None
    save_npz(out, hparams, params)
    return pathlib.Path(out)


def _record(source: str, spec: ModelSpec, folder: pathlib.Path, names, **extra) -> dict:
    """The ``provenance`` stored in a converted file: where it came from, what was verified, and
    the size and sha256 of each verified file (so the download can be compared later)."""
    from . import __version__

    files = {name: {"bytes": (folder / name).stat().st_size, "sha256": _sha256(folder / name)} for name in names}
    return {"provenance": {"source": source, "size": spec.size, "gpt2np": __version__, **extra, "files": files}}


def provenance(path) -> dict | None:
    """Where the weights in a converted ``.npz`` came from, as recorded when :func:`pretrained_npz`
    made it from verified files (``source``: "openai" or "huggingface", ``size``, ``gpt2np``
    version, ``files``: name -> bytes and sha256); None when the file has no such record."""
    from .formats.npz import npz_metadata

    try:
        record = npz_metadata(path).get("provenance")
    except WeightsError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("files"), dict) else None


def describe(path) -> str:
    """A few words on the weights in ``path``: "OpenAI's ..." only when its provenance says so."""
    record = provenance(path)
    if record is None:
        return f"weights of unknown origin ({path} has no provenance record)"
    where = {"openai": "OpenAI's TensorFlow checkpoint", "huggingface": "Hugging Face's model.safetensors"}
    return (f"OpenAI's GPT-2 {record.get('size')} weights (from {where.get(record.get('source'), record.get('source'))}, "
            f"verified and converted by gpt2np {record.get('gpt2np')})")


def _trusted(out: pathlib.Path, spec: ModelSpec) -> bool:
    """``out`` exists and records that it was converted from verified files of ``spec``'s size."""
    if not out.is_file():
        return False
    record = provenance(out)
    return record is not None and record.get("size") == spec.size and record.get("source") in ("openai", "huggingface")


def _no_provenance(out: pathlib.Path) -> str:
    return (f" ({out} has no record of where its weights came from: converted by an older gpt2np, or not "
            f"by gpt2np; it is converted again from verified files)" if out.is_file() else "")


def pretrained_npz(size: str = "124M", base_url=None, offline=None, cache_dir=None, progress: bool = True,
                   source: str = "openai", **download_kwargs) -> pathlib.Path:
    """Path of the converted ``.npz`` of ``size`` in the cache, downloading and converting once.

    source="openai" (default): OpenAI's TF checkpoint from ``base_url`` / ``$GPT2NP_BASE_URL`` /
    Azure; source="huggingface": the ``model.safetensors`` of the size's Hugging Face repository
    (or ``{base}/{size}/model.safetensors`` when a base URL is given).  ``offline`` (default
    ``$GPT2NP_OFFLINE``) forbids the network: only cached files are used.

    The converted file records its provenance (:func:`provenance`); a cached file without one is
    not trusted as OpenAI's and is converted again.  A file that fails verification is deleted
    from the cache (found by checking each file on its own), so the next call downloads it again.
    One process at a time works on a size (an OS lock, ``<cache>/<size>.lock``); another waits,
    says so, and then finds the file made.

    The bundled model (``gpt2np.BUNDLED_MODEL``) is package data: its file in the package,
    with no network and no cache.
    """
    if is_bundled(size) and size not in MODELS:
        from .bundled import model_path

        return model_path()
    spec = get_spec(size)
    out = npz_path(spec.size, cache_dir)
    if source not in ("openai", "hf", "huggingface"):
        raise DownloadError(f"unknown source {source!r}; use 'openai' or 'huggingface'")
    if _trusted(out, spec):
        return out
    cache = cache_folder(cache_dir)
    with _size_lock(cache, spec.size):
        if _trusted(out, spec):  # made by another process while this one waited
            return out
        if source in ("hf", "huggingface"):
            return _pretrained_from_hf(spec, out, base_url, offline, cache_dir, progress, **download_kwargs)
        folder = cache / spec.size
        if not _complete(folder, spec):
            if _offline(offline):
                if out.is_file():
                    raise DownloadError(f"offline (GPT2NP_OFFLINE=1) and {out} has no record of where its weights "
                                        f"came from (converted by an older gpt2np, or not by gpt2np), and the "
                                        f"checkpoint files to verify are not in the cache; run `gpt2np download "
                                        f"{spec.size}` with network access{BUNDLED_HINT}")
                raise DownloadError(f"offline (GPT2NP_OFFLINE=1) and {spec.size} is not in the cache {out.parent}; "
                                    f"run `gpt2np download {spec.size}` with network access, or unset GPT2NP_OFFLINE"
                                    f"{BUNDLED_HINT}")
            download_checkpoint(spec.size, base_url, cache_dir, progress, **download_kwargs)
        try:
            hparams, params = _verify_checkpoint(folder, spec)
        except _Corrupt as c:
            for name in c.names:
                (folder / name).unlink(missing_ok=True)
            raise WeightsError(f"{c.error} ({' and '.join(c.names)} deleted from the cache; run the command again "
                               f"to download {'it' if len(c.names) == 1 else 'them'} anew)") from None
        save_npz(out, hparams, params, metadata=_record("openai", spec, folder, list(spec.files)))
    return out


def _pretrained_from_hf(spec: ModelSpec, out, base_url, offline, cache_dir, progress, **download_kwargs):
    if not spec.hf_repo:
        raise DownloadError(f"{spec.size} has no Hugging Face repository in the registry")
    folder = cache_folder(cache_dir) / spec.size
    dest = folder / "model.safetensors"
    mirror = base_url or os.environ.get("GPT2NP_BASE_URL")
    if mirror:  # the same layout as OpenAI's files: {base}/{size}/model.safetensors
        url = f"{mirror.rstrip('/')}/{spec.size}/model.safetensors"
    else:
        url = HF_URL.format(repo=spec.hf_repo, revision=spec.hf_revision, file="model.safetensors")
    existed = folder.exists()
    try:
        if not (dest.is_file() and (spec.hf_size is None or dest.stat().st_size == spec.hf_size)):
            if _offline(offline):
                raise DownloadError(f"offline (GPT2NP_OFFLINE=1) and {dest} is not in the cache{BUNDLED_HINT}")
            download_file(url, dest, spec.hf_size, spec.hf_sha256, progress=progress, **download_kwargs)
        try:
            hparams, params = read_safetensors_model(dest, spec.hparams)
        except WeightsError as e:
            dest.unlink(missing_ok=True)
            raise WeightsError(f"{e} (model.safetensors deleted from the cache; run the command again to "
                               f"download it anew)") from None
    except BaseException:
        if not existed and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()  # nothing was fetched: leave no empty folder behind
        raise
    extra = {"url": url} if mirror else {"repo": spec.hf_repo, "revision": spec.hf_revision}
    save_npz(out, hparams, params, metadata=_record("huggingface", spec, folder, ["model.safetensors"], **extra))
    return out
