"""The library's side of issue 14: one error type for everything a user can fix, messages that name the setting as
the user writes it and the fix, data that is checked rather than guessed, prompt files recognised by content, files
that follow the umask, design errors the planner finds before any model loads."""

import math
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from spot_core.backbones import PromptOnceError
from spot_core.builtin_models import BackboneError
from spot_core.errors import ConfigError, SpotError
from spot_core.prompt_files import (
    PromptFileError,
    export_peft,
    read_prompt,
    read_prompt_file,
    save_prompt,
)
from spot_core.prompts import PromptShapeError, check_shape
from spot_core.run_dir import RunDir, write_atomic, write_json
from spot_core.study import StudyConfig
from spot_core.tasks import TaskDataError, UnknownNameError, get_task
from spot_core.trainer import NonFiniteLossError, TrainerConfig
from spot_core.tuning import PromptConfig, RunSpec, evaluate_prompt, prepare


# --- one error type ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (TaskDataError, FileNotFoundError),
        (UnknownNameError, KeyError),
        (BackboneError, RuntimeError),
        (PromptShapeError, ValueError),
        (PromptOnceError, ValueError),
        (PromptFileError, ValueError),
        (NonFiniteLossError, FloatingPointError),
        (ConfigError, ValueError),
    ],
)
def test_every_user_error_is_a_spot_error_and_keeps_its_builtin_base(error, builtin):
    assert issubclass(error, SpotError) and issubclass(error, builtin)


def test_an_unknown_name_still_reads_as_its_message():
    with pytest.raises(SpotError) as caught:
        get_task("sst3")
    assert str(caught.value).startswith("unknown task 'sst3'. Did you mean: sst2_v1")


# --- settings named as the user writes them ----------------------------------------------------------------------
def study(**kw) -> StudyConfig:
    return StudyConfig(
        **{"name": "t", "model": "tiny-llama", "sources": ["sst2"], "targets": ["rte"], "prompt": {"length": 4}, **kw}
    )


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"prompt": {"length": 0}}, "study.prompt.length must be an integer >= 1, got 0"),
        ({"source_trainer": {"lr": math.nan}}, "study.source_trainer.lr must be a finite number > 0, got nan"),
        ({"source_trainer": {"lr": -0.1}}, "study.source_trainer.lr must be a finite number > 0, got -0.1"),
        ({"target_trainer": {"lr": 0.0}}, "study.target_trainer.lr must be a finite number > 0, got 0.0"),
        ({"target_trainer": {"lr": math.inf}}, "study.target_trainer.lr must be a finite number > 0, got inf"),
        ({"target_trainer": {"steps": 0}}, "study.target_trainer.steps must be an integer >= 1, got 0"),
        (
            {"source_trainer": {"steps": 5, "embedding_step": 9}},
            "study.source_trainer.embedding_step must be in 1..study.source_trainer.steps (5), got 9",
        ),
        (
            {"source_trainer": {"lrr": 0.1}},
            "study.source_trainer.lrr: no such setting; did you mean study.source_trainer.lr?",
        ),
        ({"mpt": {"rnk": 1}}, "study.mpt.rnk: no such setting; did you mean study.mpt.rank?"),
        (
            {"cross_model": {"model": "tiny-t5", "train_tasks": ["sst2"], "trainer": {"lr": math.nan}}},
            "study.cross_model.trainer.lr must be a finite number > 0, got nan",
        ),
        (
            {"cross_model": {"model": "tiny-t5", "train_tasks": ["sst2"], "projector": {"lr": -1.0}}},
            "study.cross_model.projector.lr must be a finite number > 0, got -1.0",
        ),
        ({"cross_model": {"train_tasks": ["sst2"]}}, "study.cross_model needs study.cross_model.model"),
        ({"max_train_examples": 0}, "study.max_train_examples must be an integer >= 1, got 0 (or null: all)"),
        ({"max_input_tokens": 0}, "model.max_input_tokens must be an integer >= 1, got 0"),
        ({"dtype": "float8"}, "model.dtype must be one of: float32, bfloat16, float16; got 'float8'"),
    ],
)
def test_study_settings_are_named_where_the_user_wrote_them(kw, message):
    with pytest.raises(ConfigError) as caught:
        study(**kw)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"lr": math.nan}, "trainer.lr must be a finite number > 0, got nan (SPoT's is trainer.lr=0.3 with Adafactor)"),
        ({"lr": -1.0}, "trainer.lr must be a finite number > 0, got -1.0"),
        ({"lr": 0}, "trainer.lr must be a finite number > 0, got 0"),
        ({"steps": 0}, "trainer.steps must be an integer >= 1, got 0 (to score a prompt without training, evaluate"),
        ({"optimizer": "sgd"}, "trainer.optimizer must be one of: adafactor, adamw; got 'sgd'"),
        ({"grad_clip": -1.0}, "trainer.grad_clip must be a finite number >= 0, got -1.0 (0 = off)"),
        ({"batch_size": 2.5}, "trainer.batch_size must be an integer >= 1, got 2.5"),
    ],
)
def test_a_run_names_its_trainer_settings(kw, message):
    with pytest.raises(ConfigError) as caught:
        TrainerConfig(**kw)
    assert message in str(caught.value)
    with pytest.raises(ConfigError) as caught:  # a run built from the config's plain values says the same
        RunSpec(model="tiny-llama", task="sst2", trainer=kw)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"length": 0}, "prompt.length must be an integer >= 1, got 0"),
        ({"init": "normal"}, "prompt.init must be one of: random_uniform, sampled_vocab, class_labels"),
        ({"init": "file"}, "prompt.init=file needs exactly one path in prompt.files, got 0"),
    ],
)
def test_a_run_names_its_prompt_settings(kw, message):
    with pytest.raises(ConfigError, match=message):
        PromptConfig(**kw)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"trainer": {"lrr": 0.1}}, "trainer.lrr: no such setting; did you mean trainer.lr?"),
        ({"prompt": {"lenght": 4}}, "prompt.lenght: no such setting; did you mean prompt.length?"),
        ({"trainer": {"xyz": 1}}, "trainer.xyz: no such setting; the settings of trainer are: steps, batch_size, "),
    ],
)
def test_a_run_names_a_setting_that_does_not_exist_and_the_closest_one(kw, message):
    with pytest.raises(ConfigError) as caught:  # the config's plain values, as pipelines.specs passes them
        RunSpec(model="tiny-llama", task="sst2", **kw)
    assert str(caught.value).startswith(message)


