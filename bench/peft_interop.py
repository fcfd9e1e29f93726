"""How closely PEFT reproduces spot's logits for a prompt exported as a PEFT prompt-tuning adapter.

Run from the repository root:

    python -m bench.peft_interop [--model smollm2-135m] [--prompt-len 100] [--json out.json]

A sampled-vocabulary prompt (seeded) is saved as a spot prompt file and exported as `make export` does
(`spot_core.prompt_files.export_peft` with the model's dimensions from `spot_core.backbones.model_dims`); PEFT loads
the adapter with `PeftModel.from_pretrained` on a second copy of the backbone (`load_backbone`). Both run the same
inputs in float32, eval mode, no gradients; spot's logits come from `PromptedLM.logits` (positions skip padding),
PEFT's over the input positions (its virtual tokens' logits dropped). Three cases, each the largest absolute logit
difference over the real (unpadded) input positions:
    one_at_a_time   each input alone, no padding
    right_padded    all inputs in one batch, padded on the right
    left_padded     the same batch padded on the left: PEFT's positions then count the padding (spot's do not), so
                    every padded example's logits differ; per example in `per_example`
Also the largest |logit| (for scale), float32's eps and which examples are the longest (unpadded in both batches).
Printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from spot_core.backbones import load_backbone, model_dims
from spot_core.encoding import Codec, pad
from spot_core.prompt_files import export_peft, read_prompt, save_prompt
from spot_core.prompted import PromptedLM
from spot_core.prompts import SoftPrompt, sampled_vocab

# SST-2-like inputs of different lengths (tokens 6 to about 40), so that a batch pads every example but the longest
TEXTS = [
    "sst2 sentence: it 's a charming and often affecting journey .",
    "sst2 sentence: unflinchingly bleak and desperate",
    "sst2 sentence: allows us to hope that nolan is poised to embark a major career as a commercial yet inventive "
    "filmmaker .",
    "sst2 sentence: the acting , costumes , music , cinematography and sound are all astounding given the production "
    "'s austere locales .",
    "sst2 sentence: it 's slow -- very , very slow .",
    "sst2 sentence: a sometimes tedious film .",
    "sst2 sentence: or doing last year 's taxes with your ex-wife .",
    "sst2 sentence: you do n't have to know about music to appreciate the film 's easygoing blend of comedy and "
    "romance .",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m", help="a decoder-only backbone for load_backbone")
    p.add_argument("--prompt-len", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--json", help="also write the figures here")
    return p.parse_args(argv)


def export(model: str, prompt: torch.Tensor, folder: Path) -> Path:
    """The prompt as a spot prompt file, then as a PEFT adapter as `make export` writes it."""
    dims = model_dims(model)
    path = save_prompt(folder / "prompt.safetensors", prompt, model=model)
    return export_peft(
        folder / "adapter",
        read_prompt(path, dims.hidden_size),
        base_model=model,
        is_encoder_decoder=dims.is_encoder_decoder,
        num_layers=dims.num_layers,
        num_attention_heads=dims.num_attention_heads,
    )


def differences(ours: torch.Tensor, theirs: torch.Tensor, mask: torch.Tensor) -> list[float]:
    """Each example's largest |spot - PEFT| over its real positions ([B, T, V] logits, [B, T] mask)."""
    diff = (ours - theirs).abs().amax(-1).masked_fill(mask == 0, 0)
    return diff.amax(-1).tolist()


def main(argv: list[str] | None = None) -> dict:
    from peft import PeftModel

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    backbone = load_backbone(args.model)
    if backbone.is_encoder_decoder:
        raise SystemExit("bench.peft_interop compares decoder-only backbones (PEFT prompts T5's encoder only)")
    prompt = sampled_vocab(backbone.embeddings.detach(), args.prompt_len, torch.Generator().manual_seed(args.seed))
    spot = PromptedLM(backbone, SoftPrompt(prompt)).eval()
    codec = Codec(backbone.tokenizer, False, 64, 2)
    inputs = [codec.encode_input(t) for t in TEXTS]
    with tempfile.TemporaryDirectory() as tmp:
        peft = PeftModel.from_pretrained(load_backbone(args.model).model, str(export(args.model, prompt, Path(tmp))))
    peft.eval()
    L = args.prompt_len

    def both(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return spot.logits(ids, mask), peft(input_ids=ids, attention_mask=mask).logits[:, L:].float()

    alone, largest = [], 0.0
    for ids in inputs:
        ours, theirs = both(*pad([ids], backbone.tokenizer.pad_token_id))
        alone.append((ours - theirs).abs().max().item())
        largest = max(largest, ours.abs().max().item())
    cases: dict[str, dict] = {"one_at_a_time": {"per_example": alone}}
    for side in ("right", "left"):
        ids, mask = pad(inputs, backbone.tokenizer.pad_token_id, left=side == "left")
        cases[f"{side}_padded"] = {"per_example": differences(*both(ids, mask), mask)}
    lengths = [len(i) for i in inputs]
    for case in cases.values():
        case["max_abs_diff"] = max(case["per_example"])
    out = {
        "model": args.model,
        "dtype": "float32",
        "prompt_length": L,
        "input_tokens": lengths,
        "threads": args.threads,
        "torch": torch.__version__,
        "peft": __import__("peft").__version__,
        "max_abs_logit": largest,
        "float32_eps": torch.finfo(torch.float32).eps,
        "cases": cases,
        "longest": [i for i, n in enumerate(lengths) if n == max(lengths)],  # no padding on either side
    }
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
