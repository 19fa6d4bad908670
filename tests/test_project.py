"""Project hygiene: pins agree, notebooks are thin and clean, CI runs the README's test command."""

import ast
import json
import re
import tomllib

import nbformat
import papermill
import pytest
import yaml

from chexutils.core import paths

NOTEBOOKS = sorted(paths.NOTEBOOK_DIR.glob("*.ipynb"))


def test_environment_yml_pins_equal_pyproject():
    project = tomllib.loads((paths.PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    pinned = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((paths.PROJECT_ROOT / "environment.yml").read_text())
    assert env["name"] == "chexpert" and "python=3.11" in env["dependencies"]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(pip_section) == pinned
    assert all("==" in p for p in pinned)


def test_ci_runs_exactly_the_readme_test_command():
    readme = (paths.PROJECT_ROOT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    commands = [
        line
        for line in (paths.PROJECT_ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith("#") and not line.startswith(("set ", "cd "))
    ]
    assert commands == ["make test"]


def test_architecture_module_map_names_every_module_once():
    page = (paths.PROJECT_ROOT / "docs" / "architecture.md").read_text()
    section = page[page.index("## Module map") :]
    rows = [line for line in section.splitlines() if line.startswith("| ")][1:]  # the header left out
    named = [m for row in rows for m in re.findall(r"`([a-z_]+/[a-z_]+)`", row.rsplit("|", 2)[1])]
    package = paths.PROJECT_ROOT / "chexutils"
    modules = [p.relative_to(package).with_suffix("").as_posix() for p in package.glob("*/*.py")]
    assert sorted(named) == sorted(m for m in modules if not m.endswith("__init__"))


def test_readme_is_a_front_door_whose_links_resolve():
    readme = (paths.PROJECT_ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    links = re.findall(r"\]\(((?:docs|configs|notebooks)/[^)#]+)", readme)
    assert links and all((paths.PROJECT_ROOT / link).exists() for link in links), links
    pages = sorted(p.name for p in (paths.PROJECT_ROOT / "docs").glob("*.md"))
    assert all(f"docs/{page}" in readme for page in pages)  # every docs page is reachable from the front door


def test_no_reference_to_a_file_outside_the_repository():
    texts = [*paths.PROJECT_ROOT.glob("chexutils/**/*.py"), *paths.PROJECT_ROOT.glob("docs/*.md")]
    texts.append(paths.PROJECT_ROOT / "README.md")
    assert [str(p) for p in texts if "policy_theory.md" in p.read_text() or "chexpert_facts.md" in p.read_text()] == []


def test_numbered_notebooks_exist():
    numbers = [int(p.name[:2]) for p in NOTEBOOKS]
    assert numbers == list(range(len(numbers))) and len(numbers) >= 6  # 00_data ... 05_compare, no gaps
    assert all(p.name[2] == "_" for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_thin_and_clean(path):
    raw = json.loads(path.read_text())  # nbformat.read would add missing cell ids silently
    assert all("id" in cell for cell in raw["cells"]), "every cell needs an id (nbformat 4.5)"
    book = nbformat.read(path, as_version=4)
    code = [c for c in book.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "outputs must be cleared in git"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    names = []
    for node in ast.parse(params[0].source).body:
        assert isinstance(node, ast.Assign), "the parameters cell holds assignments only"
        ast.literal_eval(node.value)  # literals only: derived values belong below
        names += [t.id for t in node.targets]
    assert sorted(papermill.inspect_notebook(str(path))) == sorted(names), "papermill must see every parameter"
    assert book.cells[0].cell_type == "markdown" and book.cells[0].source.startswith("# ")
    for cell in code:
        for node in ast.walk(ast.parse(cell.source)):
            assert not isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Lambda)), "no definitions in notebooks"


@pytest.mark.parametrize("path", sorted(paths.CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    from chexutils.workbook.runner import load_config

    config = load_config(path)
    assert config.steps and config.name == path.stem


@pytest.mark.parametrize("path", sorted(paths.CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_configs_that_compare_the_policies_train_two_seeds_of_each(path):
    # 05 writes mixed_mapping.json only from at least 2 seeds per arm: a shipped config that compares
    # U-Zeros with U-Ones must train each of them with 2 seeds or more
    from chexutils.workbook.runner import load_config

    config = load_config(path)
    if not any(s.notebook == "05_compare.ipynb" for s in config.steps):
        return
    runs = [values for _, values in config.runs()]
    for policy in ("U-Zeros", "U-Ones"):
        seeds = {v.get("seed", config.parameters.get("seed", 0)) for v in runs if v.get("policy") == policy}
        assert not seeds or len(seeds) >= 2, f"{path.name}: {policy} has seeds {sorted(seeds)}"