# --- design errors the planner sees --------------------------------------------------------------------------------
def test_a_class_label_target_with_too_short_a_prompt_fails_when_the_study_is_built():
    with pytest.raises(ConfigError) as caught:
        study(targets=["rte", "stsb"])
    assert str(caught.value) == (
        "study target 'stsb_v1': class_labels init needs one prompt token per label word: 26 label words, but "
        "study.prompt.length=4. Set study.prompt.length>=26, or study.prompt.target_init=sampled_vocab"
    )
    study(targets=["rte", "stsb"], prompt={"length": 26})
    study(targets=["rte", "stsb"], prompt={"length": 4, "target_init": "sampled_vocab"})
    study(targets=["rte", "squad"])  # a generated answer: sampled vocab, whatever the length
    with pytest.raises(ConfigError, match=r"study source 'mnli_v1': .*3 label words, but study.prompt.length=2\. "):
        study(sources=["mnli"], prompt={"length": 2, "source_init": "class_labels"})


def test_a_run_with_class_labels_and_too_short_a_prompt_fails_before_any_model_loads(monkeypatch):
    monkeypatch.setattr("spot_core.tuning.load_backbone", lambda *a: pytest.fail("a model loaded"))
    with pytest.raises(ConfigError) as caught:
        RunSpec(model="tiny-llama", task="stsb", prompt={"length": 4, "init": "class_labels"})
    assert str(caught.value) == (
        "task 'stsb_v1': class_labels init needs one prompt token per label word: 26 label words, but "
        "prompt.length=4. Set prompt.length>=26, or prompt.init=sampled_vocab"
    )
    with pytest.raises(ConfigError, match=r"closed label set, and 'squad_v1' generates its answers"):
        RunSpec(model="tiny-llama", task="squad", prompt={"length": 4, "init": "class_labels"})
    # a mixture needs a token for each distinct label word of its tasks (MNLI 3 + SST-2 2)
    with pytest.raises(ConfigError, match="5 label words, but prompt.length=4"):
        RunSpec(model="tiny-llama", task="mnli+sst2", prompt={"length": 4, "init": "class_labels"})
    RunSpec(model="tiny-llama", task="mnli+sst2", prompt={"length": 5, "init": "class_labels"})


# --- prompt files say the real problem -----------------------------------------------------------------------------
def run_spec(data_dir, tmp_path, files, length=4) -> RunSpec:
    return RunSpec(
        model="tiny-llama",
        task="sst2",
        prompt={"length": length, "init": "file", "files": [str(f) for f in files]},
        data_dir=str(data_dir),
        cache_dir=str(tmp_path / "cache"),
        max_train_examples=8,
        max_eval_examples=8,
        max_input_tokens=32,
    )


