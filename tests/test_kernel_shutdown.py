"""A step that succeeds leaves no ERROR in the log (issue 22): the runner stops a finished kernel with the
shutdown message alone; jupyter_client's SIGINT before it made ipykernel log
"[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel." after steps that had all succeeded."""

import signal

import nbformat
import pytest
from jupyter_client.manager import KernelManager

from chexutils.workbook import guards
from chexutils.workbook import runner as workbook

pytestmark = pytest.mark.notebooks  # starts a real kernel


def test_a_successful_step_sends_no_sigint_and_logs_no_error(tmp_path, monkeypatch, capfd):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}), nbformat.v4.new_code_cell("x")]
    kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": kernelspec}), notebooks / "t.ipynb")
    monkeypatch.setattr(workbook.paths, "NOTEBOOK_DIR", notebooks)
    workbook._declared.cache_clear()
    guards.notebook_defaults.cache_clear()
    sent = []
    real_signal = KernelManager._async_signal_kernel

    async def recording_signal(self, signum):
        sent.append(signum)
        await real_signal(self, signum)

    monkeypatch.setattr(KernelManager, "_async_signal_kernel", recording_signal)
    path = tmp_path / "sweep.yaml"
    path.write_text("name: quiet\nsteps:\n  - {notebook: t.ipynb, parameters: {x: 2}}\n")
    logs = []
    try:
        outcomes = workbook.execute(workbook.load_config(path, tmp_path / "out"), log=logs.append)
    finally:
        workbook._declared.cache_clear()
        guards.notebook_defaults.cache_clear()
    assert [o.status for o in outcomes] == ["ok"]
    assert signal.SIGINT not in sent
    captured = capfd.readouterr()
    log = "\n".join(logs) + captured.out + captured.err
    assert "ERROR" not in log and "KeyboardInterrupt" not in log, log
