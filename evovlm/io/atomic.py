"""Atomic writes: readers see the old file (or folder) or the new one, never half of one.

Temporary files and folders come from ``tempfile`` (0600 / 0700); what is renamed into place gets
the permissions a plain ``open`` or ``mkdir`` would give, 0666 / 0777 less the umask.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Temp file in the same folder + fsync + rename; text is written as UTF-8."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def make_temp_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """A new hidden folder in ``parent`` to fill and then rename into place, with umask permissions."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def umask_permissions(folder: str | os.PathLike) -> None:
    """Give ``folder`` and everything in it the umask's permissions.

    safetensors (0.8) writes its files 0600, so a ``save_pretrained`` output would be private.
    """
    umask = _umask()
    for path in [Path(folder), *Path(folder).rglob("*")]:
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def _umask() -> int:
    umask = os.umask(0)  # the only way to read it is to set it
    os.umask(umask)
    return umask