def test_a_prompt_of_another_length_says_so_and_the_setting_that_fits_it(data_dir, tmp_path):
    path = save_prompt(tmp_path / "p7.safetensors", torch.zeros(7, 32), model="tiny-llama")
    with pytest.raises(PromptShapeError) as caught:
        prepare(run_spec(data_dir, tmp_path, [path]))
    assert str(caught.value) == (
        f"prompt file {path} has shape (7, 32): a prompt of length 7, but prompt.length=4 (model 'tiny-llama' "
        "needs [4, 32]). Set prompt.length=7 to use it"
    )


def test_a_prompt_of_another_width_names_the_model_it_was_trained_on(data_dir, tmp_path):
    path = save_prompt(tmp_path / "wide.safetensors", torch.zeros(4, 48), model="tiny-llama-wide")
    with pytest.raises(PromptShapeError) as caught:
        prepare(run_spec(data_dir, tmp_path, [path]))
    assert str(caught.value) == (
        f"prompt file {path} has shape (4, 48): a prompt for hidden size 48 (trained on 'tiny-llama-wide'), but "
        "model 'tiny-llama' needs [4, 32] (hidden size 32). Train a prompt on this model, or project this one into "
        "it (study.cross_model)"
    )


def test_a_tensor_of_another_rank_is_not_a_prompt(tmp_path):
    path = tmp_path / "cube.safetensors"
    save_file({"prompt_embeddings": torch.zeros(2, 4, 32)}, str(path))
    prompt, _ = read_prompt_file(path)
    with pytest.raises(PromptShapeError) as caught:
        check_shape(prompt, 4, 32, what=f"prompt file {path}", model="tiny-llama")
    assert str(caught.value) == (
        f"prompt file {path} holds a 3-D tensor of shape (2, 4, 32), not a prompt: a prompt is a 2-D "
        "[length, hidden size] matrix, and model 'tiny-llama' needs [4, 32]"
    )


ACCEPTED = (
    "A prompt file is a spot prompt file (.safetensors, as training writes it), a PEFT prompt-tuning adapter folder "
    "(adapter_config.json + adapter_model.safetensors), or a SPoT numpy prompt (.npy, written by np.save)"
)


@pytest.mark.parametrize(
    ("name", "content", "kind"),
    [
        ("notes.txt", b"0.1 0.2 0.3 0.4 0.5\n", "a text file"),
        ("fake.safetensors", b"just some text\n", "a text file"),
        ("noise.bin", bytes(range(256)) * 4, "a binary file of another format"),
    ],
)
def test_files_are_recognised_by_content_not_by_name(tmp_path, name, content, kind):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(PromptFileError) as caught:
        read_prompt(path, 5)
    assert str(caught.value) == f"{path} is not a prompt file ({kind}). {ACCEPTED}"


def test_a_prompt_is_read_whatever_its_name(tmp_path):
    arr = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "prompt.npy", arr)
    os.replace(tmp_path / "prompt.npy", tmp_path / "prompt.safetensors")  # an .npy file under another name
    assert torch.equal(read_prompt(tmp_path / "prompt.safetensors"), torch.from_numpy(arr))
    save_prompt(tmp_path / "spot.safetensors", torch.ones(4, 3), model="tiny")
    os.replace(tmp_path / "spot.safetensors", tmp_path / "spot.bin")
    assert read_prompt_file(tmp_path / "spot.bin")[1] == "tiny"


def test_missing_prompt_files_and_folders_say_so_with_the_path(tmp_path):
    with pytest.raises(PromptFileError) as caught:
        read_prompt(tmp_path / "nope.safetensors")
    assert str(caught.value) == f"prompt file {tmp_path / 'nope.safetensors'} does not exist"
    with pytest.raises(PromptFileError, match=r"does not exist \(nor does its folder .*/gone\)"):
        read_prompt(tmp_path / "gone" / "p.safetensors")
    (tmp_path / "folder").mkdir()
    with pytest.raises(PromptFileError, match=r"folder is a folder but not a PEFT adapter .*A prompt file is"):
        read_prompt(tmp_path / "folder")


# --- files follow the umask ----------------------------------------------------------------------------------------
@pytest.fixture(params=[0o022, 0o002])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_prompt_files_adapters_and_run_files_follow_the_umask(tmp_path, umask):
    file_mode, dir_mode = 0o666 & ~umask, 0o777 & ~umask
    assert mode(save_prompt(tmp_path / "p.safetensors", torch.zeros(2, 3))) == file_mode
    out = export_peft(tmp_path / "adapter", torch.zeros(2, 3), "tiny", is_encoder_decoder=False, num_layers=2,
                      num_attention_heads=4)  # fmt: skip
    assert {p.name: mode(p) for p in out.iterdir()} == {
        "adapter_config.json": file_mode,
        "adapter_model.safetensors": file_mode,
    }
    assert mode(write_atomic(tmp_path / "r.pt", lambda tmp: torch.save({"a": 1}, tmp))) == file_mode
    assert mode(write_json(tmp_path / "x.json", {"a": 1})) == file_mode
    run = RunDir(tmp_path / "run")
    assert mode(run.finish({"best/val_score": 1.0})) == file_mode
    assert mode(run.path) == dir_mode


