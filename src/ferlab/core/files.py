"""Atomic file writes: nothing half-written is ever left where a user would find it.

A write goes to a temp file beside its target (`.NAME.tmp-PID-XXXXXXXX.SUFFIX`) and is
renamed over it only when complete. A process killed mid-write leaves its temp file
behind; the next write into that folder removes such leftovers of processes that are
no longer running (or older than a day). A full disk or a folder that cannot be
written is one `WriteError` naming the file and the reason. `folder_lock` keeps one
writer per folder (a training run's).

Depends on: errors, processes; the standard library.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import UserError
from .processes import alive

_TEMP = re.compile(r"^\..*\.tmp-(\d+)-[A-Za-z0-9_]{8}(\.[^/]*)?$")
STALE_SECONDS = 24 * 3600
_cleaned: set[Path] = set()  # folders already swept by this process


class WriteError(UserError, OSError):
    """An output that cannot be written: no space left, no permission, not a folder."""

    def __str__(self) -> str:
        return str(self.strerror)


def clean_stale_temps(folder: str | Path) -> list[Path]:
    """Remove temp files that interrupted writes left in `folder`; returns what was removed."""
    removed = []
    folder = Path(folder)
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        match = _TEMP.match(entry.name)
        if not match or not entry.is_file(follow_symlinks=False):
            continue
        pid = int(match.group(1))
        try:
            old = now - entry.stat().st_mtime > STALE_SECONDS
            if (pid != os.getpid() and not alive(pid)) or old:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            pass  # another process cleaned it first, or it is not ours to remove
    return removed


def write_failure(path: Path, e: OSError) -> WriteError:
    """The error to show for a failed write: the file, and what the disk or folder said."""
    if e.errno == errno.ENOSPC:
        try:
            free = shutil.disk_usage(path.parent).free
            left = f" ({free / 1e6:,.0f} MB free)"
        except OSError:
            left = ""
        return WriteError(e.errno, f"{path}: no space left on the disk{left}; nothing was written")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return WriteError(e.errno, f"{path}: cannot write here ({e.strerror})")
    return WriteError(e.errno or 0, f"{path}: cannot write ({e.strerror or e})")


def check_writable(folder: str | Path) -> None:
    """Prove that `folder` can be made and written - before long work - without making it:
    a probe file is written and removed in its nearest existing ancestor."""
    folder = Path(folder).absolute()
    base = folder
    while not base.exists() and base.parent != base:
        base = base.parent
    if not base.is_dir():
        raise WriteError(errno.ENOTDIR, f"{folder}: cannot write here ({base} is a file, not a folder)")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".probe.tmp-{os.getpid()}-", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise write_failure(folder, e) from e


class OverwritesInput(UserError, ValueError):
    """An output path that names one of the inputs it is made from."""


def refuse_overwriting_inputs(out: str | Path, inputs, what: str = "output") -> None:
    """Refuse an output that is one of its own inputs (the same file by any path or link):
    the atomic rename would replace the user's original with what was derived from it."""
    out = Path(out)
    if not out.exists():
        return
    for item in inputs:
        if item is None or not Path(item).exists():
            continue
        try:
            same = os.path.samefile(out, item)
        except OSError:
            continue
        if same:
            raise OverwritesInput(f"{out}: the {what} would overwrite its input {item}; "
                                  "choose another path")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success rename it over `path`, else delete it.

    The temp file lives in the same folder so the final rename is atomic, and it
    keeps the target's suffix because some writers (matplotlib, numpy) pick the
    format from it.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.parent not in _cleaned:
            _cleaned.add(path.parent)
            clean_stale_temps(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.tmp-{os.getpid()}-", suffix=path.suffix,
                                   dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise write_failure(path, e) from e
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; these are ordinary files
        os.replace(tmp, path)
    except OSError as e:
        if isinstance(e, WriteError):
            raise
        raise write_failure(path, e) from e
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


LOCK_NAME = ".ferlab.lock"


class FolderBusy(UserError, ValueError):
    """Another live process is writing the folder; the message names its PID."""


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str = "run") -> Iterator[Path]:
    """Hold `folder` for one writer: a `.ferlab.lock` file inside it, locked by the OS
    (flock / msvcrt) for as long as the block runs, with the holder's PID written in it
    for the message others get. The OS drops the lock when its process dies, however it
    dies, so a stale lock file of a killed run is simply taken over. The file is removed
    on exit, and the folder too if the block left it empty (a run that failed before
    writing anything leaves nothing behind)."""
    folder = Path(folder)
    made = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    f = _locked_file(path, folder, what)
    try:
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield path
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
            if made:
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only if empty
    finally:
        f.close()  # releases the OS lock


def _locked_file(path: Path, folder: Path, what: str):
    """The lock file, open and locked by this process. A holder removes the file as it
    finishes, so a lock won on a file that is no longer at `path` is dropped and tried
    again: two writers can never both hold the folder."""
    for _ in range(100):
        f = open(path, "a+")  # noqa: SIM115 (held open for the lock's life)
        if not _try_lock(f):
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise FolderBusy(f"{folder}: another {what} (process {holder}) is writing this folder; "
                             "wait for it to finish, or pick another folder")
        try:
            if os.stat(path).st_ino == os.fstat(f.fileno()).st_ino:
                return f
        except FileNotFoundError:
            pass
        f.close()
    raise FolderBusy(f"{folder}: cannot take the folder's lock file {path.name}")


def _try_lock(f) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
