"""The analysis and the report are pure: pandas, numpy, scipy and matplotlib/seaborn, never torch or transformers
(STYLE.md, "Pure layers stay pure"). Checked twice: by importing them where torch cannot be imported, and by
reading every import statement."""

import ast
import pkgutil
import subprocess
import sys

from conftest import REPO

PURE = ("spot_core.analysis", "spot_core.report")
NAMES = ("spot_core.tags", "spot_core.similarity")  # the tags results carry, and task similarity: pure too
THIRD_PARTY = {"pandas", "numpy", "scipy", "matplotlib", "seaborn"}
BLOCKED = ("torch", "transformers", "safetensors", "datasets", "peft", "hydra", "omegaconf", "mlflow", "ray")

IMPORT_ALL = f"""
import importlib, pkgutil, sys

BLOCKED = {BLOCKED!r}


class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is blocked: the analysis and the report must not need it")
        return None


sys.meta_path.insert(0, Blocked())
for package in {PURE!r}:
    root = importlib.import_module(package)
    for info in pkgutil.iter_modules(root.__path__, package + "."):
        importlib.import_module(info.name)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not loaded, loaded
print("imported", len([m for m in sys.modules if m.startswith({PURE!r})]))
"""


def modules(package: str) -> list[str]:
    path = REPO / package.replace(".", "/")
    return [package] + [f"{package}.{m.name}" for m in pkgutil.iter_modules([str(path)])]


def test_analysis_and_report_import_without_torch_or_transformers():
    result = subprocess.run([sys.executable, "-c", IMPORT_ALL], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    expected = len(modules(PURE[0])) + len(modules(PURE[1]))
    assert result.stdout.split() == ["imported", str(expected)]


def test_the_import_blocker_does_block():
    script = IMPORT_ALL.replace(f"for package in {PURE!r}:", "import spot_core.neurons\nfor package in ():")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "torch is blocked" in result.stderr


def test_a_trial_worker_imports_neither_the_figures_nor_the_statistics():
    """A Ray trial worker imports `pipelines.cells` (every stage) but never draws a report: matplotlib and scipy.stats
    are imported on first use (spot_core.analysis's correlation names, StageDef's report_of), a second less of each
    worker's start."""
    script = """
import sys
import pipelines.cells
from spot_core.stages.catalogue import CATALOGUE
loaded = lambda: sorted(m for m in ("matplotlib", "scipy.stats") if m in sys.modules)
print(loaded())
from spot_core import analysis, report
assert len({s.report for s in CATALOGUE if s.report}) == 4  # ATTEMPT and MPT share one, the model-tuning stages one
try:
    analysis.no_such_name
except AttributeError as e:
    print(e)
print(report.heatmap.__module__, analysis.ndcg.__module__, loaded())
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "[]",
        "module 'spot_core.analysis' has no attribute 'no_such_name'",
        "spot_core.report.heatmap spot_core.analysis.correlation ['matplotlib', 'scipy.stats']",
    ]


def imported(path) -> list[str]:
    """Every module an import statement of the file names (`from a import b` as a.b when a is spot_core)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: within its own package
                names.append(path.parent.relative_to(REPO).as_posix().replace("/", "."))
            elif node.module == "spot_core":
                names += [f"spot_core.{alias.name}" for alias in node.names]
            else:
                names.append(node.module)
    return names


def allowed(name: str) -> bool:
    top = name.split(".")[0]
    if top == "spot_core":
        return name in NAMES or any(name == p or name.startswith(p + ".") for p in PURE)
    return top in THIRD_PARTY or top in sys.stdlib_module_names or top == "__future__"


def test_every_import_of_the_analysis_and_the_report_is_pure():
    files = [p for package in PURE for p in (REPO / package.replace(".", "/")).glob("*.py")]
    assert len(files) == len(modules(PURE[0])) + len(modules(PURE[1]))
    offenders = [f"{p.relative_to(REPO)}: {n}" for p in files for n in imported(p) if not allowed(n)]
    assert offenders == []
