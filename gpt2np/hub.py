"""OpenAI's GPT-2 checkpoints: the registry of sizes, downloading, verifying and caching.

``pretrained_npz("124M")`` returns the path of a converted ``.npz`` in the cache; the first call
downloads OpenAI's TensorFlow checkpoint files, verifies them (byte sizes, every tensor's CRC32C,
the tokenizer files' sha256, hparams.json against the registry), converts them once and caches
the result.

Downloads stream with ``requests`` under a ``tqdm`` bar; an interrupted transfer resumes with an
HTTP ``Range`` request (a server that ignores it makes the download restart); connection errors,
timeouts, 5xx and 429 are retried with exponential backoff; the bytes go to ``<name>.part`` and
are renamed to ``<name>`` only once complete and verified.

Environment:
- ``GPT2NP_HOME``: the cache folder (else ``$XDG_CACHE_HOME/gpt2np``, else ``~/.cache/gpt2np``);
- ``GPT2NP_BASE_URL``: a mirror replacing OpenAI's base URL; files are fetched from
  ``{base}/{size}/{file}``; ``base`` may also be a local folder (or ``file://`` URL) laid out the same way;
- ``GPT2NP_OFFLINE=1``: never touch the network; use the cache only.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import pathlib
import re
import shutil
import time
import urllib.parse

from .config import PRESETS, canonical_name
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


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One downloadable size.

    files: the checkpoint files to fetch (the ``.meta`` graph is not needed), name -> exact byte size,
    or None when only an approximate size is known (``approx_sizes``; never enforced).
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


def _openai(size, index, data, hparams_bytes, approx=None, **hf):
    files = {"checkpoint": 77, "encoder.json": 1_042_301, "hparams.json": hparams_bytes,
             "model.ckpt.index": index, "model.ckpt.data-00000-of-00001": data, "vocab.bpe": 456_318}
    return ModelSpec(size, PRESETS[size].to_dict(), files, approx or {}, dict(TOKENIZER_SHA256), **hf)


# Keyed by the sizes of gpt2np.config (their hparams are its PRESETS); file sizes from docs/formats.md.
# 774M/1558M index and hparams sizes are calculated, not observed: approximate.
MODELS: dict[str, ModelSpec] = {
    "124M": _openai("124M", 5_215, 497_759_232, 90, hf_repo="openai-community/gpt2",
                    hf_revision="607a30d783dfa663caf39e06633721c8d4cfcd7e", hf_size=548_105_171,
                    hf_sha256="248dfc3911869ec493c76e65bf2fcf7f615828b0254c12b473182f0f81d3a707"),
    "355M": _openai("355M", 10_399, 1_419_292_672, 91, hf_repo="openai-community/gpt2-medium"),
    "774M": _openai("774M", None, 3_096_120_320, None,
                    approx={"model.ckpt.index": 15_535, "hparams.json": 91}, hf_repo="openai-community/gpt2-large"),
    "1558M": _openai("1558M", None, 6_230_444_800, None,
                     approx={"model.ckpt.index": 20_724, "hparams.json": 91}, hf_repo="openai-community/gpt2-xl"),
}


def get_spec(size: str) -> ModelSpec:
    """The registry's entry for ``size``: a size or an alias, in any letter case ("124M", "124m",
    "117M", "gpt2-medium", "GPT2-XL", "1.5b"; see :func:`gpt2np.config.canonical_name`).  A name
    added to MODELS as it is (tests serve a tiny size) is found as it is."""
    if isinstance(size, str) and size in MODELS:
        return MODELS[size]
    try:
        return MODELS[canonical_name(size)]
    except ValueError as e:
        raise DownloadError(str(e)) from None


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


def _complete(folder: pathlib.Path, spec: ModelSpec) -> bool:
    """Every checkpoint file present under its final name, with its exact size where known."""
    for name, size in spec.files.items():
        p = folder / name
        if not p.is_file() or (size is not None and p.stat().st_size != size):
            return False
    return True


# ---- downloading ---------------------------------------------------------------------------

class _Transient(Exception):
    """A failure worth retrying (dropped connection, 5xx, 429)."""


_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _why_unreachable(err) -> str:
    """A few words for a connection failure; requests' own message nests three exceptions deep."""
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
        f"checkpoint with `gpt2np convert FOLDER -o OUT.npz`")


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


