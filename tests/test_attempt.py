"""ATTEMPT's attention (spot_core.methods.attempt) by hand, and its defaults: those of ATTEMPT's code.

The hand computation: two source prompts and the target's own, 3 tokens each, H = 3, W_down and W_up the identity,
the LayerNorm without gain or bias (ATTEMPT's is frozen at 1 and 0), and an input of 3 tokens whose last is padding.
Each step of the attention (max-pool, SiLU, LayerNorm, dot products, temperature, softmax, the instance prompt) is
written out below with plain Python math and compared with the module.
"""

import json
import math

import pytest
import torch

from spot_core.errors import ConfigError
from spot_core.methods.attempt import AttemptConfig, AttentionPrompt, attention_module
from spot_core.prompt_files import save_prompt
from spot_core.prompts import PromptInit
from spot_core.trainer import TrainerConfig
from spot_core.tuning import PromptConfig, RunSpec

H = 3
EPS = 1e-5  # nn.LayerNorm's
SOURCES = [
    [[1.0, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, -1.0]],  # max-pooled: [1, 0.5, 0]
    [[0.0, 0.0, 2.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 0.0]],  # [0, 1, 2]
]
TARGET = [[0.5, 0.5, 0.5], [0.0, 0.0, 0.0], [-0.5, 0.0, 1.0]]  # [0.5, 0.5, 1]
INPUTS = [
    [[1.0, -2.0, 0.5], [0.0, 1.0, -1.0], [9.0, 9.0, 9.0]],  # the last position is padding
    [[0.0, 0.0, 3.0], [2.0, -1.0, 0.0], [1.0, 1.0, 1.0]],
]
MASK = [[1, 1, 0], [1, 1, 1]]


def silu(x: float) -> float:
    return x / (1 + math.exp(-x))


def layer_norm(v: list[float]) -> list[float]:
    mean = sum(v) / len(v)
    var = sum((x - mean) ** 2 for x in v) / len(v)
    return [(x - mean) / math.sqrt(var + EPS) for x in v]


def softmax(scores: list[float]) -> list[float]:
    exps = [math.exp(s) for s in scores]
    return [e / sum(exps) for e in exps]


def max_pool(rows: list[list[float]]) -> list[float]:
    return [max(column) for column in zip(*rows, strict=True)]


def by_hand(temperature: float) -> tuple[list[list[float]], list[list[list[float]]]]:
    """Each input's attention over [source 1, source 2, target] and its instance prompt."""
    prompts = [*SOURCES, TARGET]
    keys = [max_pool(p) for p in prompts]  # [1, 0.5, 0], [0, 1, 2], [0.5, 0.5, 1]
    weights, instance = [], []
    for tokens, mask in zip(INPUTS, MASK, strict=True):
        pooled = max_pool([t for t, m in zip(tokens, mask, strict=True) if m])  # padding never enters
        query = layer_norm([silu(x) for x in pooled])  # W_down = W_up = identity, no bias
        a = softmax([sum(q * k for q, k in zip(query, key, strict=True)) / temperature for key in keys])
        weights.append(a)
        instance.append(
            [[TARGET[i][h] + sum(a[j] * prompts[j][i][h] for j in range(3)) for h in range(H)] for i in range(3)]
        )
    return weights, instance


