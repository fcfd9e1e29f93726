"""Packed training: several prompt-tuning runs on one frozen backbone, in one forward pass per step.

Every cell of a study shares its frozen backbone; only the prompts differ. A `Pack` trains K runs (`Trainer`s whose
models share one backbone) together: each step takes one batch from every live run (its own data stream, seed and
batch size), runs them as one batch in which each example carries the index of its run's prompt (as ATTEMPT and
MPT do with task ids), and backpropagates the sum of the runs' own mean losses. Nothing in the backbone mixes the
examples of a batch, so each prompt gets exactly its own gradient (up to float rounding: the examples are padded
together).

Everything else stays each run's own, in its `Trainer`: optimizer state, evaluation schedule, task embedding, best
checkpoint, resume file and result. A run whose loss is not finite stops alone (its error is its result); runs of
fewer steps leave the pack when they finish. A pack that is killed resumes each run from its own checkpoint.

Prompts of one length run as one group: in prompt-once mode their states come from one forward pass over the P
prompts, then every example runs on its own prompt's keys/values. Prompts of different lengths (rare: a study has
one length) run as one group per length, one after the other in the same step.

Dropout (T5): the pack's examples draw their dropout masks from one random stream, so a packed run equals a lone
one in distribution, not bit for bit, and a resumed pack draws other masks than an uninterrupted one. Models
without dropout (SmolLM2, Gemma 3, Llama) have no randomness in a step: packed and lone runs agree to float
rounding, and a resumed pack equals an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from spot_core.encoding import Codec, Encoded, collate, length, to_device
from spot_core.prompted import PromptedLM
from spot_core.trainer import Trainer

ResultHook = Callable[[int, "dict[str, Any] | Exception"], None]
# The per-example loss of a forward pass: (collated batch, the prompts' states or leaf, [B] rows) -> [B], each
# example's loss summed over its target tokens (`PromptedLM.loss(..., reduction="example")`, the default).
RowLoss = Callable[[dict[str, torch.Tensor], Any, torch.Tensor], torch.Tensor]


def packed_gradients(
    models: Sequence[PromptedLM], batches: Sequence[Sequence[Encoded]], codec: Codec, chunk: int
) -> list[torch.Tensor]:
    """Backpropagates the sum of each run's mean target-token loss over its batch; returns those means (detached).

    `models` share one backbone, each with its own prompt; `batches[i]` is run i's batch. The examples of the runs
    whose prompts have one length are sorted by length and cut into forward passes of at most `chunk` examples,
    each example's loss divided by its own run's target-token count, so run i's prompt gets the gradient of run
    i's mean loss (`accumulate_gradients` of it alone, up to float rounding)."""
    device = models[0].device
    sums = torch.zeros(len(models), device=device)
    counts = torch.tensor([sum(len(e.target_ids) for e in b) for b in batches], dtype=torch.float32, device=device)
    groups: dict[int, list[int]] = {}
    for i, model in enumerate(models):
        groups.setdefault(model.prompt_length, []).append(i)
    for runs in groups.values():
        engine = models[runs[0]]  # any model of the group: the backbone is shared and the prompts are passed
        prompts = torch.stack([models[i].prompt() for i in runs])  # [P, L, H], in each prompt's graph
        items = [(row, e) for row, i in enumerate(runs) for e in batches[i]]
        run_of = torch.tensor(runs, device=device)
        sums.index_add_(0, run_of, row_gradients(engine, prompts, items, 1.0 / counts[run_of], codec, chunk))
    return list(sums / counts)


def row_gradients(
    engine: PromptedLM,
    prompts: torch.Tensor,
    items: Sequence[tuple[int, Encoded]],
    weight: torch.Tensor,
    codec: Codec,
    chunk: int,
    loss: RowLoss | None = None,
) -> torch.Tensor:
    """Backpropagates sum_i weight[row_i] * loss_i over `items` (row_i, example_i), example i prompted by
    prompts[row_i] ([P, L, H], in their modules' graph); returns each row's summed loss [P] (detached).

    The examples run sorted by length (the sum is the same in any order, and passes of like lengths pad less), in
    passes of at most `chunk`; in prompt-once mode on the P prompts' states, run once. The passes' gradients gather
    on the states (or a leaf), then go through the prompt modules once. What a pack does with its runs' prompts,
    and MPT's multitask run with its tasks' prompts. `loss`: each pass's per-example losses, where not the
    target tokens' cross-entropy (MPT's distillation adds its terms)."""
    device = engine.device
    sums = torch.zeros(prompts.shape[0], device=device)
    if engine.shares_prompt:
        states, leaf = engine.prompt_states(leaves=True, prompts=prompts), None
    else:
        states, leaf = None, prompts.detach().requires_grad_(prompts.requires_grad)
    items = sorted(items, key=lambda item: length(item[1]))
    for start in range(0, len(items), chunk):
        part = items[start : start + chunk]
        batch = to_device(collate([e for _, e in part], codec), device)
        rows = torch.tensor([row for row, _ in part], device=device)
        prompt = states if states is not None else leaf
        if loss is None:
            losses = engine.loss(batch, reduction="example", prompt=prompt, rows=rows)
        else:
            losses = loss(batch, prompt, rows)
        if losses.requires_grad:
            (losses * weight[rows]).sum().backward()
        sums.index_add_(0, rows, losses.detach())
    if states is not None:
        states.backward()
    elif leaf is not None and leaf.grad is not None:
        prompts.backward(leaf.grad)
    return sums


