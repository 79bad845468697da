"""Atomic writes: readers see the old file (or folder) or the new one, never half of one.

Temporary files and folders come from ``tempfile`` (0600 / 0700); what is renamed into place gets
the permissions a plain ``open`` or ``mkdir`` would give, 0666 / 0777 less the umask.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
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


def file_in_the_way(folder: str | os.PathLike) -> Path | None:
    """``folder`` or the first of its parents that exists as something other than a folder, if any: then
    ``folder`` can never be created (``mkdir`` would say "File exists" or "Not a directory")."""
    folder = Path(folder)
    return next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)


def ensure_writable_folder(folder: str | os.PathLike, option: str = "--out") -> Path:
    """Create ``folder`` (and its parents) and write and delete a scratch file in it, so that a command
    refuses an output it cannot write before its work, not after (permissions alone cannot tell: root
    passes every access check, and /proc refuses new files anyway)."""
    from evovlm.errors import EvoVLMError

    folder = Path(folder)
    blocker = file_in_the_way(folder)
    if blocker is not None:
        raise EvoVLMError(f"{option}: cannot create files in {folder}: {blocker} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".evovlm-write-check.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise EvoVLMError(f"{option}: cannot create files in {folder} ({exc.strerror or exc})") from None
    return folder


def ensure_writable_file(path: str | os.PathLike, example: str, option: str = "--out") -> Path:
    """``path`` is no folder and its folder takes new files (see :func:`ensure_writable_folder`)."""
    from evovlm.errors import EvoVLMError

    path = Path(path)
    if path.is_dir():
        raise EvoVLMError(f"{option} {path} is a directory; give a file name such as {path / example}")
    ensure_writable_folder(path.parent, option)
    return path


def make_temp_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """A new hidden folder in ``parent`` to fill and then rename into place, with umask permissions.

    Its name carries this process's id (``PREFIX<pid>-<random>``), so that a later call can tell
    the leftovers of a killed process (:func:`sweep_stale`) from the work of a live one.
    """
    tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def sweep_stale(parent: str | os.PathLike, prefix: str) -> list[Path]:
    """Delete ``parent/PREFIX<pid>-*`` folders whose process is gone (left by a kill); returns them."""
    swept = sweep_candidates(Path(parent), prefix)
    for path in swept:
        shutil.rmtree(path, ignore_errors=True)
    return swept


def recover_aside(target: str | os.PathLike) -> None:
    """Undo what a kill between :func:`replace_dir`'s two fallback renames left: when ``target`` is
    missing and a dead process's ``.NAME.old-<pid>-0`` holds the old folder, put it back; when
    ``target`` is there, delete such leftovers."""
    target = Path(target)
    for path in sweep_candidates(target.parent, f".{target.name}.old-"):
        if not target.exists():
            os.replace(path, target)
        else:
            shutil.rmtree(path, ignore_errors=True)


def sweep_candidates(parent: Path, prefix: str) -> list[Path]:
    """``parent/PREFIX<pid>-*`` folders of processes that are gone."""
    if not parent.is_dir():
        return []
    found = []
    for path in parent.iterdir():
        if path.name.startswith(prefix) and not path.is_symlink() and path.is_dir():
            pid = path.name[len(prefix):].split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                found.append(path)
    return sorted(found)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def replace_dir(new: str | os.PathLike, target: str | os.PathLike) -> None:
    """Put folder ``new`` where ``target`` is, atomically: a reader (or a kill) sees the old folder
    or the new one, never neither. The old one is deleted afterwards.

    On Linux the two are swapped with ``renameat2(RENAME_EXCHANGE)``; elsewhere (or on a file system
    without it) the old folder is first renamed aside, ``.NAME.old-<pid>-0``, which a later
    :func:`sweep_stale` removes if a kill lands between the two renames.
    """
    new, target = Path(new), Path(target)
    if not target.exists():
        os.replace(new, target)
        return
    if _exchange(new, target):
        shutil.rmtree(new, ignore_errors=True)  # `new` now holds the old folder
        return
    aside = target.with_name(f".{target.name}.old-{os.getpid()}-0")
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(target, aside)
    os.replace(new, target)
    shutil.rmtree(aside, ignore_errors=True)


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths with renameat2(RENAME_EXCHANGE); False where that is not available."""
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # glibc before 2.28, musl
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange)
    if result == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # the file system cannot exchange
        return False
    raise OSError(error, os.strerror(error), str(second))


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
