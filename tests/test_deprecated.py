"""Renamed config keys (one vocabulary) keep working for one release, with a warning naming the new key."""

import pytest
from conftest import REPO
from hydra import compose, initialize_config_dir

from pipelines.deprecated import RENAMED, upgrade
from pipelines.study import build_study

pytestmark = pytest.mark.usefixtures("ray_runtime")  # the session's Ray (conftest.py)


def compose_conf(name: str, *overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(name, overrides=list(overrides))


def test_old_study_keys_move_to_their_new_names_with_a_warning(caplog):
    cfg = upgrade(compose_conf("study", "study=smoke", "study.prompt_length=7", "study.target_init=random_uniform"))
    study = build_study(cfg)
    assert study.prompt.length == 7 and study.prompt.target_init == "random_uniform"
    assert study.prompt.source_init == "sampled_vocab"  # not given: the preset's
    assert "study.prompt_length is deprecated and will be removed in the next release: use study.prompt.length" in (
        caplog.text
    )
    assert "prompt_length" not in cfg.study and "target_init" not in cfg.study  # the logged config is the new one


def test_the_new_names_need_no_upgrade_and_no_warning(caplog):
    cfg = upgrade(compose_conf("study", "study=smoke", "study.prompt.length=7"))
    assert build_study(cfg).prompt.length == 7 and "deprecated" not in caplog.text
    train = upgrade(compose_conf("train"))
    assert "study" not in train  # the declarations of old study keys leave nothing behind in other configs


@pytest.mark.parametrize("old", sorted(RENAMED))
def test_every_old_key_is_accepted_on_the_command_line(old):
    section = old.split(".")[0]
    cfg = compose_conf("study" if section == "study" else "train", f"{old}=3")
    upgrade(cfg)
    new_parent, _, leaf = RENAMED[old].rpartition(".")
    node = cfg
    for part in new_parent.split("."):
        node = node[part]
    assert node[leaf] == 3