def test_the_tokenised_cache_follows_the_umask(data_dir, tmp_path, umask):
    from spot_core.backbones import load_backbone
    from spot_core.encoding import Codec
    from spot_core.tasks.cache import encoded_split

    backbone = load_backbone("tiny-llama")
    encoded_split(get_task("rte"), "validation", data_dir, Codec(backbone.tokenizer, False, 32, 8), 4, tmp_path)
    entries = list((tmp_path / "tokenized").rglob("*"))
    assert entries and all(mode(p) == (0o777 if p.is_dir() else 0o666) & ~umask for p in entries)


def test_the_cached_model_weights_follow_the_umask(tmp_path, umask, monkeypatch):
    from spot_core import builtin_models
    from spot_core.backbones import tiny_llama

    monkeypatch.setattr(builtin_models, "gguf_parts", lambda spec: [tmp_path / "model.gguf"])
    monkeypatch.setattr(builtin_models, "dequantise", lambda gguf: tiny_llama())
    cache = tmp_path / "models" / "smollm2-135m"
    builtin_models.build_cache(builtin_models.GGUF_MODELS["smollm2-135m"], cache)
    files = list(cache.rglob("*"))
    assert (cache / "model.safetensors") in files
    assert mode(cache) == 0o777 & ~umask and all(mode(p) == 0o666 & ~umask for p in files if p.is_file())


# --- scoring without training ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("init", ["sampled_vocab", "class_labels", "file"])
def test_evaluate_prompt_scores_an_untrained_init_or_a_file_without_reading_the_train_split(
    data_dir, tmp_path, monkeypatch, init
):
    from spot_core.tasks import cache

    files = [str(save_prompt(tmp_path / "p.safetensors", torch.zeros(4, 32)))] if init == "file" else []
    spec = RunSpec(
        model="tiny-llama",
        task="rte",
        prompt={"length": 4, "init": init, "files": files},
        data_dir=str(data_dir),
        cache_dir=str(tmp_path / "cache"),
        max_eval_examples=8,
        max_input_tokens=32,
    )
    read = cache.encoded_split
    monkeypatch.setattr(
        "spot_core.tuning.encoded_split",
        lambda task, role, *a: pytest.fail("train split read") if role == "train" else read(task, role, *a),
    )
    result = evaluate_prompt(spec, tmp_path / "eval")
    assert result["best/step"] == 0 and result["best/val_score"] in {100 * i / 8 for i in range(9)}
    assert RunDir(tmp_path / "eval").finished()


# --- a prompt library: what is wrong, and what to do ----------------------------------------------------------------
def test_a_missing_or_damaged_library_says_what_to_do(tmp_path):
    from spot_core.library import Library

    with pytest.raises(SpotError) as caught:
        Library.open(tmp_path / "nolib")
    assert str(caught.value) == (
        f"no prompt library at {tmp_path}/nolib: the folder does not exist: check the path, or export a study's source "
        f"prompts there first (make library ARGS='study=NAME library={tmp_path}/nolib')"
    )
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "index.json").write_text('{"format": "spot-prompt-library", "entr')
    with pytest.raises(SpotError) as caught:
        Library.open(tmp_path / "lib")
    assert str(caught.value).startswith(f"{tmp_path}/lib/index.json: not valid JSON (")
    assert str(caught.value).endswith(
        "): restore it from a copy, or export the library again into a new folder (make library ARGS='study=NAME "
        "library=NEW')"
    )


def test_a_library_of_another_model_names_its_models_and_what_to_do(tmp_path):
    from types import SimpleNamespace

    from spot_core.selection import library_sources

    library = SimpleNamespace(root=tmp_path, entries=[SimpleNamespace(model="tiny-llama")] * 3)
    with pytest.raises(ConfigError) as caught:
        library_sources(library, "tiny-t5")
    assert str(caught.value) == (
        f"library {tmp_path} has no source prompt for model 'tiny-t5'; it has tiny-llama (3 entries): set model.name "
        "to one of its models (model.name=tiny-llama), or export the source runs of a study on 'tiny-t5' into it "
        "(make library)"
    )