class Pack:
    """Trains `trainers` (their models share one backbone) together; see the module.

    Args:
        trainers: one per run, as each would train alone.
        chunk: examples per forward pass. None: on a GPU, the sum of each run's micro-batch size (or batch size):
            the memory each run would use alone, all at once, in one pass; on a CPU, which runs a pass no faster for
            being larger, the largest of them: the memory of one run (docs/benchmarks.md, "Packed training"). A
            pass that runs out of GPU memory is taken again in halves, and the pack keeps the smaller size.
        on_result: called with a run's index and its result (or error) as soon as it leaves the pack.
    """

    def __init__(self, trainers: Sequence[Trainer], chunk: int | None = None, on_result: ResultHook | None = None):
        if not trainers:
            raise ValueError("a pack needs at least one run")
        backbones = {id(t.model.backbone.model) for t in trainers}
        if len(backbones) != 1:
            raise ValueError("the runs of a pack must share one backbone (load it once, give it to every model)")
        if any(t.model.prompt.per_example for t in trainers):
            raise ValueError("a per-example prompt (ATTEMPT's) trains alone: a pack runs one prompt per run")
        self.trainers = list(trainers)
        sizes = [t.config.micro_batch_size or t.config.batch_size for t in trainers]
        on_gpu = self.trainers[0].model.device.type == "cuda"
        self.chunk = chunk or (sum(sizes) if on_gpu else max(sizes))
        self.on_result = on_result or (lambda index, result: None)

    def fit(self) -> list[dict[str, Any] | Exception]:
        """Trains (or resumes) every run; returns each run's result (its final metrics), or the error that
        stopped it. A finished run returns its saved result and does not train again."""
        results: list[dict[str, Any] | Exception | None] = [None] * len(self.trainers)

        def settle(i: int, result: dict[str, Any] | Exception) -> None:
            results[i] = result
            self.on_result(i, result)

        states = {}
        for i, t in enumerate(self.trainers):
            if t.run.finished():
                settle(i, t.run.result())
                continue
            try:
                states[i] = t.start()
            except Exception as error:  # noqa: BLE001 - the run's own failure (its data, its prompt), not the pack's
                settle(i, error)
        codec = self.trainers[0].data.codec
        for i in [i for i, state in states.items() if self.trainers[i].done(state)]:  # resumed at its last step
            settle(i, self.trainers[i].finish(states.pop(i)))
        while states:
            live = list(states)
            trainers = [self.trainers[i] for i in live]
            batches = [t.batch(states[i]) for i, t in zip(live, trainers, strict=True)]
            losses = self._gradients(trainers, batches, codec)
            checkpointed = set()
            for i, t, loss in zip(live, trainers, losses, strict=True):
                try:
                    if t.step(states[i], loss):
                        checkpointed.add(i)
                except Exception as error:  # noqa: BLE001 - a NaN (or its evaluation failing) stops this run only
                    t.optimizer.zero_grad(set_to_none=True)
                    del states[i]
                    settle(i, error)
            if checkpointed:  # all at the same step: a resumed pack is the same pack, step for step
                for i in states.keys() - checkpointed:
                    self.trainers[i].checkpoint(states[i])
            for i in [i for i, state in states.items() if self.trainers[i].done(state)]:
                settle(i, self.trainers[i].finish(states.pop(i)))  # it leaves the pack
        return results  # type: ignore[return-value]

    def _gradients(self, trainers: list[Trainer], batches: list[list[Encoded]], codec: Codec) -> list[torch.Tensor]:
        """`packed_gradients` of the step; a pass that runs out of GPU memory is taken again in passes of half as
        many examples (the step's gradients so far dropped), and the pack keeps the smaller passes."""
        while True:
            try:
                return packed_gradients([t.model for t in trainers], batches, codec, self.chunk)
            except torch.OutOfMemoryError:
                if self.chunk == 1:
                    raise
            for t in trainers:  # after the handler: its traceback held the failed pass's tensors
                t.optimizer.zero_grad(set_to_none=True)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self.chunk = (self.chunk + 1) // 2
