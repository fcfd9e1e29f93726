"""ATTEMPT (Asai et al. 2022): the source prompts stay frozen; a new target prompt and a small attention module are
trained, and each input gets its own prompt, the target prompt plus an attention-weighted sum of the prompts.

For an input x (`AttentionPrompt.attention`):
    q     = LayerNorm(W_up SiLU(W_down maxpool(embed(x))))         maxpool over the input's tokens; W_down H -> d
    k_j   = maxpool(P_j)                                          over the tokens of each prompt: the K sources and
                                                                  the target's own (j = K + 1)
    a     = softmax_j(q . k_j / temperature)
    P(x)  = P_target + sum_j a_j P_j

The defaults are those of ATTEMPT's code (AkariAsai/ATTEMPT, commit b5121e5, `attn_method: sub` as in all its
configs/attempt/*.json; paths below are under attempt/); each choice spot made before is a setting (`AttemptConfig`):
- temperature H * e: the configs set `temperature: 2087` for T5 Base, 768 * e = 2087.6, the value its learned
  temperature starts from (`model_dim * exp(1)`, third_party/models/t5/modeling_t5.py:919). Was sqrt(H).
- W_down [H -> 100] and W_up [100 -> H] without bias (modeling_t5.py:933-934), SiLU (:935), nn.LayerNorm(H) (:936),
  applied in that order (:1107-1114). `bias: true` adds the biases (as before).
- The LayerNorm's gain and bias stay at 1 and 0: training unfreezes W_down, W_up and the target prompt only
  (utils/utils.py:116-123). `train_norm: true` trains them (as before).
- The keys max-pool each prompt over its tokens, the target's own prompt last among them (modeling_t5.py:1084-1086);
  the softmax runs over all K + 1 (:1133-1136) and the target prompt is added to the weighted sum (:1144-1157).
- The target prompt starts as rows of the input embedding matrix drawn without replacement from the first 5,000
  token ids (`init_prefix_from_vocab: true` in every config; `np.random.permutation(range(5000))[:prefix_dim]`,
  modeling_t5.py:1759-1764); its other branch is U(-0.5, 0.5) (:1766-1767). `target_init: sampled_vocab` is spot's
  same draw (the study's 5,000 first ids, less the tokenizer's few special ones); `random_uniform` the other branch;
  `zeros` spot's earlier start, under which the first instance prompts are the attention's mixture of the sources.
  Its training script then overwrites the fresh target prompt with a copy of the first source prompt listed
  (run_seq2seq.py:178-182, single-task training); we keep the fresh start that its README and paper describe ("a
  newly initialized target prompt"): a copy would also make the first source of the list count twice.
One deviation stays: the input's max-pool leaves out padding, where ATTEMPT's pools every position
(modeling_t5.py:1072). There every input is padded to `max_source_length` (`pad_to_max_length: true`), so an input
always pools the same positions; spot pads a batch to its longest input, and an input's prompt would change with the
batch it is in (and differ between training and `validation_attention`, which runs each input alone).

With the attention forced onto one source (`forced`, the ablation) and the target prompt at zeros (`target_init:
zeros`, required) the run is SPoT's transfer from that source, the source prompt being where training starts.

Cost on a decoder-only model: the prompt depends on the input, so it cannot run once per batch (spot_core.prompted):
every step runs the concatenated path (docs/benchmarks.md measures it). On an encoder-decoder model nothing changes:
T5's prompt always runs with each input.

The run (`tune_attempt`) saves the whole module at its best validation score (`RunDir.best_module`) and, with it,
the attention of each validation example over the prompts (`RunDir.attention`): the mean attention on each source
is ATTEMPT's own transferability indicator.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from spot_core.backbones import Backbone
from spot_core.config import check_int, check_number
from spot_core.errors import ConfigError
from spot_core.methods import BestModule, load_module
from spot_core.prompt_files import read_prompt_file
from spot_core.prompted import PromptedLM
from spot_core.prompts import PromptInit, PromptModule, check_shape
from spot_core.run_dir import RunDir, write_json
from spot_core.tags import OWN_PROMPT
from spot_core.tracking import Tracker
from spot_core.trainer import Callback
from spot_core.tuning import ModuleBuilder, RunSpec, codec_for, initial_prompt, label_words, trainer_for

TARGET_INITS = (PromptInit.SAMPLED_VOCAB, PromptInit.RANDOM_UNIFORM, PromptInit.ZEROS)  # ATTEMPT's two, spot's zeros


@dataclass
class AttemptConfig:
    """A study's ATTEMPT; the defaults are ATTEMPT's code's (see the module docstring).

    Attributes:
        top_k: mix the k source runs retrieval ranks first for each target (SPoT's task-embedding similarity);
            None: every source of the study.
        attention_size: d, the attention's down-projection (ATTEMPT: 100).
        temperature: divides the scores; None: H * e (ATTEMPT's `model_dim * exp(1)`, 2087 for T5 Base).
        bias: W_down and W_up with biases (ATTEMPT's have none).
        train_norm: the LayerNorm's gain and bias train (ATTEMPT's stay at 1 and 0).
        target_init: how the target prompt starts: sampled_vocab (ATTEMPT's `init_prefix_from_vocab`, the first
            5,000 token ids), random_uniform (ATTEMPT's other branch, U(-0.5, 0.5)) or zeros.
    """

    top_k: int | None = None
    attention_size: int = 100
    temperature: float | None = None
    bias: bool = False
    train_norm: bool = False
    target_init: PromptInit = PromptInit.SAMPLED_VOCAB

    SETTING = "study.attempt"

    def __post_init__(self):
        if self.top_k is not None:
            check_int(self.top_k, "study.attempt.top_k", hint=" (or null: every source)")
        check_int(self.attention_size, "study.attempt.attention_size")
        if self.temperature is not None:
            check_number(self.temperature, "study.attempt.temperature", positive=True, hint=" (or null: H * e)")
        for name in ("bias", "train_norm"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"study.attempt.{name} must be true or false, got {getattr(self, name)!r}")
        if self.target_init not in TARGET_INITS:  # a PromptInit is equal to its value
            allowed = ", ".join(TARGET_INITS)
            got = getattr(self.target_init, "value", self.target_init)
            raise ConfigError(f"study.attempt.target_init must be one of: {allowed}; got {got!r}")
        self.target_init = PromptInit(self.target_init)

    def temperature_for(self, hidden_size: int) -> float:
        """The temperature on a backbone of hidden size H: the setting, or H * e."""
        return self.temperature if self.temperature is not None else hidden_size * math.e


class AttentionPrompt(PromptModule):
    """ATTEMPT's prompt module (see the module docstring).

    Args:
        sources: [K, L, H] the frozen source prompts (a buffer).
        target: [L, H] the target prompt's start.
        attention_size: d, W_down's output size.
        temperature: divides the scores.
        generator: draws the attention's initial weights (nn.Linear's rule: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), the
            weight then the bias of W_down, then of W_up).
        forced: [K + 1] fixed attention weights over the prompts instead of the attention's (an ablation, and the
            check against SPoT): the prompt no longer depends on the input.
        bias: W_down and W_up with biases (ATTEMPT's have none).
        train_norm: the LayerNorm with a trained gain and bias (ATTEMPT's stay at 1 and 0, so it has none here).
    """

    def __init__(
        self,
        sources: torch.Tensor,
        target: torch.Tensor,
        attention_size: int,
        temperature: float,
        generator: torch.Generator,
        forced: torch.Tensor | None = None,
        *,
        bias: bool = False,
        train_norm: bool = False,
    ):
        super().__init__()
        H = target.shape[1]
        self.register_buffer("sources", sources.detach().to(torch.float32).clone())
        self.target = nn.Parameter(target.detach().to(torch.float32).clone())
        self.down = nn.Linear(H, attention_size, bias=bias)
        self.up = nn.Linear(attention_size, H, bias=bias)
        self.norm = nn.LayerNorm(H, elementwise_affine=train_norm)
        with torch.no_grad():
            for layer in (self.down, self.up):
                bound = 1 / math.sqrt(layer.in_features)
                for tensor in (layer.weight, layer.bias) if bias else (layer.weight,):
                    tensor.copy_(torch.rand(tensor.shape, generator=generator) * 2 * bound - bound)
        self.temperature = temperature
        self.forced = None if forced is None else forced.detach().to(torch.float32)

    @property
    def per_example(self) -> bool:  # type: ignore[override]
        return self.forced is None

    def prompts(self) -> torch.Tensor:
        """The prompts the attention weighs: the sources, then the target's own, [K + 1, L, H]."""
        return torch.cat([self.sources, self.target[None]])

    def attention(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, T, H] embedded inputs, [B, T] mask -> [B, K + 1] attention over the prompts.

        The input's max-pool leaves out the padding (mask 0), where ATTEMPT's code pools every position: it pads
        every input to one length, spot pads a batch to its longest input, and the pool must not depend on the batch
        (see the module docstring)."""
        pooled = embeds.float().masked_fill(mask[..., None] == 0, -torch.inf).amax(1)
        query = self.norm(self.up(F.silu(self.down(pooled))))
        keys = self.prompts().amax(1)  # [K + 1, H]
        return (query @ keys.T / self.temperature).softmax(-1)

    def for_inputs(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Each input's prompt, [B, L, H]."""
        weights = self.attention(embeds, mask)
        return self.target + torch.einsum("bk,klh->blh", weights, self.prompts())

    def forward(self) -> torch.Tensor:
        """The part of the prompt that does not depend on the input: the target prompt (with `forced` weights, the
        whole prompt)."""
        if self.forced is None:
            return self.target
        return self.target + torch.einsum("k,klh->lh", self.forced, self.prompts())


def attention_module(
    spec: RunSpec, source_files: Sequence[str], config: AttemptConfig, forced: torch.Tensor | None = None
) -> ModuleBuilder:
    """A builder of the run's `AttentionPrompt` (for `tuning.prepare`): the source prompt files, each checked
    against the backbone; the target prompt started as `config.target_init` says (with `spec.prompt`'s length,
    population and scale).

    Raises:
        ConfigError: `forced` weights with a target that does not start at zeros (it would not be SPoT's transfer).
    """
    if forced is not None and config.target_init is not PromptInit.ZEROS:
        raise ConfigError("forced attention is SPoT's transfer from a target prompt at zeros: it needs "
                          f"study.attempt.target_init=zeros, got {config.target_init.value}")  # fmt: skip

    def build(backbone: Backbone) -> AttentionPrompt:
        H, sources = backbone.hidden_size, []
        for f in source_files:
            prompt, trained_on = read_prompt_file(f)
            length = sources[0].shape[0] if sources else None
            check_shape(prompt, length, H, what=f"source prompt {f}", model=backbone.name, trained_on=trained_on)
            sources.append(prompt)
        seed = spec.trainer.seed
        generator = torch.Generator().manual_seed(seed)
        codec = codec_for(spec, backbone)
        start = replace(spec.prompt, init=config.target_init)
        target = initial_prompt(start, backbone, codec, label_words(spec.task) or None, seed)
        return AttentionPrompt(
            torch.stack(sources), target, config.attention_size, config.temperature_for(H), generator, forced,
            bias=config.bias, train_norm=config.train_norm,
        )  # fmt: skip

    return build


class AttentionRecord(Callback):
    """At the run's last evaluation, the best module's attention over the prompts on every validation example,
    written to `RunDir.attention` (before the run is marked finished) and logged."""

    def __init__(self, model: PromptedLM, data: Any, run: RunDir, names: Sequence[str], steps: int, tracker: Tracker):
        self.model, self.data, self.run, self.names, self.steps, self.tracker = model, data, run, names, steps, tracker

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        if step != self.steps:
            return
        module = copy.deepcopy(self.model.prompt)
        if self.run.best_module.exists():
            module.load_state_dict(load_module(self.run.best_module)[0])
        weights = validation_attention(self.model, module, self.data.validation)
        mean = weights.mean(0).tolist() if len(weights) else []
        record = {"prompts": [*self.names, OWN_PROMPT], "mean": mean, "examples": weights.tolist()}
        self.tracker.log_artifact(write_json(self.run.attention, record))
        if self.run.best_module.exists():
            self.tracker.log_artifact(self.run.best_module)


def validation_attention(model: PromptedLM, module: AttentionPrompt, examples: Sequence[Any]) -> torch.Tensor:
    """[N, K + 1] the module's attention for each example (its input's embeddings alone: the backbone does not
    run)."""
    embedding = model.model.get_input_embeddings()
    rows = []
    with torch.no_grad():
        for e in examples:
            ids = torch.tensor([e.input_ids], device=model.device)
            rows.append(module.attention(embedding(ids), torch.ones_like(ids)).cpu()[0])
    return torch.stack(rows) if rows else torch.zeros(0, module.sources.shape[0] + 1)


def tune_attempt(
    spec: RunSpec,
    sources: Sequence[str],
    names: Sequence[str],
    config: AttemptConfig,
    out_dir: str | Path,
    tracker: Tracker | None = None,
    forced: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Runs (or resumes) an ATTEMPT run of `spec` (its task, data, trainer) mixing the source prompt files
    `sources` (of the source tasks `names`); returns its result."""
    run = RunDir(out_dir)
    if run.finished():
        return run.result()
    build = attention_module(spec, sources, config, forced)
    meta = {
        "attempt.sources": list(names),
        "attempt.temperature": "H*e" if config.temperature is None else config.temperature,
        "attempt.bias": config.bias,
        "attempt.train_norm": config.train_norm,
    }
    trainer = trainer_for(spec, out_dir, tracker, module=build, metadata=meta)
    trainer.callbacks += [
        BestModule(trainer.model.prompt, run, spec.trainer.best_includes_init),
        AttentionRecord(trainer.model, trainer.data, run, names, spec.trainer.steps, trainer.tracker),
    ]
    return trainer.fit()
