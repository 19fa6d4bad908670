"""`python -m chexutils public_labels`: clone the public CheXpert test-set labels at their pinned commit (`make public-labels`).

Clones rajpurkarlab/cheXpert-test-set-labels (groundtruth.csv, the 8 radiologists' reads, the example
models' predictions) into data/cheXpert-test-set-labels/ and checks out the pinned commit, the one
the workbook's readers and the leaderboard test were checked against. A folder already holding
that commit is left as it is; any other folder there is left alone and is an error. The clone goes
into a temporary folder beside the destination first, so a failed or interrupted clone leaves nothing.
Without network it prints one ``error:`` line and exits non-zero.

``--source`` (or the environment variable CHEXUTILS_PUBLIC_LABELS_SOURCE) clones from elsewhere, e.g.
a local mirror; ``--commit`` pins another commit.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from chexutils.core import paths
from chexutils.data.test_set_files import LABELS_REPO, LABELS_REPO_COMMIT, LABELS_REPO_URL

SOURCE_ENV = "CHEXUTILS_PUBLIC_LABELS_SOURCE"
# what git says when it cannot reach a remote (DNS, refused or unreachable, timed out)
NO_NETWORK = (
    "could not resolve host",
    "failed to connect",
    "connection refused",
    "network is unreachable",
    "connection timed out",
    "temporary failure in name resolution",
    "could not read from remote repository",
)


class CloneError(Exception):
    """The clone or checkout failed; the message is the one line to print after ``error:``."""


def git(*args, cwd=None) -> subprocess.CompletedProcess:
    env = os.environ | {"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}  # never ask for a password; English messages
    try:
        return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    except FileNotFoundError:
        raise CloneError("git is not installed; install git and run again") from None


def head_of(folder: Path) -> str | None:
    """The commit checked out in ``folder`` if it is the top of a git clone, else None."""
    top = git("rev-parse", "--show-toplevel", cwd=folder)
    if top.returncode or Path(top.stdout.strip()).resolve() != folder.resolve():
        return None
    head = git("rev-parse", "HEAD", cwd=folder)
    return head.stdout.strip() if head.returncode == 0 else None


def resolve_commit(folder: Path, commit: str) -> str | None:
    """The full hash ``commit`` (a hash, short or full, or a tag) names in the clone at ``folder``, or None."""
    found = git("rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}", cwd=folder)
    return found.stdout.strip() if found.returncode == 0 else None


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def fetch(dest: Path, source: str, commit: str) -> str:
    """Clone ``source`` into ``dest`` at ``commit``; a message saying what was done. CloneError when it cannot."""
    if dest.exists():
        head = head_of(dest) if dest.is_dir() else None
        if head is not None and head == resolve_commit(dest, commit):
            return f"{dest} is already a clone at {commit}; nothing to do"
        found = f"a clone at {head[:7]}" if head else "not a git clone"
        raise CloneError(
            f"{dest} exists and is {found}; expected a clone at {commit}. It is left as it is: "
            f"move it away (or `git -C {dest} checkout {commit}`) and run again"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        cloned = git("clone", "--quiet", "--no-checkout", source, str(partial))
        if cloned.returncode:
            message = last_line(cloned.stderr)
            if any(sign in cloned.stderr.lower() for sign in NO_NETWORK):
                raise CloneError(f"cannot reach {source} (no network?): {message}")
            raise CloneError(f"git clone {source} failed: {message}")
        checkout = git("-c", "advice.detachedHead=false", "checkout", "--quiet", commit, cwd=partial)
        if checkout.returncode:
            raise CloneError(f"{source} has no commit {commit}: {last_line(checkout.stderr)}")
        partial.rename(dest)
    finally:
        if partial.exists():
            shutil.rmtree(partial)
    return f"cloned {source} at {commit} into {dest}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chexutils public_labels",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--dest", type=Path, default=paths.DATA_DIR / LABELS_REPO, help="where the clone goes (default: %(default)s)"
    )
    parser.add_argument(
        "--source",
        default=os.environ.get(SOURCE_ENV) or LABELS_REPO_URL,
        help=f"the repository to clone (default: ${SOURCE_ENV}, else %(default)s)",
    )
    parser.add_argument("--commit", default=LABELS_REPO_COMMIT, help="the commit to check out (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        print(f"public-labels: {fetch(paths.resolve(args.dest), args.source, args.commit)}")
    except CloneError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
