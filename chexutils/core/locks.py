"""OS-level folder locks (``fcntl.flock``): one writer per run folder or cache folder.

The kernel releases a lock when its process dies (even by ``kill -9``), so a stale lock never
needs deleting by hand. The lock file records the holder (pid, host, start time) for the message
the second writer sees. Writers that must not wait (training into a run folder) stop at once;
writers that can wait (a second process wanting the same image cache) block until it is ready.
"""

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from chexutils.core.errors import DataError
from chexutils.core.io import write_error


class FolderLocked(DataError):
    """Another process holds the lock of a folder this process wants to write."""


def holder(lock_file) -> str:
    """Who holds (or last held) ``lock_file``: 'pid N on host H since T', or 'an unknown process'."""
    try:
        info = json.loads(Path(lock_file).read_text() or "{}")
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
        return f"pid {info['pid']} on host {info['host']} since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "an unknown process"


@contextlib.contextmanager
def exclusive(lock_file, what: str, wait: bool = False, on_wait=None):
    """Hold an exclusive lock on ``lock_file`` for the ``with`` block.

    ``wait=False``: raise FolderLocked naming ``what`` and the holder when another process has it.
    ``wait=True``: block until it is free, calling ``on_wait(holder)`` once first.
    """
    lock_file = Path(lock_file)
    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_error(err, lock_file.parent.parent, f"the folder {lock_file.parent.name}") from None
    fd = _open_lock(lock_file, os.O_RDWR | os.O_CREAT)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = holder(lock_file)
            if not wait:
                raise FolderLocked(
                    f"{what} is being written by {who} (lock {lock_file}); wait for that process "
                    "to finish or stop it, or write somewhere else"
                ) from None
            if on_wait:
                on_wait(who)
            fcntl.flock(fd, fcntl.LOCK_EX)
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, record, 0)
        yield lock_file
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def is_locked(lock_file) -> bool:
    """Whether some process holds ``lock_file`` now (a free or missing lock file: False)."""
    try:
        fd = _open_lock(lock_file, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _open_lock(lock_file: Path, flags: int) -> int:
    """Open a lock file without following a symbolic link (a planted link would be truncated)."""
    try:
        return os.open(lock_file, flags | os.O_NOFOLLOW, 0o644)
    except OSError as err:
        if Path(lock_file).is_symlink():
            raise DataError(
                f"{lock_file}: is a symbolic link; a lock file must be a plain file (a link could make "
                "the writer overwrite the file it points to). Remove the link and run again"
            ) from None
        if isinstance(err, FileNotFoundError):
            raise
        raise DataError(
            f"{Path(lock_file).parent}: cannot open the lock file {Path(lock_file).name} ({err.strerror}); "
            "expected a folder this user may write — change its permissions or write elsewhere"
        ) from None


def temp_name(path) -> Path:
    """A per-process temp file beside ``path`` (two writers never share one): ``<name>.<pid>.tmp``."""
    path = Path(path)
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")
