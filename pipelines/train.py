"""One prompt-tuning run, tracked in MLflow.

python -m pipelines.train model=smollm2-135m task=sst2_v1 trainer.steps=200
python -m pipelines.train prompt=file prompt.files=[outputs/.../best_prompt.safetensors] task=rte_v1
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from pipelines.errors import entry_point
from pipelines.paths import check_writable
from pipelines.specs import build_spec
from pipelines.tracking import check_store, open_store, tracked_run
from spot_core.backbones import check_backbone
from spot_core.tasks import check_data, get
from spot_core.trainer import Callback, Trainer
from spot_core.tuning import data_record, prepare, prompt_record


class PrintProgress(Callback):
    """One line per evaluation on stdout, and one when the run resumes."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        shown = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        print(f"step {step}/{self.steps}  {shown}", flush=True)

    def on_resume(self, step: int) -> None:
        print(f"resuming from step {step}/{self.steps} (the run's last checkpoint)", flush=True)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Checks everything a user can get wrong before anything is written (no MLflow run, no out_dir for a bad
    invocation), then trains (or resumes) the run."""
    spec = build_spec(cfg)  # bad values fail here
    spec.task = get(spec.task).name  # "boolq" -> "boolq_v1"; an unknown task or mixture fails here
    check_data(spec.task, spec.data_dir)  # missing or malformed data
    check_backbone(spec.model, spec.cache_dir, spec.prompt_once)  # an unknown or uninstalled model
    out_dir = check_writable(cfg.out_dir, "out_dir")
    check_store(cfg.tracking.uri)  # an unreachable server, an unwritable store folder
    model, data = prepare(spec)  # the model, the initial prompt (a wrong prompt file fails here) and the data
    metadata = {**prompt_record(spec), **data_record(spec)}
    trainer = Trainer(
        spec.trainer, model, data, out_dir, callbacks=[PrintProgress(spec.trainer.steps)], metadata=metadata
    )
    client, experiment_id = open_store(cfg.tracking.uri, cfg.tracking.experiment)  # all checked: the run starts
    name = f"{spec.task}-{Path(spec.model).name}-seed{spec.trainer.seed}"
    tags = {"task": spec.task, "model": spec.model, "out_dir": str(out_dir)}
    with tracked_run(client, experiment_id, name=name, tags=tags) as run:
        trainer.tracker = run.tracker
        result = trainer.fit()
    return {**result, "run_id": run.run_id, "out_dir": str(out_dir)}


@entry_point("train")
def main(cfg: DictConfig) -> None:
    result = run(cfg)
    print("\n".join(f"{k}: {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
