"""One prompt-tuning run, tracked in MLflow.

python -m pipelines.train model=smollm2-135m task=sst2_v1 trainer.steps=200
python -m pipelines.train prompt=file prompt.files=[outputs/.../best_prompt.safetensors] task=rte_v1
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from pipelines.deprecated import upgrade
from pipelines.paths import resolve_data_dir
from pipelines.tracking import MlflowTracker, open_store
from spot_core.tasks import get
from spot_core.trainer import Callback, TrainerConfig
from spot_core.tuning import PromptConfig, RunSpec, tune_prompt


def build_spec(cfg: DictConfig) -> RunSpec:
    upgrade(cfg)  # renamed keys: their values move to the new names
    m = cfg.model
    return RunSpec(
        model=m.name,
        task=cfg.task,
        prompt=PromptConfig(**OmegaConf.to_container(cfg.prompt, resolve=True)),
        trainer=TrainerConfig(**OmegaConf.to_container(cfg.trainer, resolve=True)),
        data_dir=resolve_data_dir(cfg.data_dir),
        cache_dir=m.cache_dir,
        max_input_tokens=m.max_input_tokens,
        max_target_tokens=m.max_target_tokens,
        max_train_examples=cfg.max_train_examples,
        max_eval_examples=cfg.max_eval_examples,
        device=m.device,
        dtype=m.dtype,
        prompt_once=m.get("prompt_once"),
    )


class PrintProgress(Callback):
    """One line per evaluation on stdout."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        shown = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        print(f"step {step}/{self.steps}  {shown}", flush=True)


def run(cfg: DictConfig) -> dict[str, Any]:
    spec = build_spec(cfg)
    spec.task = get(spec.task).name  # "boolq" -> "boolq_v1"; an unknown task or mixture fails here, before any work
    client, experiment_id = open_store(cfg.tracking.uri, cfg.tracking.experiment)
    out_dir = Path(cfg.out_dir).resolve()
    run = client.create_run(
        experiment_id,
        run_name=f"{spec.task}-{Path(spec.model).name}-seed{spec.trainer.seed}",
        tags={"task": spec.task, "model": spec.model, "out_dir": str(out_dir)},
    )
    try:
        progress = PrintProgress(spec.trainer.steps)
        result = tune_prompt(spec, out_dir, MlflowTracker(client, run.info.run_id), callbacks=[progress])
    except BaseException:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    client.set_terminated(run.info.run_id, "FINISHED")
    return {**result, "run_id": run.info.run_id, "out_dir": str(out_dir)}


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    result = run(cfg)
    print("\n".join(f"{k}: {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
