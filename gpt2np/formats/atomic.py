"""Writing a file so that nothing half-written ever sits under its final name."""

from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import tempfile


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb"):
    """Yield a temp file in the same folder; on success fsync and ``os.replace`` it onto ``path``.

    On any error the temp file is removed.  A full disk is reported as one clear OSError.
    """
    path = pathlib.Path(path)
    folder = path.parent if str(path.parent) else pathlib.Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, mode) as f:
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp made it 0600; give it the usual mode
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        pathlib.Path(tmp).unlink(missing_ok=True)
        if e.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"disk full while writing {path}; free some space "
                                        f"(or set GPT2NP_HOME to a larger disk) and retry") from None
        raise
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read the umask is to set it
    os.umask(mask)
    return mask
