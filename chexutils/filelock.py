"""An exclusive lock on a file, so parallel runs sharing one cache root build each cache only once.

POSIX ``flock``: released when the holder exits, also when it is killed, so a dead run never leaves
a stale lock behind. Works on local disks and on NFSv4 shares (Slurm clusters' usual home folders).
"""

import fcntl
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive(path):
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block; waits while another holds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
