"""Grid points of a sweep in parallel: local worker processes (``--jobs N``) or Slurm jobs via submitit.

Consecutive ``per_run`` steps form a block; each grid point's block is one independent chain (e.g.
03_train then 04_evaluate for one policy). Shared steps run once, before and after, in this process.
A chain runs in a worker whose environment pins it to its own GPU(s) (``CUDA_VISIBLE_DEVICES``) or,
without GPUs, to its share of the cores (``OMP_NUM_THREADS``); the notebook kernels inherit it.
Each step is executed by the serial runner's own ``execute_step``, so skip markers, resume and
failure handling are the serial sweep's: a killed parallel sweep, run again, redoes only the
unfinished steps. Outcomes are reported in the serial order (step, then grid point). Stopped
(Ctrl-C, or SIGTERM which the command line turns into an exception), the runner ends its workers
with their kernels and torchrun children, cancels submitted jobs and releases the sweep's lock.
"""

import contextlib
import multiprocessing
import os
import signal
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict
from pathlib import Path

import torch

from chexutils.workbook import processes
from chexutils.workbook import runner as workbook
from chexutils.workbook.slurm import SLURM_KEYS


def slot_environments(jobs: int, gpus: int | None = None, cpus: int | None = None) -> list[dict]:
    """One environment per worker slot: its own GPU(s) when there are GPUs, else a share of the cores."""
    if gpus is None:
        gpus = _visible_gpus()
    if gpus:
        per = max(1, gpus // jobs)
        return [{"CUDA_VISIBLE_DEVICES": ",".join(str((i * per + k) % gpus) for k in range(per))} for i in range(jobs)]
    threads = str(max(1, (cpus or os.cpu_count() or 1) // jobs))
    return [{"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads} for _ in range(jobs)]


def _visible_gpus() -> int:
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return len([d for d in listed.split(",") if d.strip()])

    return torch.cuda.device_count()


def blocks(steps) -> list[tuple[bool, list[int]]]:
    """Step indices grouped into (per_run, [indices]): shared steps alone, consecutive per-run steps over
    the same runs (the grid's, or a step's own ``runs:`` list) together."""
    out: list[tuple[bool, list[int]]] = []
    for i, step in enumerate(steps):
        if step.per_run and out and out[-1][0] and steps[out[-1][1][-1]].runs == step.runs:
            out[-1][1].append(i)
        else:
            out.append((step.per_run, [i]))
    return out


def run_chain(
    config_path: str, output_root: str, run_name: str, step_indices: list[int], force: bool, env: dict
) -> list[dict]:
    """Worker: one grid point's block of steps in order, stopping at its first failure; outcomes as dicts.

    Runs in a fresh process (a pool worker or a Slurm job): ``env`` is set before any kernel starts."""

    os.environ.update(env)
    config = workbook.load_config(config_path, output_root)
    run = dict(_runs_of(config, step_indices[0]))[run_name]
    outcomes = []
    for i in step_indices:
        outcome = workbook.execute_step(config, config.steps[i], (run_name, run), force, _prefixed(run_name))
        outcomes.append(asdict(outcome))
        if outcome.status == "failed":
            break
    return outcomes


def _runs_of(config, index: int) -> list[tuple[str, dict]]:
    """The runs a per-run step executes: its own ``runs:`` list, else the grid's points."""
    step = config.steps[index]
    return step.runs if step.runs is not None else (config.runs() or [("default", {})])


def _prefixed(run_name: str):
    return lambda text: print(f"[{run_name}] {text}", flush=True)


def execute_parallel(config, jobs: int = 1, force: bool = False, log=print, slurm: bool = False) -> list:
    """Like ``workbook.execute``, with each per-run block's grid points run ``jobs`` at a time (or as Slurm jobs)."""

    config.output_dir.mkdir(parents=True, exist_ok=True)
    failed_runs: set[str] = set()
    outcomes = []
    for per_run, indices in blocks(config.steps):
        if not per_run:
            with processes.ending_children(config.output_dir):  # stopped: this step's kernel ends too
                outcome = workbook.execute_step(config, config.steps[indices[0]], None, force, log)
            outcomes.append(outcome)
            if outcome.status == "failed":
                log(f"stopping: shared step {outcome.step} failed")
                return outcomes
            continue
        todo = [name for name, _ in _runs_of(config, indices[0]) if name not in failed_runs]
        dispatch = _submit_slurm if slurm else _run_local
        by_run = dispatch(config, todo, indices, force, jobs, log)
        for i in indices:  # the serial runner's order: step, then grid point
            for name in todo:
                done = [o for o in by_run[name] if o["step"] == config.steps[i].notebook]
                if done:
                    outcomes.append(workbook.Outcome(**{**done[0], "output": Path(done[0]["output"])}))
        failed_runs |= {name for name in todo if any(o["status"] == "failed" for o in by_run[name])}
    return outcomes


def _run_local(config, names: list[str], indices: list[int], force: bool, jobs: int, log) -> dict:
    """Chains in ``jobs`` spawned worker processes, each task given a free slot's environment."""
    slots = slot_environments(min(jobs, len(names)) or 1)
    results: dict[str, list[dict]] = {}
    pending = list(names)
    pool = ProcessPoolExecutor(
        len(slots), mp_context=multiprocessing.get_context("spawn"), initializer=_leave_ctrl_c_to_the_runner
    )
    try:
        running = {}
        free = list(range(len(slots)))
        while pending or running:
            while pending and free:
                name, slot = pending.pop(0), free.pop(0)
                env = slots[slot]
                log(f"start  [{name}] with {' '.join(f'{k}={v}' for k, v in env.items())}")
                future = pool.submit(run_chain, str(config.path), str(config.output_root), name, indices, force, env)
                running[future] = (name, slot)
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                name, slot = running.pop(future)
                free.append(slot)
                results[name] = _result_or_failure(future.result, config, name, indices)
    except BaseException:  # stopped (Ctrl-C, SIGTERM): the workers, their kernels and torchrun go too
        stop_pool(pool, config.output_dir)
        raise
    pool.shutdown(wait=True)
    return results


def _leave_ctrl_c_to_the_runner() -> None:
    """Worker set-up: Ctrl-C reaches the terminal's whole process group; the runner alone handles it (it ends
    the workers and their kernels), so a worker prints no KeyboardInterrupt traceback of its own. A kernel
    started by the worker runs in a session of its own and never sees Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def stop_pool(pool: ProcessPoolExecutor, folder: Path) -> None:
    """End a pool's worker processes with everything they started (a kernel runs in its own session, so
    it would not see its worker go) and remove their temp files under ``folder``, then shut the pool down
    without waiting for its tasks."""
    workers = getattr(pool, "_processes", None) or {}  # ProcessPoolExecutor's worker processes, by pid
    processes.remove_temp_files(folder, processes.end_process_trees(list(workers)))
    pool.shutdown(wait=False, cancel_futures=True)


def _submit_slurm(config, names: list[str], indices: list[int], force: bool, jobs: int, log) -> dict:
    """One submitit job per grid point (a Slurm job, or a local process with ``cluster: local``); wait for all."""
    import submitit

    section = dict(config.slurm)
    executor = submitit.AutoExecutor(
        folder=config.output_dir / ".submitit" / "%j", cluster=section.pop("cluster", None)
    )
    params = {SLURM_KEYS[k]: v for k, v in section.items()}
    executor.update_parameters(name=f"chexutils-{config.name}", **params)
    threads = str(section.get("cpus_per_task", 1))
    env = {} if section.get("gpus_per_node") else {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    submitted = {}
    try:
        for name in names:
            submitted[name] = executor.submit(
                run_chain, str(config.path), str(config.output_root), name, indices, force, env
            )
            log(f"submit [{name}] as job {submitted[name].job_id}")
        return {name: _result_or_failure(job.result, config, name, indices) for name, job in submitted.items()}
    except BaseException:  # stopped: cancel the jobs (scancel, or the local processes) rather than leave them
        for job in submitted.values():
            with contextlib.suppress(Exception):
                job.cancel(check=False)
        raise


def _result_or_failure(get, config, name: str, indices: list[int]) -> list[dict]:
    """The chain's outcomes, or one failed outcome when the worker or job itself died."""
    try:
        return get()
    except Exception as err:  # the worker process or the Slurm job died (killed, out of time, out of memory)
        step = config.steps[indices[0]].notebook
        message = f"{type(err).__name__}: {err}".splitlines()[0] if str(err) else traceback.format_exc(limit=1)
        return [
            {
                "step": step,
                "run": name,
                "status": "failed",
                "seconds": 0.0,
                "output": str(config.output_dir / name / step),
                "error": message,
            }
        ]
