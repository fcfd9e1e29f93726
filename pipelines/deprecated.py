"""Config keys renamed so that one thing has one name everywhere (YAML, dataclasses, MLflow params, docs). The old
keys keep working for one release: their value moves to the new key, with a warning that says which."""

from __future__ import annotations

import logging

from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger("spot")

RENAMED = {  # old key -> new key
    "study.prompt_length": "study.prompt.length",
    "study.source_init": "study.prompt.source_init",
    "study.target_init": "study.prompt.target_init",
    "model.max_input_len": "model.max_input_tokens",
    "model.max_target_len": "model.max_target_tokens",
}


def upgrade(cfg: DictConfig) -> DictConfig:
    """Moves the value of every old key that is set to its new key (the old key wins: it can only have been set on
    purpose), in place, and drops the old keys."""
    with open_dict(cfg):
        for old, new in RENAMED.items():
            parent, _, leaf = old.rpartition(".")
            node = OmegaConf.select(cfg, parent) if parent else cfg
            if not isinstance(node, DictConfig) or leaf not in node:
                continue
            value = node.pop(leaf)
            if value is None:  # declared in conf/deprecated.yaml so that the old key is accepted; not set
                continue
            log.warning("%s is deprecated and will be removed in the next release: use %s (now %s)", old, new, value)
            OmegaConf.update(cfg, new, value, force_add=True)
        for name in {old.split(".")[0] for old in RENAMED}:
            if name in cfg and cfg[name] == {}:  # a node only the declarations made (no study in a train run)
                del cfg[name]
    return cfg