def hand_module(temperature: float) -> AttentionPrompt:
    module = AttentionPrompt(
        torch.tensor(SOURCES), torch.tensor(TARGET), H, temperature, torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        module.down.weight.copy_(torch.eye(H))
        module.up.weight.copy_(torch.eye(H))
    return module


def test_the_attention_and_the_instance_prompts_are_attempts_computed_by_hand():
    temperature = H * math.e  # ATTEMPT's default: model_dim * exp(1)
    module = hand_module(temperature)
    embeds, mask = torch.tensor(INPUTS), torch.tensor(MASK)
    weights, instance = by_hand(temperature)
    # the first input in closed form: its pool [1, 1, 0.5] keeps its order through SiLU, and LayerNorm makes it
    # [1, 1, -2] / sqrt(2) (up to eps): scores [1.5, -3, -1] / sqrt(2) against the keys, over the temperature
    closed = softmax([s / math.sqrt(2) / temperature for s in (1.5, -3.0, -1.0)])
    assert weights[0] == pytest.approx(closed, abs=1e-4)
    torch.testing.assert_close(module.attention(embeds, mask), torch.tensor(weights), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(module.for_inputs(embeds, mask), torch.tensor(instance), rtol=1e-6, atol=1e-6)
    # the temperature divides the scores: a lower one sharpens the same attention
    sharp, _ = by_hand(0.5)
    torch.testing.assert_close(hand_module(0.5).attention(embeds, mask), torch.tensor(sharp), rtol=1e-6, atol=1e-6)
    assert max(sharp[0]) > max(weights[0])
    # ATTEMPT's code max-pools the padding too: here the pad's 9s would win every dimension, the query would be
    # LayerNorm of a constant (zero) and the attention uniform
    unmasked = module.attention(embeds, torch.ones_like(mask))
    torch.testing.assert_close(unmasked[0], torch.full((3,), 1 / 3))
    assert not torch.allclose(unmasked[0], torch.tensor(weights[0]))


def test_the_defaults_are_attempts_code():
    config = AttemptConfig()
    assert config.temperature_for(768) == pytest.approx(2087.6, abs=0.05)  # its configs' 2087 for T5 Base
    assert config.temperature_for(H) == H * math.e
    assert (config.bias, config.train_norm, config.target_init) == (False, False, PromptInit.SAMPLED_VOCAB)
    assert config.attention_size == 100
    module = AttentionPrompt(torch.tensor(SOURCES), torch.tensor(TARGET), 4, 1.0, torch.Generator())
    assert set(dict(module.named_parameters())) == {"target", "down.weight", "up.weight"}
    assert module.down.bias is None and module.up.bias is None and module.norm.weight is None


def test_todays_earlier_choices_are_settings():
    assert AttemptConfig(temperature=2.0).temperature_for(H) == 2.0
    module = AttentionPrompt(torch.tensor(SOURCES), torch.tensor(TARGET), 4, 1.0, torch.Generator(), bias=True,
                             train_norm=True)  # fmt: skip
    names = {"target", "down.weight", "down.bias", "up.weight", "up.bias", "norm.weight", "norm.bias"}
    assert set(dict(module.named_parameters())) == names
    assert module.down.bias.abs().max() <= 1 / math.sqrt(H) and module.up.bias.abs().max() <= 1 / math.sqrt(4)


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"temperature": 0}, "study.attempt.temperature must be a finite number > 0"),
        ({"bias": "yes"}, "study.attempt.bias must be true or false"),
        ({"train_norm": 1}, "study.attempt.train_norm must be true or false"),
        ({"target_init": "file"}, "study.attempt.target_init must be one of: sampled_vocab, random_uniform, zeros"),
        ({"target_init": "vocab"}, "study.attempt.target_init must be one of"),
    ],
)
def test_a_wrong_setting_names_itself_and_the_allowed_values(setting, message):
    with pytest.raises(ConfigError, match=message):
        AttemptConfig(**setting)


def built(tmp_path, config: AttemptConfig, forced=None) -> tuple[AttentionPrompt, torch.Tensor]:
    """The run's module as `tune_attempt` builds it on tiny-llama from two source prompt files, and the backbone's
    input embeddings."""
    from spot_core.backbones import load_backbone

    backbone = load_backbone("tiny-llama")
    hidden = backbone.hidden_size
    files = []
    for i in range(2):
        prompt = torch.rand(4, hidden, generator=torch.Generator().manual_seed(i))
        files.append(str(save_prompt(tmp_path / f"s{i}.safetensors", prompt)))
    spec = RunSpec("tiny-llama", "rte_v1", PromptConfig(length=4), TrainerConfig(seed=3))
    return attention_module(spec, files, config, forced)(backbone), backbone.embeddings.detach().float()


def test_a_run_builds_attempts_module_by_default_and_the_earlier_one_by_its_settings(tmp_path):
    module, embeddings = built(tmp_path, AttemptConfig())
    hidden = embeddings.shape[1]
    assert module.temperature == hidden * math.e
    assert set(dict(module.named_parameters())) == {"target", "down.weight", "up.weight"}
    # the target prompt starts as distinct rows of the embedding matrix among the first 5,000 ids
    matches = [(row == embeddings[:5000]).all(1).nonzero().flatten().tolist() for row in module.target.detach()]
    assert all(ids for ids in matches) and len({ids[0] for ids in matches}) == 4
    earlier = AttemptConfig(temperature=hidden**0.5, bias=True, train_norm=True, target_init="zeros")
    module, _ = built(tmp_path, earlier)
    assert module.temperature == hidden**0.5 and torch.equal(module.target, torch.zeros(4, hidden))
    assert {"down.bias", "up.bias", "norm.weight", "norm.bias"} <= set(dict(module.named_parameters()))
    uniform, _ = built(tmp_path, AttemptConfig(target_init="random_uniform"))  # ATTEMPT's other branch
    assert 0 < uniform.target.abs().max() <= 0.5


def test_the_forced_ablation_starts_the_target_at_zeros(tmp_path):
    forced = torch.tensor([1.0, 0.0, 0.0])
    with pytest.raises(ConfigError, match="target_init=zeros"):
        built(tmp_path, AttemptConfig(), forced)
    module, _ = built(tmp_path, AttemptConfig(target_init="zeros"), forced)
    torch.testing.assert_close(module(), module.sources[0])  # SPoT's transfer from the first source


