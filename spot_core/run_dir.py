"""A run's folder: the names of the files runs write, whether a run has finished, and atomic writes.

Every job of a study writes into a folder of its own (a prompt-tuning run, an evaluation, a projector, a neurons
record), and later stages, the report and a resumed study read it back. The file names live in `RunDir` only.
Every file spot writes goes through `write_atomic` (or `follow_umask` for a folder built aside and renamed into
place), so that it follows the umask: readable by the group and others under the usual 022.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, overload

import numpy as np

from spot_core.similarity import task_embedding


def current_umask() -> int:
    """The process's umask, read without changing it (os.umask can only be read by setting it, and another thread
    creating a file in between would get the wrong mode): from /proc on Linux, else by setting it back at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(path: str | Path) -> Path:
    """Gives `path` the mode a plain `open()` or `mkdir` would have (0644 / 0755 under umask 022, 0664 / 0775
    under 002), and so everything under it when it is a folder. Files written through a temporary file
    (safetensors' `save_file`, `tempfile.mkstemp` / `mkdtemp`) are owner-only (0600 / 0700), and a rename keeps
    that mode: on a cluster's shared storage, other users could not read them. Links are left alone."""
    path = Path(path)
    mask = current_umask()
    for p in [path, *(sorted(path.rglob("*")) if path.is_dir() and not path.is_symlink() else [])]:
        if not p.is_symlink():
            os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)
    return path


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Writes `path` through `write(tmp)` on a hidden temporary file beside it (`.<name>.tmp`), then renames it
    into place: a reader, or a run killed mid-write, sees the previous file or the new one, never half of one.
    The file's mode follows the umask (`follow_umask`), whatever `write` created the temporary file with."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        follow_umask(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(path: str | Path, value: Any) -> Path:
    """Writes `value` as indented JSON (one space, a final newline), atomically."""
    text = json.dumps(value, indent=1) + "\n"
    return write_atomic(path, lambda tmp: tmp.write_text(text))


class RunFile:
    """A file of every run folder: on a `RunDir`, its path in that folder."""

    def __init__(self, name: str):
        self.name = name

    @overload
    def __get__(self, run: None, owner: type) -> RunFile: ...

    @overload
    def __get__(self, run: RunDir, owner: type) -> Path: ...

    def __get__(self, run: RunDir | None, owner: type) -> RunFile | Path:
        return self if run is None else run.path / self.name


class RunDir:
    """The folder of one run: its files, whether it has finished, its result.

    The upper-case class attributes are the file names (for readers that fetch files by name, e.g. from a
    tracking store); the lower-case ones are their paths in this folder (`run.best_prompt`).
    """

    RESULT = "result.json"  # final metrics, written last: its presence marks the run finished
    METRICS = "metrics.json"  # every evaluation (a projector: its loss per step)
    RESUME = "resume.pt"  # a training run's last checkpoint
    INITIAL_PROMPT = "initial_prompt.safetensors"  # the prompt before training
    TASK_EMBEDDING = "task_embedding.safetensors"  # the prompt after `embedding_step` steps (SPoT's task embedding)
    BEST_PROMPT = "best_prompt.safetensors"  # the prompt with the best validation score (SPoT's source prompt)
    FINAL_PROMPT = "final_prompt.safetensors"  # the prompt after the last step
    PROJECTED_PROMPT = "projected_prompt.safetensors"  # a cross-model run's initial prompt, projected from A's
    PROJECTOR = "projector.safetensors"  # a projector run's weights
    NEURONS = "neurons.safetensors"  # a neurons run's activation mask
    BEST_MODULE = "best_module.safetensors"  # ATTEMPT / MPT: the whole prompt module at the best score
    ATTENTION = "attention.json"  # ATTEMPT: its attention over the prompts on each validation example
    BEST_MODEL = "best_model"  # model tuning: the backbone at its best validation score (a Hugging Face model folder)
    CHECKPOINTS = "checkpoints"  # the prompt at each evaluation: checkpoints/step_XXXXXXX.safetensors

    result_file = RunFile(RESULT)
    metrics = RunFile(METRICS)
    resume = RunFile(RESUME)
    initial_prompt = RunFile(INITIAL_PROMPT)
    task_embedding = RunFile(TASK_EMBEDDING)
    best_prompt = RunFile(BEST_PROMPT)
    final_prompt = RunFile(FINAL_PROMPT)
    projected_prompt = RunFile(PROJECTED_PROMPT)
    projector = RunFile(PROJECTOR)
    neurons = RunFile(NEURONS)
    best_module = RunFile(BEST_MODULE)
    attention = RunFile(ATTENTION)
    best_model = RunFile(BEST_MODEL)

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def checkpoint(self, step: int) -> Path:
        """The prompt saved at evaluation step `step`."""
        return self.path / self.CHECKPOINTS / f"step_{step:07d}.safetensors"

    def embedding(self, kind: str = "prompt") -> np.ndarray:
        """The run's task embedding [L, H] as numpy, in its prompt file's dtype: the checkpoint after `embedding_step`
        steps, or (kind "displacement") that checkpoint minus the initial prompt (`spot_core.similarity`)."""
        from spot_core.prompt_files import load_prompt  # prompt_files writes through this module: import late

        initial = load_prompt(self.initial_prompt)[0].numpy() if self.initial_prompt.exists() else None
        return task_embedding(load_prompt(self.task_embedding)[0].numpy(), initial, kind)

    def finished(self) -> bool:
        """Whether the run has finished: its result.json exists."""
        return self.result_file.is_file()

    def result(self) -> dict[str, Any]:
        """The final metrics of a finished run."""
        return json.loads(self.result_file.read_text())

    def finish(self, result: dict[str, Any]) -> Path:
        """Writes result.json, atomically: the last file a run writes, which marks it finished."""
        return write_json(self.result_file, result)

    def write_metrics(self, history: list[dict[str, Any]]) -> Path:
        """Writes metrics.json (every evaluation so far), atomically."""
        return write_json(self.metrics, history)
