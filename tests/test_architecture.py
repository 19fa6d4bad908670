"""The package's shape (issue 21): layers import only downwards, no import circles, imports at module top."""

import ast
from pathlib import Path

import pytest

from chexutils.core import paths

PACKAGE = paths.PROJECT_ROOT / "chexutils"
# lowest first; a module may import its own layer and the layers before it, never one after it
LAYERS = (
    "core",
    "data",
    "phantom",
    "models",
    "scoring",
    "training",
    "evaluation",
    "explain",
    "report",
    "workbook",
    "cli",
)
# optional or slow-to-import dependencies that may be imported inside the function that needs them
LAZY_IMPORTS = {
    "pydicom": "DICOM decoding, only for .dcm files",
    "pretrainedmodels": "Xception only",
    "pytorch_grad_cam": "Grad-CAM, ~3 s to import, only when a heatmap is drawn",
    "submitit": "Slurm only",
    "IPython": "display in a notebook only",
}


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, package_dir: Path = PACKAGE) -> list[tuple[str, int, bool]]:
    """(imported chexutils module or external top-level name, line, at module top) for each import in ``path``."""
    tree = ast.parse(path.read_text())
    here = module_name(path, package_dir).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:  # `from chexutils.data import cache` imports the module chexutils.data.cache
                full = f"{module}.{alias.name}"
                is_module = (package_dir.parent / full.replace(".", "/")).with_suffix(".py").is_file()
                found.append((full if is_module else module, node.lineno, id(node) in top))
    return found


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def package_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def layer_violations(files, package_dir: Path = PACKAGE) -> list[str]:
    found = []
    for path in files:
        here = layer_of(module_name(path, package_dir))
        for target, line, at_top in imports_of(path, package_dir):
            where = f"{path.relative_to(package_dir.parent)}:{line}"
            if target.startswith("chexutils"):
                there = layer_of(target)
                if here is not None and there is not None and there > here:
                    found.append(f"{where}: {LAYERS[here]} imports {target} from the higher layer {LAYERS[there]}")
                if not at_top:
                    found.append(f"{where}: chexutils import inside a function ({target})")
            elif not at_top and target.split(".")[0] not in LAZY_IMPORTS:
                found.append(f"{where}: {target} imported inside a function; move it to the top or list it")
    return found


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for path in package_modules():
        name = module_name(path)
        graph[name] = {t for t, _, _ in imports_of(path) if t.startswith("chexutils.") and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_module_belongs_to_a_layer():
    loose = [module_name(p) for p in package_modules() if layer_of(module_name(p)) is None]
    assert sorted(loose) == ["chexutils", "chexutils.__main__"]


def test_imports_point_down_and_sit_at_the_top():
    assert layer_violations(package_modules()) == []


def test_no_import_circles():
    assert cycles(import_graph()) == []


@pytest.mark.parametrize(
    "module, line",
    [
        ("chexutils/core/io.py", "from chexutils.scoring import metrics"),  # upward
        ("chexutils/data/split.py", "def f():\n    from chexutils.core import paths"),  # inside a function
        ("chexutils/scoring/stats.py", "def f():\n    import numpy"),  # a non-optional lazy import
    ],
)
def test_the_layer_check_catches_an_upward_or_in_function_import(tmp_path, module, line):
    copy = tmp_path / "chexutils" / module.split("/", 1)[1]
    copy.parent.mkdir(parents=True)
    copy.write_text((PACKAGE.parent / module).read_text())
    assert layer_violations([copy], tmp_path / "chexutils") == []  # the module as it is
    copy.write_text(copy.read_text() + "\n\n" + line + "\n")
    assert len(layer_violations([copy], tmp_path / "chexutils")) == 1


def test_cycle_finder_sees_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_phantom_package_hands_out_readers_without_loading_the_renderer():
    import subprocess
    import sys

    code = "import sys, chexutils.phantom; print(sorted(m for m in sys.modules if m.startswith('chexutils.phantom')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "render" not in out and "generate" not in out and "sidecar" in out
