"""`python -m chexutils train` (issue 22): its help lists every TrainConfig field with default and meaning,
its errors suggest only commands that work, and on a CPU it never starts the GPU-sized defaults unasked."""

import dataclasses
import shlex

import pytest

from chexutils.cli import phantom as phantom_cli
from chexutils.cli import train as train_cli
from chexutils.cli.train import field_help
from chexutils.training.config import CPU_SIZED, FIELDS, TrainConfig, make_config


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_help_lists_every_field_with_its_default_and_meaning(capsys):
    with pytest.raises(SystemExit) as done:
        train_cli.main(["--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse may wrap; compare with whitespace folded
    meanings = field_help()
    assert set(meanings) == FIELDS
    for name, default in dataclasses.asdict(TrainConfig()).items():
        assert meanings[name], f"{name} has no comment beside it in TrainConfig"
        assert f"{name} (default: {default!r})" in text, name
        assert " ".join(meanings[name].split()) in text, name


def test_a_comment_continued_on_the_next_line_belongs_to_its_field():
    assert field_help()["cache_dir"].endswith('"" = <data_dir>/cache, shared by every sweep and run on that data set')
    assert "1 = every step" in field_help()["loss_sync_every"]


def _suggested_sets(line: str) -> dict:
    """The KEY=VALUE words right after the first ``--set``."""
    pairs = {}
    for word in shlex.split(line.partition("--set ")[2]):
        if "=" not in word:
            break
        key, _, value = word.partition("=")
        assert key in FIELDS, word
        pairs[key] = value
    return pairs


def test_without_a_gpu_the_gpu_sized_defaults_are_refused_with_what_to_set(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(train_cli, "cuda_available", lambda: False)
    assert train_cli.main(["--set", "data_dir=data/phantom-demo"]) == 2
    line = _error_line(capsys)
    assert "no GPU" in line and "image_size=64 epochs=2" in line
    suggested = _suggested_sets(line)
    assert suggested == {k: str(v) for k, v in CPU_SIZED.items()}
    make_config(None, **{k: int(v) for k, v in suggested.items()})  # the suggestion is a valid config
    # with the sizes given, the run goes on to the data (missing here): the CPU check is satisfied
    missing = tmp_path / "none"
    assert train_cli.main(["--set", f"data_dir={missing}", "image_size=64", "epochs=2"]) == 2
    assert "no GPU" not in _error_line(capsys)
    # device: cpu on a GPU machine is a CPU run too
    monkeypatch.setattr(train_cli, "cuda_available", lambda: True)
    assert train_cli.main(["--set", f"data_dir={missing}", "device=cpu", "epochs=1"]) == 2
    assert "image_size not given" in _error_line(capsys)


def test_with_a_gpu_the_defaults_stand_and_the_missing_data_error_suggests_a_working_command(
    monkeypatch, capsys, tmp_path
):
    monkeypatch.setattr(train_cli, "cuda_available", lambda: True)
    assert train_cli.main(["--set", f"data_dir={tmp_path / 'nothing'}"]) == 2
    line = _error_line(capsys)
    assert "phantom=True" not in line and "no GPU" not in line
    command = shlex.split(line.rpartition(": ")[2])
    assert command[:4] == ["python", "-m", "chexutils", "phantom"]
    made = []
    monkeypatch.setattr(phantom_cli, "generate_phantom", lambda out, *args, **kw: made.append(out) or out)
    phantom_cli.main(command[4:])  # the suggested arguments parse
    assert [str(out) for out in made] == [str(tmp_path / "nothing")]
