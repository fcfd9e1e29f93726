import json
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from spot_core.backbones import load_backbone  # noqa: E402
from spot_core.data import Codec  # noqa: E402
from spot_core.prompted import PromptedLM  # noqa: E402
from spot_core.prompts import SoftPrompt, random_uniform  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("SPOT_DATA_DIR", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        pytest.skip(f"offline data mirror not found at {DATA_DIR} (set SPOT_DATA_DIR)")
    return DATA_DIR


def mirror_rows(task, data_dir, split="train") -> list[dict]:
    """A task's raw rows as the mirror file holds them."""
    return [json.loads(line) for line in task.mirror_path(data_dir, split).read_text().splitlines()]


def prompted(
    name: str, length: int = 4, seed: int = 0, prompt_once: bool | None = None
) -> tuple[PromptedLM, Codec]:
    backbone = load_backbone(name)
    init = random_uniform(length, backbone.hidden_size, 0.5, torch.Generator().manual_seed(seed))
    model = PromptedLM(backbone, SoftPrompt(init), prompt_once)
    return model, Codec(backbone.tokenizer, backbone.is_encoder_decoder, 64, 8)


def concatenated(model: PromptedLM) -> PromptedLM:
    """The same backbone and prompt (shared parameter) on the concatenated reference path."""
    return PromptedLM(model.backbone, model.prompt, prompt_once=False)


@pytest.fixture(params=["tiny-llama", "tiny-t5"])
def tiny_name(request) -> str:
    return request.param
