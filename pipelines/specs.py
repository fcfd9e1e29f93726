"""What a command line's config becomes for spot_core: the RunSpec of one run (train, evaluate)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipelines.deprecated import upgrade
from pipelines.paths import resolve_data_dir
from pipelines.user_tasks import use_tasks
from spot_core.study import StudyConfig
from spot_core.trainer import TrainerConfig
from spot_core.tuning import PromptConfig, RunSpec

# The config nodes that become these dataclasses: each of their fields is a setting, also where no YAML file sets
# it (`+trainer.best_includes_init=true`); pipelines.errors.check_settings refuses any other key.
SETTINGS = {"prompt": PromptConfig, "trainer": TrainerConfig, "study": StudyConfig}


def build_spec(cfg: DictConfig) -> RunSpec:
    upgrade(cfg)  # renamed keys: their values move to the new names
    data_dir = resolve_data_dir(cfg.data_dir)
    return RunSpec(
        model=cfg.model.name,
        task=use_tasks(cfg, [cfg.task], data_dir)[0],  # a task file: read and checked here
        # mappings, made dataclasses by RunSpec (config.nested): a key that is no field is a ConfigError naming it
        prompt=OmegaConf.to_container(cfg.prompt, resolve=True),
        trainer=OmegaConf.to_container(cfg.trainer, resolve=True),
        **run_fields(cfg, data_dir),
    )


def run_fields(cfg: DictConfig, data_dir: str | None) -> dict[str, Any]:
    """The RunSpec fields a command line gives beside the task, prompt and trainer: the data, its limits, where and
    how the model loads."""
    m = cfg.model
    return {
        "data_dir": data_dir,
        "cache_dir": m.cache_dir,
        "max_input_tokens": m.max_input_tokens,
        "max_target_tokens": m.max_target_tokens,
        "max_train_examples": cfg.max_train_examples,
        "max_eval_examples": cfg.max_eval_examples,
        "device": m.device,
        "dtype": m.dtype,
        "prompt_once": m.get("prompt_once"),
    }
