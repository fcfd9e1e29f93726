"""Rank classification and greedy generation with a prompted model.

Rank classification scores every label's target sequence (label tokens + end token) by its summed
log-likelihood and picks the best, as T5's rank_classification does.

Decoder-only (`label_scores`): the prompt's states are computed once for all examples and all labels (prompt
once; see `spot_core.prompted`), each example's input runs once on them, and the labels run as a prefix tree
(`LabelTrie`): a prefix that several labels share ("0." in "0.2", "0.4", ...) is one position, computed once per
example. All of an example's trie positions go through the model in one call, each attending to the prompt, the
example's input and its own ancestors in the tree (a tree attention mask).
Encoder-decoder: the encoder runs once per example; the labels are decoded from its states, one row per label.

`label_scores` pads inputs on the right, so that every position, the trie's included, is the one a lone example
has: a sliding window (Gemma 3) then covers the same tokens as in one full forward per label. The method before it,
`label_scores_repeated` (each label continues a copy of the left-padded prompt + input cache), counts padding
slots inside the window: it differs from the lone forward when a window is shorter than prompt + input (tiny
Gemma 3's 8 tokens; never Gemma 3 270M's 512 at this project's lengths). It and `label_scores_naive` (one full
forward per input and label) are the references the fast path is checked and benchmarked against.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from spot_core.encoding import pad, to_device
from spot_core.prompted import PromptedLM, PromptStates, position_ids

FULL, SLIDING = "full_attention", "sliding_attention"  # the attention layer types the trie's masks are built for


def _on(device: torch.device, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """A padded batch's host tensors on `device`: to a GPU through pinned memory, as training's batches go
    (`spot_core.encoding.to_device`). The trie's few indices are copied plainly: each batch waits for its scores
    (`argmax().tolist()`) anyway."""
    return tuple(to_device({str(i): t for i, t in enumerate(tensors)}, device).values())


def _token_logprobs(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[N, S, V] logits predicting [N, S] ids -> [N] summed log-probs over mask."""
    lp = torch.log_softmax(logits.float(), -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    return (lp * mask).sum(-1)


class LabelTrie:
    """Label token sequences as a prefix tree.

    Node n is one distinct label prefix of length >= 1 that some label continues past: its last token is fed to
    the model, and its hidden state predicts the next token of every label through it. A label's first token is
    predicted from the input's last position. Nodes come parents first.
    """

    def __init__(self, labels: Sequence[Sequence[int]]):
        if not labels:
            raise ValueError("rank classification needs at least one label")
        if any(len(lab) == 0 for lab in labels):
            raise ValueError("rank classification needs every label to have at least one target token")
        self.first = [lab[0] for lab in labels]  # [K]
        self.token: list[int] = []  # [N] the token each node feeds
        self.parent: list[int] = []  # [N] -1 for depth 1
        self.depth: list[int] = []  # [N] prefix length
        self.steps: list[tuple[int, int, int]] = []  # (label, node, next token) for every label token after its first
        index: dict[tuple[int, ...], int] = {}
        for k, lab in enumerate(labels):
            for j in range(1, len(lab)):
                key = tuple(lab[:j])
                if key not in index:
                    index[key] = len(self.token)
                    self.token.append(lab[j - 1])
                    self.parent.append(index.get(key[:-1], -1))
                    self.depth.append(j)
                self.steps.append((k, index[key], lab[j]))

    def __len__(self) -> int:
        return len(self.token)

    def ancestry(self) -> torch.Tensor:
        """[N, N] bool: row n is True at n and at each of its ancestors."""
        n = len(self)
        anc = torch.eye(n, dtype=torch.bool)
        for i, p in enumerate(self.parent):
            if p >= 0:
                anc[i] |= anc[p]  # parents come first, so row p is complete
        return anc


class Forest:
    """Each row's own label trie, padded to the widest (N nodes): rows of several label sets scored in one call.

    Row b runs the nodes of `tries[of_row[b]]`, then padding nodes (token 0 at depth 1, seeing the prompt, its input
    and itself: their outputs are not read)."""

    def __init__(self, tries: Sequence[LabelTrie], of_row: Sequence[int]):
        self.tries, self.of_row = list(tries), list(of_row)
        n = max(len(t) for t in tries)
        self.width = n
        token, depth, anc = (
            torch.zeros(len(tries), n, dtype=torch.long),
            torch.ones(len(tries), n, dtype=torch.long),
            [],
        )
        for s, t in enumerate(tries):
            token[s, : len(t)], depth[s, : len(t)] = (
                torch.as_tensor(t.token, dtype=torch.long),
                torch.as_tensor(t.depth),
            )
            a = torch.eye(n, dtype=torch.bool)
            a[: len(t), : len(t)] = t.ancestry()
            anc.append(a)
        index = torch.as_tensor(self.of_row)
        self.token, self.depth, self.anc = token[index], depth[index], torch.stack(anc)[index]  # [B, N], [B, N, N]
        self.labels = max(len(t.first) for t in tries)
        first = torch.zeros(len(tries), self.labels, dtype=torch.long)
        for s, t in enumerate(tries):
            first[s, : len(t.first)] = torch.as_tensor(t.first)
        self.first = first[index]  # [B, K]: each row's labels' first tokens, padded
        steps = [(b, *step) for b, s in enumerate(self.of_row) for step in tries[s].steps]
        self.steps = torch.as_tensor(steps, dtype=torch.long).reshape(-1, 4)  # (row, label, node, next token)


def _layer_kinds(config) -> set[str]:
    return set(getattr(config, "layer_types", None) or [FULL])


def _tree_masks(model: PromptedLM, anc: torch.Tensor, full_mask: torch.Tensor, q_pos: torch.Tensor, dtype: torch.dtype):
    """Additive 4-D masks [B, 1, N, L + T + N] for the trie's positions after a right-padded batch.

    A node sees the prompt, its example's real input tokens and its own ancestors (itself included). Sliding-window
    layers also need the key within the window of the node's position (positions, not cache slots: padding sits at
    the end of each row, so these are the positions a lone unpadded example would have).

    Args:
        anc: [B, N, N] each row's trie ancestry (`LabelTrie.ancestry`, padded: `Forest`).
        full_mask: [B, P] mask over prompt + input (P = L + T), right-padded.
        q_pos: [B, N] each node's position: its row's last input position + its depth.

    Returns:
        One mask, or one per attention layer type for models that mix them (Gemma 3).
    """
    device = full_mask.device
    B, P = full_mask.shape
    allowed = torch.cat([full_mask.bool()[:, None, :].expand(B, anc.shape[1], P), anc], -1)

    def additive(ok: torch.Tensor) -> torch.Tensor:
        zero = torch.zeros((), dtype=dtype, device=device)
        return torch.where(ok, zero, torch.finfo(dtype).min)[:, None]

    config = model.model.config
    if _layer_kinds(config) == {FULL}:
        return additive(allowed)
    k_pos = torch.cat([torch.arange(P, device=device).expand(B, P), q_pos], -1)  # [B, P + N]
    in_window = k_pos[:, None, :] > q_pos[:, :, None] - config.sliding_window
    return {FULL: additive(allowed), SLIDING: additive(allowed & in_window)}


def has_sliding_window(model: PromptedLM) -> bool:
    """Whether some attention layer of the model sees only a window of recent positions (Gemma 3, Mistral)."""
    return not model.is_encoder_decoder and getattr(model.model.config, "sliding_window", None) is not None


def trie_applies(model: PromptedLM) -> bool:
    """Tree masks are prepared 4-D masks: eager and SDPA attention take them. Flash attention, layer types other
    than full and sliding-window attention, and a sliding window without per-layer types (Mistral, Qwen2: every
    layer windowed) are not handled; such models score labels one row per label."""
    config = model.model.config
    kinds = _layer_kinds(config)
    windowed_everywhere = getattr(config, "sliding_window", None) is not None and SLIDING not in kinds
    return (
        not model.is_encoder_decoder
        and config._attn_implementation in ("eager", "sdpa")
        and kinds <= {FULL, SLIDING}
        and not windowed_everywhere
    )


@torch.no_grad()
def label_scores(
    model: PromptedLM,
    inputs: Sequence[Sequence[int]],
    labels: Sequence[Sequence[int]],
    prompt: PromptStates | torch.Tensor | None = None,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """Log-likelihood of each label for each input.

    Args:
        inputs: B lists of input token ids.
        labels: K lists of target token ids (as `Codec.encode_target` gives them).
        prompt: prompt-once mode: the prompt's states, to share over several calls (computed here otherwise).
        rows: a mixed batch ([B] on the model's device): input b is prompted by prompt `rows[b]` of P prompts,
            `prompt` holding their states (prompt once) or the [P, L, H] prompts (concatenated paths).

    Returns:
        [B, K] summed log-probabilities.
    """
    return torch.stack(label_scores_per_row(model, inputs, [labels], [0] * len(inputs), prompt, rows))


@torch.no_grad()
def label_scores_per_row(
    model: PromptedLM,
    inputs: Sequence[Sequence[int]],
    label_sets: Sequence[Sequence[Sequence[int]]],
    of_row: Sequence[int],
    prompt: PromptStates | torch.Tensor | None = None,
    rows: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """`label_scores` where input b has labels of its own, `label_sets[of_row[b]]` (rows of several tasks): each
    row's trie runs on its own positions (`Forest`), so a row costs its own labels' nodes whatever the others'.
    Returns B tensors, [K_b] each."""
    if not trie_applies(model):
        return _per_set(model, inputs, label_sets, of_row, prompt, rows)
    device = model.device
    B = len(inputs)
    ids, mask = _on(device, *pad(inputs, model.backbone.tokenizer.pad_token_id))  # right padding
    out = model.hidden(ids, mask, prompt, use_cache=True, rows=rows)
    last = mask.sum(-1) - 1  # each row's last input token
    first = torch.log_softmax(model.head(out.states[torch.arange(B, device=device), last]), -1)  # [B, V]
    forest = Forest([LabelTrie(labels) for labels in label_sets], of_row)
    scores = first.gather(1, forest.first.to(device))  # [B, K], padded
    if forest.width:
        nodes, depth, anc = (t.to(device) for t in (forest.token, forest.depth, forest.anc))
        q_pos = position_ids(out.mask)[:, -1:] + depth  # [B, N]
        masks = _tree_masks(model, anc, out.mask, q_pos, out.states.dtype)
        hidden = model.extend(nodes, q_pos, out.cache, masks)  # [B, N, H]
        lp = torch.log_softmax(model.head(hidden.flatten(0, 1)), -1).view(B, forest.width, -1)
        row, label, node, token = forest.steps.to(device).unbind(1)
        scores = scores.index_put((row, label), lp[row, node, token], accumulate=True)
    return [scores[b, : len(label_sets[s])] for b, s in enumerate(of_row)]


def _per_set(
    model: PromptedLM,
    inputs: Sequence[Sequence[int]],
    label_sets: Sequence[Sequence[Sequence[int]]],
    of_row: Sequence[int],
    prompt: PromptStates | torch.Tensor | None,
    rows: torch.Tensor | None,
) -> list[torch.Tensor]:
    """`label_scores_per_row` without the trie: `label_scores_repeated` over the rows of each label set."""
    out: list[torch.Tensor | None] = [None] * len(inputs)
    for s, labels in enumerate(label_sets):
        members = [b for b, t in enumerate(of_row) if t == s]
        if not members:
            continue
        picked = None if rows is None else rows[torch.as_tensor(members, device=rows.device)]
        scores = label_scores_repeated(model, [inputs[b] for b in members], labels, prompt, picked)
        for b, row in zip(members, scores, strict=True):
            out[b] = row
    return out  # type: ignore[return-value]


@torch.no_grad()
def label_scores_repeated(
    model: PromptedLM,
    inputs: Sequence[Sequence[int]],
    labels: Sequence[Sequence[int]],
    prompt: PromptStates | torch.Tensor | None = None,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rank classification with the prompt + input computed once per example and one row per (example, label)
    continuing from a copy of it (decoder-only), or from the encoder's states (encoder-decoder). [B, K].
    `prompt`: prompt-once mode, the prompt's states shared over calls; `prompt` and `rows`: a mixed batch, as in
    `label_scores`."""
    B, K = len(inputs), len(labels)
    lab, lab_mask = pad(labels, model.backbone.tokenizer.pad_token_id)  # [K, S]
    lab, lab_mask = lab.repeat(B, 1), lab_mask.repeat(B, 1)  # [B*K, S], example-major
    device = model.device
    lab, lab_mask = _on(device, lab, lab_mask)
    if model.is_encoder_decoder:
        ids, mask = _on(device, *pad(inputs, model.backbone.tokenizer.pad_token_id))
        embeds, full_mask = model.embed(ids, mask, prompt if rows is not None else None, rows)
        enc = model.model.get_encoder()(inputs_embeds=embeds, attention_mask=full_mask).last_hidden_state
        dec_in = model.model.prepare_decoder_input_ids_from_labels(labels=lab.masked_fill(lab_mask == 0, -100))
        logits = model.model(
            encoder_outputs=(enc.repeat_interleave(K, 0),),
            attention_mask=full_mask.repeat_interleave(K, 0),
            decoder_input_ids=dec_in,
        ).logits
        return _token_logprobs(logits, lab, lab_mask).view(B, K)
    # Decoder-only: left-pad so every row's last position is its last input token.
    ids, mask = _on(device, *pad(inputs, model.backbone.tokenizer.pad_token_id, left=True))
    out = model.hidden(ids, mask, prompt, use_cache=True, rows=rows)
    first = torch.log_softmax(model.head(out.states[:, -1]), -1)  # [B, V]
    first = first.repeat_interleave(K, 0).gather(-1, lab[:, :1]).squeeze(-1)  # [B*K]
    cache = out.cache
    cache.batch_repeat_interleave(K)
    cont_mask = torch.cat([out.mask.repeat_interleave(K, 0), lab_mask], 1)
    pos = position_ids(cont_mask)[:, -lab.shape[1] :]
    hidden = model.extend(lab, pos, cache, cont_mask)  # [B*K, S, H]
    rest = torch.zeros_like(first)
    if lab.shape[1] > 1:
        where = lab_mask[:, 1:].bool()
        lp = torch.log_softmax(model.head(hidden[:, :-1][where]), -1).gather(-1, lab[:, 1:][where].unsqueeze(-1))
        rest = rest.index_put((where.nonzero()[:, 0],), lp.squeeze(-1), accumulate=True)
    return (first + rest).view(B, K)


@torch.no_grad()
def label_scores_naive(
    model: PromptedLM, inputs: Sequence[Sequence[int]], labels: Sequence[Sequence[int]]
) -> torch.Tensor:
    """Reference implementation of `label_scores`: one full forward per (input, label). [B, K]."""
    device = model.device
    scores = torch.zeros(len(inputs), len(labels))
    for b, inp in enumerate(inputs):
        for k, lab in enumerate(labels):
            ids = torch.as_tensor([list(inp)], device=device)
            lab_t = torch.as_tensor([list(lab)], device=device)
            if model.is_encoder_decoder:
                dec = model.model.prepare_decoder_input_ids_from_labels(labels=lab_t)
                logits = model.logits(ids, torch.ones_like(ids), decoder_input_ids=dec)
            else:
                full = torch.cat([ids, lab_t], 1)
                logits = model.logits(full, torch.ones_like(full))[:, ids.shape[1] - 1 : -1]
            scores[b, k] = _token_logprobs(logits, lab_t, torch.ones_like(lab_t))[0]
    return scores


@torch.no_grad()
def generate(
    model: PromptedLM,
    inputs: Sequence[Sequence[int]],
    max_new_tokens: int,
    prompt: PromptStates | torch.Tensor | None = None,
    rows: torch.Tensor | None = None,
) -> list[list[int]]:
    """Greedy decoding after prompt + input. Returns B lists of generated token ids (end token excluded).

    Prompt-once mode: every example starts from the same prompt states, then its input, then one token a step
    on the cache. Otherwise transformers' `generate` on the concatenated embeddings (the reference path).
    `prompt` and `rows`: a mixed batch, as in `label_scores`."""
    tok = model.backbone.tokenizer
    device = model.device
    ids, mask = _on(device, *pad(inputs, tok.pad_token_id, left=not model.is_encoder_decoder))
    if model.shares_prompt:
        out_rows = _greedy(model, ids, mask, max_new_tokens, prompt, rows)
    else:
        embeds, full_mask = model.embed(ids, mask, prompt if rows is not None else None, rows)
        out = model.model.generate(
            inputs_embeds=embeds,
            attention_mask=full_mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        out_rows = [row[1:] if model.is_encoder_decoder else row for row in out.tolist()]  # drop the decoder start
    # Finished rows are filled with pad after their end token: cut at the end token.
    return [row[: row.index(tok.eos_token_id)] if tok.eos_token_id in row else row for row in out_rows]


def _greedy(
    model: PromptedLM,
    ids: torch.Tensor,
    mask: torch.Tensor,
    max_new_tokens: int,
    prompt: PromptStates | None,
    rows: torch.Tensor | None = None,
) -> list[list[int]]:
    """Left-padded greedy decoding on the prompt-once cache, as transformers' greedy search does it: the next
    token is the argmax of the last position's logits; a row's later tokens are cut at its end token."""
    eos = model.backbone.tokenizer.eos_token_id
    out = model.hidden(ids, mask, prompt, use_cache=True, rows=rows)
    full_mask, cache = out.mask, out.cache
    pos = position_ids(full_mask)[:, -1:]
    nxt = model.head(out.states[:, -1]).argmax(-1)
    done = torch.zeros_like(nxt, dtype=torch.bool)
    steps = []
    for step in range(max_new_tokens):
        steps.append(nxt)
        done |= nxt == eos
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        full_mask = torch.cat([full_mask, torch.ones_like(full_mask[:, :1])], 1)
        pos = pos + 1
        nxt = model.head(model.extend(nxt[:, None], pos, cache, full_mask)[:, -1]).argmax(-1)
    return torch.stack(steps, 1).tolist() if steps else [[] for _ in range(ids.shape[0])]
