"""Project-level invariants: one dependency list, layered imports."""

import ast
import tomllib

import yaml
from conftest import REPO


def test_environment_yml_installs_the_pyproject():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = env["dependencies"]
    python = next(d for d in deps if isinstance(d, str) and d.startswith("python"))
    assert python.replace("python=", "") == "3.11"
    assert project["requires-python"].startswith(">=3.11")
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert "-e .[dev]" in pip
    # environment.yml must not carry its own package list: pyproject.toml is the one list.
    assert [p for p in pip if not p.startswith("-e") and not p.startswith("--")] == []
    assert "torch==2.13.0" in project["dependencies"]
    assert all("==" in d for d in project["dependencies"] + project["optional-dependencies"]["dev"])


def test_spot_core_never_imports_the_orchestration_stack():
    banned = {"hydra", "omegaconf", "ray", "mlflow"}
    offenders = []
    for path in (REPO / "spot_core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in banned]
    assert offenders == []
