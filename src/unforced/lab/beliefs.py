"""What a model believes at each step of its own decode: the lab's heat map. One validation example is decoded
greedily (the model fed its own tokens, as `diagnostics.evaluate` scores free running) for the gold's width, and
each position keeps the most probable next tokens with their probabilities and the gold token's probability.
The recovery view edits one token of the gold prefix and lets the model continue on its own from there."""

from __future__ import annotations

import torch

from unforced.errors import UnforcedError
from unforced.rollout import Greedy, Prefix, rollout
from unforced.vocab import BOS, EOS, PAD, UNK

TOP_TOKENS = 8  # tokens kept per position: enough to see where the mass is, small enough for every event


def token_label(tokenizer, token: int) -> str:
    """A readable name of one target token id (special ids by name)."""
    special = {PAD: "<pad>", BOS: "<bos>", EOS: "<eos>"}
    if token in special:
        return special[token]
    return tokenizer.decode([token]) or f"#{token}"


@torch.no_grad()
def free_running_beliefs(model, task, example, limits: dict, top: int = TOP_TOKENS) -> dict:
    """{"source", "gold": [word], "chosen": [word], "top": [[[word, p], ...] per position], "gold_probability":
    [p per position]} for `example` decoded greedily over its gold's width (<eos> included)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    batch = task.collate([example], **limits).to(device)
    memory = model.encode(batch.source, batch.source_mask)
    width = int(batch.gold_mask[0].sum())
    free = rollout(model, memory, Greedy(), max_len=width, batch_size=1, stop_at_eos=False, keep_hidden=False)
    probabilities = free.logits[0].float().softmax(-1)  # (time, vocab)
    model.train(was_training)
    gold = batch.gold[0, :width].tolist()
    tokenizer = task.target_tokenizer
    values, indices = probabilities.topk(min(top, probabilities.shape[-1]), dim=-1)
    return {"source": example[0],
            "gold": [token_label(tokenizer, token) for token in gold],
            "chosen": [token_label(tokenizer, token) for token in free.tokens[0, :width].tolist()],
            "top": [[[token_label(tokenizer, token), round(float(p), 4)] for token, p in zip(row_ids, row_p,
                                                                                            strict=True)]
                    for row_ids, row_p in zip(indices.tolist(), values.tolist(), strict=True)],
            "gold_probability": [round(float(probabilities[t, token]), 4) for t, token in enumerate(gold)]}




@torch.no_grad()
def recovery_view(model, task, example, limits: dict, position: int, token: str) -> dict:
    """The recovery view: the gold prefix of `example` up to `position` (1-based) with its last token replaced by
    `token`, then the model's own greedy continuation (a Prefix rollout). `steps_to_recover`: how many of its own
    tokens the model emits before it is back on the gold tokens for good (0: at once; None: never)."""
    tokenizer = task.target_tokenizer
    ids = tokenizer.encode(token)
    if len(ids) != 1 or ids[0] == UNK:
        raise UnforcedError(f"token: {token!r} is not one word of the task's target vocabulary")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    batch = task.collate([example], **limits).to(device)
    width = int(batch.gold_mask[0].sum())
    if not 1 <= position < width:
        raise UnforcedError(f"position: must be in [1, {width - 1}] for this example, got {position}")
    edited = batch.gold.clone()
    edited[0, position - 1] = ids[0]
    memory = model.encode(batch.source, batch.source_mask)
    run = rollout(model, memory, Prefix(torch.tensor([position]), then=Greedy()), gold=edited, max_len=width,
                  stop_at_eos=False, keep_hidden=False, keep_logits=False)
    model.train(was_training)
    gold = batch.gold[0, :width].tolist()
    produced = run.tokens[0, :width].tolist()
    matches = [produced[t] == gold[t] for t in range(position, width)]
    back = next((j for j in range(len(matches)) if all(matches[j:])), None)
    return {"source": example[0], "position": position, "token": token,
            "gold": [token_label(tokenizer, t) for t in gold],
            "prefix": [token_label(tokenizer, t) for t in produced[:position]],
            "continuation": [token_label(tokenizer, t) for t in produced[position:]],
            "matches": matches, "steps_to_recover": back}


__all__ = ["TOP_TOKENS", "free_running_beliefs", "recovery_view", "token_label"]
