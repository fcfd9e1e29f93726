"""What a study's cells cost before they run: seconds per token of a model's training step and of its evaluation
forward pass, measured here by a short calibration or read from a stored figure for a named GPU, and the
arithmetic from a cell's steps, batch and evaluations to seconds.

The unit is the token that runs through the model: a cell's step at batch B runs its prompt once (prompt once) or
once per example (concatenated; encoder-decoder models), then each example's input and target, all at their
maximum length (`Shape.step_tokens`). Real inputs are often shorter, so estimates are upper bounds.

Calibration (`calibrate`) times the trainer's own step (`accumulate_gradients`, or `packed_gradients` for K packed
cells) on a model of the study's architecture with random weights (`random_backbone`: no download; the weights'
values do not change the time). On a CPU it keeps 2 of the model's layers, at most 2 cells, and enough examples per
cell to make 512 tokens (1 at T5's 612), then scales by depth and tokens: every layer costs the same, and a CPU is
as busy at 512 tokens as at 20,000. The embedding and output layers are then counted (layers / 2) times over: an
overestimate, small where they are a small share of a step (on this 2-core CPU, against the whole model: T5 Base's
training step +3 %, SmolLM2-135M's +20 %, its evaluation +50 %). On a GPU it times the whole model at the packed
shape.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, PretrainedConfig, T5Config

from spot_core.backbones import (
    BUILTIN_MODELS,
    DTYPES,
    Backbone,
    BackboneError,
    byte_tokenizer,
    freeze,
    model_config,
)
from spot_core.encoding import Codec, Encoded, collate, to_device
from spot_core.errors import ConfigError
from spot_core.packing import packed_gradients
from spot_core.prompted import PromptedLM
from spot_core.prompts import SoftPrompt
from spot_core.run_dir import write_json
from spot_core.study import Cell, StudyConfig
from spot_core.trainer import TrainerConfig, accumulate_gradients, make_optimizer

# T5 1.1, LM-adapted (SPoT's prompts) and original (its model-tuning rows), so that a plan can cost them without their
# files: d_model, d_ff, layers, heads
T5_SIZES = {
    "small": (512, 1024, 8, 6),
    "base": (768, 2048, 12, 12),
    "large": (1024, 2816, 24, 16),
    "xl": (2048, 5120, 24, 32),
    "xxl": (4096, 10240, 24, 64),
}
T5_V1_1 = {
    **{f"google/t5-{size}-lm-adapt": dims for size, dims in T5_SIZES.items()},
    **{f"google/t5-v1_1-{size}": dims for size, dims in T5_SIZES.items()},
}
# The built-in models' architectures as their caches hold them, so that a machine without their packages (a GPU
# lent for a benchmark) builds them too; tests/test_plan.py checks them against the installed models.
BUILTIN_ARCHITECTURES = {
    "smollm2-135m": ("LlamaConfig", dict(
        hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
        head_dim=64, vocab_size=49152, tie_word_embeddings=True, max_position_embeddings=8192, rms_norm_eps=1e-5,
        rope_parameters={"rope_theta": 100000.0, "rope_type": "default"})),
    "gemma3-270m": ("Gemma3TextConfig", dict(
        hidden_size=640, intermediate_size=2048, num_hidden_layers=18, num_attention_heads=4, num_key_value_heads=1,
        head_dim=256, vocab_size=262144, tie_word_embeddings=True, max_position_embeddings=32768, sliding_window=512,
        query_pre_attn_scalar=256, layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 3,
        rope_parameters={"full_attention": {"rope_theta": 1e6, "rope_type": "default"},
                         "sliding_attention": {"rope_theta": 1e4, "rope_type": "default"}})),
}  # fmt: skip
CPU_LAYERS = 2  # layers a CPU calibration keeps (all on a GPU)
CPU_TOKENS = 512  # a CPU calibration's examples per cell make at least this many tokens (fewer run less efficiently)


@dataclass(frozen=True)
class Shape:
    """The tokens of one cell's step: its prompt, and each example's input and target at their maximum length."""

    prompt_length: int
    input_tokens: int
    target_tokens: int
    prompt_once: bool  # the prompt runs once per step (decoder-only), else once per example

    def step_tokens(self, examples: int) -> int:
        """Tokens through the model in a step of `examples` examples (prompt included)."""
        prompt = self.prompt_length * (1 if self.prompt_once else examples)
        return prompt + examples * (self.input_tokens + self.target_tokens)


@dataclass(frozen=True)
class TokenCost:
    """Seconds per token of a model: in a training step (forward and input-gradient backward) and in an evaluation
    forward pass; `how` says where the figures come from; `gpu`: they are a GPU's. Model tuning's (None where not
    measured): `train_weights`, seconds per token of a step that also computes every weight's gradient, and
    `update`, seconds of one optimizer step over every weight (Adafactor: per step, whatever the batch)."""

    model: str
    train: float
    evaluate: float
    how: str
    gpu: bool = False
    train_weights: float | None = None
    update: float | None = None
    held: TuningMemory | None = None  # model tuning: what a cell holds before activations (`tuning_memory`)


@dataclass(frozen=True)
class TuningMemory:
    """Bytes a model-tuning cell holds besides its activations: every weight, its gradient and Adafactor's state
    (T5's: no first moment; a matrix's second moment factored into its row and column means, a vector's whole)."""

    weights: int
    gradients: int
    optimizer: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer

    def describe(self) -> str:
        return (f"{size(self.total)} before activations: weights {size(self.weights)}, their gradients "
                f"{size(self.gradients)}, Adafactor's factored state {size(self.optimizer)}")  # fmt: skip


def size(nbytes: int) -> str:
    """Bytes as a reader takes them in: GiB from one GiB up, else MiB."""
    return f"{nbytes / 1024**3:.2f} GiB" if nbytes >= 1024**3 else f"{nbytes / 1024**2:.1f} MiB"


def tuning_memory(config: PretrainedConfig, dtype: str) -> TuningMemory:
    """What a model-tuning cell of a model of `config` holds besides activations, from its parameters' shapes
    (built on the meta device: no memory, no weights). Adafactor keeps its state in float32."""
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    with torch.device("meta"):
        shapes = [p.shape for p in auto.from_config(config).parameters()]
    size = torch.empty(0, dtype=DTYPES[dtype]).element_size()
    count = sum(math.prod(s) for s in shapes)
    state = sum(math.prod(s[:-1]) + math.prod(s[:-2]) * s[-1] if len(s) >= 2 else math.prod(s) for s in shapes)
    return TuningMemory(count * size, count * size, 4 * state)


@dataclass(frozen=True)
class Work:
    """What a cell runs through its model: `steps` training steps of `batch_size` examples, and `evaluations`
    passes over `eval_examples` validation examples each (None: the whole split, whose size is not known here).
    `forward_steps`: steps' worth of forward passes without gradients over the training batch besides (MPT's
    teachers beside its student), priced as evaluation tokens and counted in the training seconds."""

    steps: int = 0
    batch_size: int = 0
    evaluations: int = 0
    eval_examples: int | None = None
    eval_batch_size: int = 1
    forward_steps: int = 0
    weights: bool = False  # model tuning: no prompt, every weight's gradient and an optimizer step over them

    def seconds(self, shape: Shape, cost: TokenCost) -> tuple[float, float]:
        """(training, evaluation) seconds; evaluation 0 when its size is not known. Model tuning's steps at `cost`'s
        model-tuning figures (ConfigError where it has none)."""
        if self.weights:
            if cost.train_weights is None or cost.update is None:
                raise ConfigError(
                    f"{cost.model}: no figure of a model-tuning step ({cost.how}); plan=true without a device "
                    "measures one on this machine"
                )
            shape = Shape(0, shape.input_tokens, shape.target_tokens, shape.prompt_once)
        per_step = shape.step_tokens(self.batch_size)
        per_token = cost.train_weights if self.weights else cost.train
        train = self.steps * (per_step * per_token + (cost.update if self.weights else 0.0))
        train += self.forward_steps * per_step * cost.evaluate
        return train, self.evaluations * (self.eval_examples or 0) * self.example_seconds(shape, cost)

    def example_seconds(self, shape: Shape, cost: TokenCost) -> float:
        """One evaluation example's forward pass (its share of its batch's prompt in prompt-once mode)."""
        return shape.step_tokens(self.eval_batch_size) / self.eval_batch_size * cost.evaluate


def evaluations(trainer: TrainerConfig) -> int:
    """How many times a run of these settings evaluates: every `eval_every` steps and at the last (and at 0)."""
    return trainer.steps // trainer.eval_every + bool(trainer.steps % trainer.eval_every) + trainer.eval_at_start


def trains(cell: Cell) -> bool:
    """Whether the cell trains a prompt (its key holds the trainer settings) rather than only scoring one."""
    return cell.trainer is not None and "trainer" in json.loads(cell.identity)


def model_work(cell: Cell, study: StudyConfig) -> Work:
    """A model-tuning cell's work: its trainer's steps and evaluations, every weight trained (`Work.weights`)."""
    t = cell.trainer
    assert t is not None  # a model-tuning cell trains
    evals = evaluations(t)
    return Work(t.steps, t.batch_size, evals, study.max_eval_examples, t.eval_batch_size, weights=True)


def trained_work(cell: Cell, study: StudyConfig) -> Work:
    """What a cell runs through its model by its trainer's settings: its steps and evaluations, or (a cell that
    only scores its prompt) one evaluation; nothing for a cell without a trainer (one prompt's forward pass)."""
    evals = dict(eval_examples=study.max_eval_examples)
    if cell.trainer is None:
        return Work()
    t = cell.trainer
    if not trains(cell):
        return Work(evaluations=1, eval_batch_size=t.eval_batch_size, **evals)
    return Work(t.steps, t.batch_size, evaluations(t), eval_batch_size=t.eval_batch_size, **evals)


# --- a model to time ----------------------------------------------------------------------------------------
def architecture(name: str, cache_dir: str | Path | None = None) -> PretrainedConfig:
    """The config of model `name` from this machine's files only (no hub lookups): a known architecture (T5 1.1,
    LM-adapted or not, the built-in models), or a local directory or Hugging Face cache entry.

    Raises:
        BackboneError: none of these has it.
    """
    if name in T5_V1_1:
        d_model, d_ff, layers, heads = T5_V1_1[name]
        return T5Config(
            vocab_size=32128, d_model=d_model, d_ff=d_ff, d_kv=64, num_layers=layers, num_heads=heads,
            feed_forward_proj="gated-gelu", tie_word_embeddings=False, pad_token_id=0, eos_token_id=1,
            decoder_start_token_id=0,
        )  # fmt: skip
    if name in BUILTIN_ARCHITECTURES:
        kind, settings = BUILTIN_ARCHITECTURES[name]
        return getattr(transformers, kind)(pad_token_id=0, eos_token_id=1, bos_token_id=1, **settings)
    try:
        if name in BUILTIN_MODELS:
            return model_config(name, cache_dir)
        return AutoConfig.from_pretrained(name, local_files_only=True)  # a local directory, or the HF cache
    except (OSError, ValueError) as e:
        known = ", ".join(T5_V1_1)
        raise BackboneError(
            f"cannot cost model {name!r}: its config is not on this machine and it is not an architecture spot knows "
            f"offline ({known}): download it once with internet, or plan with a stored figure (plan=DEVICE)"
        ) from e


def shallow(config: PretrainedConfig, layers: int | None) -> tuple[PretrainedConfig, float]:
    """The config with at most `layers` layers (None: all; an encoder-decoder keeps as many in each stack), and
    how many times the full model's layers outnumber the kept ones."""
    full = config.num_hidden_layers + (config.num_decoder_layers if config.is_encoder_decoder else 0)
    if layers is None or layers >= config.num_hidden_layers:
        return config, 1.0
    config = copy.deepcopy(config)
    config.num_hidden_layers = layers
    if config.is_encoder_decoder:
        config.num_decoder_layers = layers
    if getattr(config, "layer_types", None):
        config.layer_types = config.layer_types[:layers]
    return config, full / (layers * (2 if config.is_encoder_decoder else 1))


def random_backbone(
    name: str, config: PretrainedConfig, dtype: str = "float32", device: str = "cpu", seed: int = 0
) -> Backbone:
    """A frozen model of `config` with random weights (fixed seed) and the byte tokenizer (its pad id is 0),
    initialised where it runs (on a GPU: seconds, where the host takes a minute for Gemma 3's embeddings)."""
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    with torch.random.fork_rng(), torch.device(device):
        torch.manual_seed(seed)
        model = auto.from_config(config)
    model = freeze(model.to(dtype=DTYPES[dtype]))
    return Backbone(name=name, model=model, tokenizer=byte_tokenizer())


# --- calibration --------------------------------------------------------------------------------------------
def _batch(backbone: Backbone, shape: Shape, examples: int, gen: torch.Generator) -> list[Encoded]:
    vocab = backbone.model.config.vocab_size

    def ids(n: int) -> list[int]:
        return torch.randint(3, vocab, (n,), generator=gen).tolist()

    return [Encoded(ids(shape.input_tokens), ids(shape.target_tokens), "") for _ in range(examples)]


def _fastest(run: Callable[[], object], device: torch.device, budget: float = 2.0, most: int = 3) -> float:
    """The fastest of up to `most` timed calls, until `budget` seconds have passed (a long call times itself well:
    once is enough). A GPU gets one untimed call first (kernel choices, allocations); on a CPU the first call is
    no slower at these shapes."""
    times: list[float] = []
    for i in range(most + (device.type == "cuda")):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if device.type != "cuda" or i > 0:
            times.append(time.perf_counter() - start)
        if times and sum(times) >= budget:
            break
    return min(times)


def calibrate(
    backbone: Backbone, shape: Shape, cells: int = 1, examples: int = 1, depth: float = 1.0
) -> tuple[float, float]:
    """Times the trainer's step for `cells` cells of `examples` examples each (`packed_gradients` when more than
    one, else `accumulate_gradients`, in one pass) and a forward pass without gradients over one cell's examples;
    returns (training, evaluation) seconds per token, times `depth` (the layers left out, see `shallow`)."""
    gen = torch.Generator().manual_seed(0)
    codec = Codec(backbone.tokenizer, backbone.is_encoder_decoder, shape.input_tokens, shape.target_tokens)
    device = backbone.model.get_input_embeddings().weight.device

    def prompted() -> PromptedLM:
        prompt = SoftPrompt(0.5 * torch.randn(shape.prompt_length, backbone.hidden_size, generator=gen))
        return PromptedLM(backbone, prompt.to(device), shape.prompt_once).train()

    models = [prompted() for _ in range(cells)]
    batches = [_batch(backbone, shape, examples, gen) for _ in range(cells)]

    def step() -> None:
        if cells == 1:
            accumulate_gradients(models[0], batches[0], codec, examples)
        else:
            packed_gradients(models, batches, codec, cells * examples)
        for model in models:
            model.zero_grad(set_to_none=True)

    def forward() -> None:
        with torch.no_grad():
            models[0].eval().loss(to_device(collate(batches[0], codec), models[0].device))

    train = _fastest(step, device) / (cells * shape.step_tokens(examples))
    evaluate = _fastest(forward, device) / shape.step_tokens(examples)
    return train * depth, evaluate * depth


def calibrate_weights(
    backbone: Backbone, shape: Shape, examples: int, depth: float, params: int
) -> tuple[float, float]:
    """Times a model-tuning step (no prompt, every weight's gradient) over `examples` examples and one Adafactor
    update of every weight (T5's fine-tuning settings, `conf/trainer/model_tuning.yaml`); returns (seconds per
    token times `depth`, the update's seconds scaled from the backbone's parameters to `params`)."""
    gen = torch.Generator().manual_seed(0)
    codec = Codec(backbone.tokenizer, backbone.is_encoder_decoder, shape.input_tokens, shape.target_tokens)
    device = backbone.model.get_input_embeddings().weight.device
    bare = Shape(0, shape.input_tokens, shape.target_tokens, shape.prompt_once)
    backbone.model.requires_grad_(True)
    try:
        model = PromptedLM(backbone, SoftPrompt(torch.zeros(0, backbone.hidden_size, device=device))).train()
        batch = _batch(backbone, bare, examples, gen)
        weights = list(backbone.model.parameters())
        optimizer = make_optimizer(TrainerConfig(lr=1e-3, scale_parameter=True, weight_decay=0.0), weights)

        def step() -> None:
            backbone.model.zero_grad(set_to_none=True)
            accumulate_gradients(model, batch, codec, examples)

        train = _fastest(step, device) / bare.step_tokens(examples)
        update = _fastest(optimizer.step, device)
    finally:
        backbone.model.zero_grad(set_to_none=True)
        backbone.model.requires_grad_(False)
    return train * depth, update * params / sum(p.numel() for p in weights)


def parameters(config: PretrainedConfig) -> int:
    """The parameter count of a model of `config` (built on the meta device: no memory, no weights)."""
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    with torch.device("meta"):
        return sum(p.numel() for p in auto.from_config(config).parameters())


def measure(
    name: str,
    config: PretrainedConfig,
    shape: Shape,
    cells: int,
    batch_size: int,
    dtype: str,
    device: str,
    weights: bool = False,
) -> TokenCost:
    """Calibrates model `name` here: on a CPU at 2 of its layers, min(cells, 2) cells of as many examples as make
    CPU_TOKENS tokens (at least 1, at most the batch); on a GPU at all its layers and the full packed shape.
    `weights`: model tuning's figures too (`calibrate_weights`)."""
    gpu = torch.device(device).type == "cuda"
    kept, depth = shallow(config, None if gpu else CPU_LAYERS)
    measured = cells if gpu else min(cells, 2)
    examples = batch_size if gpu else min(batch_size, -(-CPU_TOKENS // (shape.input_tokens + shape.target_tokens)))
    backbone = random_backbone(name, kept, dtype, device)
    train, evaluate = calibrate(backbone, shape, measured, examples, depth)
    tuned = (*calibrate_weights(backbone, shape, examples, depth, parameters(config)), tuning_memory(config, dtype)) \
        if weights else (None, None, None)  # fmt: skip
    where = torch.cuda.get_device_name(device) if gpu else f"cpu, {torch.get_num_threads()} threads"
    layers = "all its layers" if depth == 1 else f"{kept.num_hidden_layers} of its {config.num_hidden_layers} layers"
    scaled = "the study's tokens" if depth == 1 else "all layers and the study's tokens"
    how = (
        f"measured here ({where}, {dtype}) on {layers} with random weights: a {'packed ' if measured > 1 else ''}"
        f"step of {measured} cell{'s' if measured > 1 else ''} x {examples} example{'s' if examples > 1 else ''} "
        f"at full length, scaled to {scaled}"
    )
    if weights:
        how += "; model tuning: a step with every weight's gradient, and an Adafactor update scaled to all weights"
    return TokenCost(name, train, evaluate, how, gpu, *tuned)


# --- stored figures ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Figure:
    """A training step measured on a named device (bench/packed.py records them with `record_figure`).

    `device`: the name `plan=NAME` asks for (compared in lower case); `model`: the name a study gives the model
    (a random-weight model of its architecture counts); `cells` cells of `batch_size` examples each trained as one
    pack in `step_seconds`; `eval_seconds_per_example` (optional): one evaluation example's forward pass;
    `measured`: when and with what (date, torch version, script)."""

    device: str
    model: str
    dtype: str
    cells: int
    batch_size: int
    prompt_length: int
    input_tokens: int
    target_tokens: int
    prompt_once: bool
    step_seconds: float
    eval_seconds_per_example: float | None = None
    measured: str = ""

    @property
    def shape(self) -> Shape:
        return Shape(self.prompt_length, self.input_tokens, self.target_tokens, self.prompt_once)

    def same_setting(self, other: Figure) -> bool:
        skip = {"step_seconds", "eval_seconds_per_example", "measured"}
        return all(getattr(self, f.name) == getattr(other, f.name) for f in fields(self) if f.name not in skip)


def load_figures(path: str | Path) -> list[Figure]:
    """The figures in a stored-figures file (none if it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [Figure(**row) for row in json.loads(path.read_text())["figures"]]


def record_figure(path: str | Path, figure: Figure, about: str = "") -> Path:
    """Adds a figure to a stored-figures file, replacing one of the same setting (device, model, dtype, shape)."""
    path = Path(path)
    data = json.loads(path.read_text()) if path.is_file() else {"about": about, "figures": []}
    kept = [row for row in data["figures"] if not Figure(**row).same_setting(figure)]
    data["figures"] = [*kept, asdict(figure)]
    return write_json(path, data)


def stored_cost(
    figures: Sequence[Figure], device: str, model: str, dtype: str, cells: int, source: str | Path
) -> TokenCost:
    """A model's cost on a named device from its stored figure of that dtype with the pack size nearest `cells`.

    Raises:
        ConfigError: the device, or that model in that dtype on it, has no figure (one line: what to do).
    """
    todo = f"measure it with bench/packed.py on that GPU (it records {source}), or plan=true to calibrate here"
    on_device = [f for f in figures if f.device.lower() == device.lower()]
    if not on_device:
        stored = sorted({f.device for f in figures})
        raise ConfigError(
            f"plan={device}: no stored figure for device {device!r} in {source} "
            f"(devices with figures: {', '.join(stored) or 'none yet'}): {todo}"
        )
    found = [f for f in on_device if f.model == model and f.dtype == dtype]
    if not found:
        has = sorted({f"{f.model} in {f.dtype}" for f in on_device})
        raise ConfigError(
            f"plan={device}: no stored figure for model {model!r} in {dtype} on {device} (it has {', '.join(has)}): "
            f"{todo}"
        )
    f = min(found, key=lambda f: (abs(f.cells - cells), f.cells))
    train = f.step_seconds / (f.cells * f.shape.step_tokens(f.batch_size))
    per_example = f.shape.step_tokens(f.batch_size) / f.batch_size
    evaluate = train / 2 if f.eval_seconds_per_example is None else f.eval_seconds_per_example / per_example
    how = (
        f"stored figure for {f.device} ({f.measured or 'no date'}): {f.cells} cell(s) x {f.batch_size} examples at "
        f"prompt {f.prompt_length} + {f.input_tokens} + {f.target_tokens} tokens, scaled to the study by tokens"
        + ("; evaluation taken as half a training step per token" if f.eval_seconds_per_example is None else "")
    )
    return TokenCost(model, train, evaluate, how, gpu=True)
