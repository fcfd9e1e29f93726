"""Transfer methods beyond SPoT's initialisation, each a prompt module the Trainer trains as it trains any other:

    attempt   ATTEMPT (Asai et al. 2022): frozen source prompts, a new target prompt and an attention module that
              mixes them per input
    mpt       MPT (Wang et al. 2023): a shared prompt learned on the sources together, distilled from their own
              prompts, each task's prompt the shared one times a rank-r matrix of its own

Their cells are planned by spot_core/stages/attempt.py and mpt.py. Both save the whole prompt module (not only the
[L, H] prompt its `forward()` gives) at its best validation score: `BestModule`, into the run folder's
`RunDir.best_module`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from spot_core.run_dir import RunDir, write_atomic
from spot_core.trainer import Callback


def save_module(path: str | Path, module: nn.Module, **metadata: Any) -> Path:
    """A prompt module's state (its parameters and buffers, float32) with metadata, atomically."""
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in module.state_dict().items()}
    meta = {k: json.dumps(v) for k, v in metadata.items()}
    return write_atomic(path, lambda tmp: save_file(state, str(tmp), metadata=meta))


def load_module(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A state saved by `save_module`, and its metadata."""
    with safe_open(str(path), framework="pt") as f:
        meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
        return {k: f.get_tensor(k) for k in f.keys()}, meta


class BestModule(Callback):
    """Saves the prompt module whenever its validation score is the run's best so far (the Trainer's rule: after
    step 0 unless `includes_init`), into `RunDir.best_module` with its step and score. A resumed run starts from
    the score of the file it left."""

    def __init__(self, module: nn.Module, run: RunDir, includes_init: bool = False):
        self.module, self.path, self.includes_init = module, run.best_module, includes_init
        self.best = load_module(self.path)[1]["score"] if self.path.exists() else -math.inf

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        score = metrics["val/score"]
        if (step > 0 or self.includes_init) and score > self.best:
            self.best = score
            save_module(self.path, self.module, step=step, score=score)