def download_file(url: str, dest, expected_size: int | None = None, sha256: str | None = None,
                  progress: bool = True, retries: int = 4, backoff: float = 1.0,
                  timeout: float = 30.0, session=None, chunk_size: int = 1 << 20) -> pathlib.Path:
    """Download ``url`` to ``dest``, resuming, retrying and verifying; returns ``dest``.

    The bytes go to ``dest.part``; after an interruption the next attempt asks for the rest with
    ``Range: bytes=<have>-`` and appends only if the server answers ``206`` with a matching
    ``Content-Range`` (otherwise it starts again).  A server-reported or final size other than
    ``expected_size``, or a different ``sha256``, is refused and the file deleted.
    """
    import requests
    from tqdm.auto import tqdm

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

    part = dest.with_name(dest.name + ".part")
    if session is None:
        with requests.Session() as own:
            return download_file(url, dest, expected_size, sha256, progress, retries, backoff, timeout,
                                 own, chunk_size)
    attempt = 0
    while True:
        have = part.stat().st_size if part.exists() else 0
        if expected_size is not None and have > expected_size:
            part.unlink()
            have = 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            with session.get(url, headers=headers, stream=True, timeout=timeout) as r:
                if r.status_code == 416 and have:  # nothing left to send: the .part may be complete
                    if expected_size == have:
                        break
                    part.unlink()
                    raise _Transient("HTTP 416 for a partial file; restarting")
                if r.status_code == 429 or r.status_code >= 500:
                    raise _Transient(f"HTTP {r.status_code} {r.reason} for {url}")
                if r.status_code >= 400:
                    raise DownloadError(f"HTTP {r.status_code} {r.reason} for {url}")
                total, mode = None, "wb"
                m = _CONTENT_RANGE.match(r.headers.get("Content-Range", ""))
                if r.status_code == 206:
                    if not (have and m and int(m.group(1)) == have):
                        part.unlink(missing_ok=True)
                        raise _Transient(f"unexpected partial content ({r.headers.get('Content-Range')}); restarting")
                    mode = "ab"
                    total = None if m.group(3) == "*" else int(m.group(3))
                else:  # a full answer (the server ignored Range, or there was none): start over
                    have = 0
                    if r.headers.get("Content-Length", "").isdigit() and "Content-Encoding" not in r.headers:
                        total = int(r.headers["Content-Length"])
                if expected_size is not None and total is not None and total != expected_size:
                    raise DownloadError(f"{url}: the server reports {total} bytes, expected {expected_size}; "
                                        f"refusing (wrong file or a broken mirror)")
                try:
                    with open(part, mode) as f, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                                     unit_divisor=1024, desc=dest.name, disable=not progress,
                                                     leave=False) as bar:
                        for chunk in r.iter_content(chunk_size):
                            f.write(chunk)
                            bar.update(len(chunk))
                except OSError as e:
                    if isinstance(e, (requests.RequestException, DownloadError)):
                        raise
                    raise _disk_error(e, dest) from None
            got = part.stat().st_size
            if total is not None and got < total:
                raise _Transient(f"connection closed after {got} of {total} bytes")
            break
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                _Transient) as e:
            attempt += 1
            if attempt > retries:
                if isinstance(e, _Transient) and str(e).startswith("HTTP"):
                    raise DownloadError(f"{e} (after {attempt} attempts)") from None
                raise _unreachable(url, e) from None
            time.sleep(backoff * 2 ** (attempt - 1))
    _finish(part, dest, url, expected_size, sha256)
    return dest


