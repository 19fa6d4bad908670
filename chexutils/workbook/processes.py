"""The processes a sweep starts: its notebook kernels (how they are started and stopped) and, when the
sweep is stopped, ending every child with its descendants and removing what they half-wrote."""

import contextlib
import signal
from pathlib import Path

import psutil
from jupyter_client.manager import AsyncKernelManager
from traitlets.config import Config as TraitletsConfig

# CurveZMQ keys for each kernel (its kernelspec declares support): the kernel's traffic is encrypted,
# so ipykernel has no "running over TCP without encryption" warning to print.
KERNEL_CONFIG = TraitletsConfig({"KernelManager": {"transport_encryption": "auto"}})


class FinishedKernelManager(AsyncKernelManager):
    """Stops a kernel whose notebook has finished with the shutdown message alone, without a SIGINT first.

    jupyter_client interrupts every kernel before asking it to shut down; ipykernel logs the SIGINT as
    "[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel." when it lands while a message handler
    runs, so a sweep whose steps all succeeded printed an ERROR per step. The runner shuts a kernel down
    only after its last cell (or a failed one) has returned, so there is nothing to interrupt; a kernel
    that does not stop on the message still gets SIGTERM, then SIGKILL (``shutdown_wait_time``). An
    explicit interrupt (nbclient's cell timeout) is unchanged."""

    async def _async_interrupt_kernel(self) -> None:
        if self.shutting_down:
            return
        await super()._async_interrupt_kernel()


def end_process_trees(pids, grace: float = 10.0) -> list[int]:
    """End the processes ``pids`` and all their descendants (pool workers, kernels, torchrun and its ranks,
    cache workers); returns the pids ended.

    The descendants are gathered before anything is signalled (a parent that dies first would orphan
    its own). Notebook kernels get SIGKILL: ipykernel's own shutdown (on SIGTERM, or a SIGINT caught
    between cells) prints tracebacks of the request it cuts off onto the runner's stderr, and what a
    killed kernel could leave (its ``<name>.<pid>.tmp`` files) ``remove_temp_files`` removes; the run's
    lock goes with the process. Everything else gets SIGTERM (torchrun's ranks stop cleanly), and
    SIGKILL after ``grace`` seconds. SIGINT and SIGTERM are held meanwhile, so a second Ctrl-C does not
    cut the clean-up short."""
    held = hasattr(signal, "pthread_sigmask")
    if held:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        procs = []
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                procs += [root, *root.children(recursive=True)]
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.kill() if _is_kernel(proc) else proc.terminate()
        _, alive = psutil.wait_procs(procs, timeout=grace)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(alive, timeout=grace)
        return [proc.pid for proc in procs]
    finally:
        if held:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def remove_temp_files(folder: Path, pids) -> None:
    """The temp files (``<name>.<pid>.tmp``, ``chexutils.core.io.atomic_path``) that ended processes left under
    ``folder``: a half-written checkpoint never outlives its writer."""
    for pid in pids:
        for temp in Path(folder).rglob(f"*.{pid}.tmp"):
            temp.unlink(missing_ok=True)


def _is_kernel(proc: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return any("ipykernel" in part for part in proc.cmdline())
    return False


def end_children(folder: Path) -> None:
    """End every process this one started, with their descendants (the multiprocessing resource tracker
    excepted), and remove their temp files under ``folder``: the command line's first act when stopped."""
    children = [child for child in psutil.Process().children() if not _is_resource_tracker(child)]
    remove_temp_files(folder, end_process_trees([child.pid for child in children]))


def _is_resource_tracker(proc: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return any("resource_tracker" in part for part in proc.cmdline())
    return False


@contextlib.contextmanager
def ending_children(folder: Path):
    """On any exception (KeyboardInterrupt, ``Terminated`` from SIGTERM ...) inside the block: end the processes
    this one started in it (notebook kernels) with their descendants, remove their temp files under
    ``folder``, then re-raise. Without it a stopped runner leaves its kernels training to the end (they run
    in their own session)."""
    me = psutil.Process()
    before = {child.pid for child in me.children()}
    try:
        yield
    except BaseException:
        ended = end_process_trees([child.pid for child in me.children() if child.pid not in before])
        remove_temp_files(folder, ended)
        raise