def test_attempt_cells_follow_the_settings(tmp_path):
    from spot_core.stages import attempt
    from spot_core.stages.catalogue import plan_stages
    from spot_core.study import StudyConfig

    def cells(**setting):
        study = StudyConfig(name="t", model="tiny-llama", sources=["mnli", "sst2"], targets=["rte"], seeds=[0],
                            prompt={"length": 4}, attempt=setting)  # fmt: skip
        done = {c.key for c in plan_stages(study, ["source"])}
        return attempt.plan_later(study, tmp_path, done)[0]

    default = cells()[0]
    method = json.loads(default.identity)["method"]
    assert default.init == "sampled_vocab" and (method["bias"], method["train_norm"]) == (False, False)
    assert cells(target_init="zeros")[0].init == "zeros"
    variants = [cells(**s)[0].key for s in ({"bias": True}, {"train_norm": True}, {"target_init": "zeros"},
                                            {"temperature": 2.0})]  # fmt: skip
    assert len({default.key, *variants}) == 5


def test_with_attempts_defaults_a_score_is_at_most_the_keys_norm_over_e_sqrt_h():
    """The LayerNorm fixed at gain 1 and bias 0 gives a query of norm at most sqrt(H), so with the temperature H * e
    no weights and no input can push a score past |k| / (e sqrt(H)): the attention moves only as far as the keys'
    norms let it (T5's embeddings are large; a small model's, or prompts near them, keep it near uniform)."""
    hidden, gen = 32, torch.Generator().manual_seed(0)
    sources = torch.randn(3, 4, hidden, generator=gen)
    module = AttentionPrompt(sources[:2], sources[2], 8, hidden * math.e, gen)
    with torch.no_grad():
        module.down.weight.mul_(100)
        module.up.weight.mul_(100)
    embeds = 100 * torch.randn(16, 5, hidden, generator=gen)
    log_weights = module.attention(embeds, torch.ones(16, 5)).log()
    # the log-weights' spread is the scores' (a softmax ignores shifts)
    spread = (log_weights.max(1).values - log_weights.min(1).values).max().item()
    bound = 2 * module.prompts().amax(1).norm(dim=1).max().item() / (math.e * math.sqrt(hidden))
    assert 0 < spread <= bound + 1e-5
    trained = AttentionPrompt(sources[:2], sources[2], 8, hidden * math.e, gen, train_norm=True)
    with torch.no_grad():
        trained.norm.weight.fill_(100.0)  # a trained gain is what lifts the bound
    log_weights = trained.attention(embeds, torch.ones(16, 5)).log()
    assert (log_weights.max(1).values - log_weights.min(1).values).max().item() > bound


def test_a_run_with_the_defaults_trains_and_records_its_settings(tmp_path, data_dir):
    from spot_core.methods.attempt import tune_attempt
    from spot_core.tracking import MemoryTracker

    hidden = 32  # tiny-llama's
    files = [str(save_prompt(tmp_path / f"s{i}.safetensors", torch.rand(4, hidden))) for i in range(2)]
    spec = RunSpec("tiny-llama", "rte", PromptConfig(length=4, init="sampled_vocab"),
                   TrainerConfig(steps=2, batch_size=4, eval_every=2, eval_batch_size=8), data_dir=str(data_dir),
                   max_train_examples=8, max_eval_examples=8)  # fmt: skip
    tracker = MemoryTracker()
    result = tune_attempt(spec, files, ["a", "b"], AttemptConfig(attention_size=8), tmp_path / "run", tracker)
    assert result["best/step"] == 2
    params = tracker.params
    assert params["trainable_params"] == 4 * hidden + 2 * hidden * 8  # the target prompt, W_down and W_up
    settings = [params[f"attempt.{name}"] for name in ("temperature", "bias", "train_norm")]
    assert settings == ["H*e", False, False]
    assert params["prompt.init"] == "sampled_vocab"


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-t5"])
def test_a_training_batch_weighs_the_prompts_by_the_input_alone_as_evaluation_does(tmp_path, name):
    """A decoder-only training batch holds input and target tokens in one row; the attention must read the input
    only (the target would leak the answer into the prompt): each row's weights in `loss` are those the example's
    input gets alone (`validation_attention`)."""
    from spot_core.backbones import load_backbone
    from spot_core.encoding import Codec, Encoded, collate
    from spot_core.methods.attempt import validation_attention
    from spot_core.prompted import PromptedLM

    backbone = load_backbone(name)
    H, generator = backbone.hidden_size, torch.Generator().manual_seed(0)
    sources = torch.randn(2, 4, H, generator=generator) * 5
    module = AttentionPrompt(sources, torch.zeros(4, H), 8, 1.0, generator)
    model = PromptedLM(backbone, module, prompt_once=False)
    codec = Codec(backbone.tokenizer, backbone.is_encoder_decoder, 64, 8)
    examples = [Encoded([5, 9, 11, 7], [13, 2], "a"), Encoded([21, 6], [17, 3, 4], "b")]  # padded in a batch
    seen = []
    attention = module.attention
    module.attention = lambda embeds, mask: seen.append(attention(embeds, mask)) or seen[-1]
    with torch.no_grad():
        model.loss(collate(examples, codec))
    module.attention = attention
    alone = validation_attention(model, module, examples)
    assert not torch.allclose(alone[0], alone[1])  # the two inputs weigh the prompts differently
    torch.testing.assert_close(seen[0], alone)