def download_checkpoint(size: str, base_url=None, cache_dir=None, progress: bool = True,
                        **download_kwargs) -> pathlib.Path:
    """Fetch OpenAI's checkpoint files of ``size`` into ``<cache>/<size>/``; returns that folder.

    Files already present with the right size are kept.  URLs are ``{base}/{size}/{file}``.
    """
    spec = get_spec(size)
    folder = cache_folder(cache_dir) / spec.size
    base = _base_url(base_url)
    existed = folder.exists()
    try:
        for name, nbytes in spec.files.items():
            dest = folder / name
            if dest.is_file() and (nbytes is None or dest.stat().st_size == nbytes):
                continue
            download_file(f"{base}/{spec.size}/{name}", dest, nbytes, spec.sha256.get(name),
                          progress=progress, **download_kwargs)
    except BaseException:
        if not existed and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()  # nothing was fetched: leave no empty folder behind (a .part stays, to resume)
        raise
    return folder


def convert_checkpoint(folder, out, spec: ModelSpec | None = None, verify: bool = True) -> pathlib.Path:
    """Read a TF checkpoint folder (every tensor CRC checked) and write the ``.npz`` atomically."""
    hparams, params = read_tf_checkpoint(folder, verify=verify)
    if spec is not None and hparams != spec.hparams:
        raise WeightsError(f"{folder}/hparams.json says {hparams}, expected {spec.hparams} for {spec.size}")
    save_npz(out, hparams, params)
    return pathlib.Path(out)


def pretrained_npz(size: str = "124M", base_url=None, offline=None, cache_dir=None, progress: bool = True,
                   source: str = "openai", **download_kwargs) -> pathlib.Path:
    """Path of the converted ``.npz`` of ``size`` in the cache, downloading and converting once.

    source="openai" (default): OpenAI's TF checkpoint from ``base_url`` / ``$GPT2NP_BASE_URL`` /
    Azure; source="huggingface": the ``model.safetensors`` of the size's Hugging Face repository.
    ``offline`` (default ``$GPT2NP_OFFLINE``) forbids the network: only cached files are used.
    If a tensor fails its CRC the corrupt data file is deleted, so the next call downloads it again.
    """
    spec = get_spec(size)
    out = npz_path(spec.size, cache_dir)
    if out.is_file():
        return out
    if source in ("hf", "huggingface"):
        return _pretrained_from_hf(spec, out, offline, cache_dir, progress, **download_kwargs)
    if source != "openai":
        raise DownloadError(f"unknown source {source!r}; use 'openai' or 'huggingface'")
    folder = cache_folder(cache_dir) / spec.size
    if not _complete(folder, spec):
        if _offline(offline):
            raise DownloadError(f"offline (GPT2NP_OFFLINE=1) and {spec.size} is not in the cache {out.parent}; "
                                f"run `gpt2np download {spec.size}` with network access, or unset GPT2NP_OFFLINE")
        download_checkpoint(spec.size, base_url, cache_dir, progress, **download_kwargs)
    try:
        return convert_checkpoint(folder, out, spec)
    except WeightsError as e:
        if "CRC32C" in str(e) or "truncated" in str(e):
            for name in spec.files:
                if name.startswith("model.ckpt."):
                    (folder / name).unlink(missing_ok=True)
            raise WeightsError(f"{e} (the corrupt checkpoint was deleted from the cache; run the command "
                               f"again to download it anew)") from None
        raise


def _pretrained_from_hf(spec: ModelSpec, out, offline, cache_dir, progress, **download_kwargs):
    if not spec.hf_repo:
        raise DownloadError(f"{spec.size} has no Hugging Face repository in the registry")
    dest = cache_folder(cache_dir) / spec.size / "model.safetensors"
    if not (dest.is_file() and (spec.hf_size is None or dest.stat().st_size == spec.hf_size)):
        if _offline(offline):
            raise DownloadError(f"offline (GPT2NP_OFFLINE=1) and {dest} is not in the cache")
        url = HF_URL.format(repo=spec.hf_repo, revision=spec.hf_revision, file="model.safetensors")
        download_file(url, dest, spec.hf_size, spec.hf_sha256, progress=progress, **download_kwargs)
    hparams, params = read_safetensors_model(dest, spec.hparams)
    save_npz(out, hparams, params)
    return out
