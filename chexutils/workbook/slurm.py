"""The `slurm:` section of a sweep config: its keys and their submitit names, checked at load time."""

from chexutils.core.errors import DataError

SLURM_KEYS = {  # the config's `slurm:` section -> submitit's AutoExecutor parameters
    "partition": "slurm_partition",
    "gpus_per_node": "gpus_per_node",
    "cpus_per_task": "cpus_per_task",
    "timeout_min": "timeout_min",
    "mem_gb": "mem_gb",
    "account": "slurm_account",
    "qos": "slurm_qos",
    "constraint": "slurm_constraint",
    "array_parallelism": "slurm_array_parallelism",
    "setup": "slurm_setup",
    "additional_parameters": "slurm_additional_parameters",
}
SLURM_ONLY = {"cluster"}  # "slurm" (default: auto-detected) or "local" (submitit's local executor, no cluster)


def check_slurm(path, section) -> dict:
    """The config's ``slurm:`` mapping, checked; a DataError names the file and the unknown key."""
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise DataError(f"{path}: key 'slurm' must be a mapping of {', '.join(sorted(SLURM_KEYS.keys() | SLURM_ONLY))}")
    unknown = set(section) - SLURM_KEYS.keys() - SLURM_ONLY
    if unknown:
        raise DataError(
            f"{path}: slurm has unknown key(s) {', '.join(sorted(unknown))}; "
            f"expected {', '.join(sorted(SLURM_KEYS.keys() | SLURM_ONLY))}"
        )
    return dict(section)
