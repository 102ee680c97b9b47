"""Attention maps of one source, teacher-forced against free-running, and where the two part.

For the GRU/LSTM models (`RNNSeq2Seq`, Luong attention without input feeding) the decoder RNN reads only the fed
tokens, so one `forced` pass over any fed sequence equals stepping it (the model contract, held by a test). The
free-running map is therefore one greedy rollout, to learn what the model feeds itself, then one forced pass on
those inputs, whose `.attention` is what stepping would attend.

Transformers return None: their cross-attention is one map per head and layer, which is not drawn yet.
"""

from __future__ import annotations

from pathlib import Path

import torch

from unforced.errors import UnforcedError
from unforced.rollout import Greedy, rollout
from unforced.tasks.base import Task
from unforced.vocab import SPECIALS


def token_strings(tokenizer, ids: list[int]) -> list[str]:
    """One display string per id (specials by name), whatever the tokenizer kind."""
    out = []
    for i in ids:
        i = int(i)
        if i < len(SPECIALS):
            out.append(SPECIALS[i])
        elif hasattr(tokenizer, "itos"):
            out.append(tokenizer.itos[i] if i < len(tokenizer.itos) else "<unk>")
        elif hasattr(tokenizer, "_tok"):
            out.append(tokenizer._tok.id_to_token(i) or "<unk>")
        else:
            out.append(tokenizer.decode([i]))
    return out


def _first(flags: torch.Tensor) -> int | None:
    hits = flags.nonzero()
    return int(hits[0, 0]) if len(hits) else None


@torch.no_grad()
def attention_maps(model, task: Task, split: str = "test", index: int = 0, limits: dict | None = None) -> dict | None:
    """Teacher-forced and free-running attention over the source of pair `index` of `split`.

    Returns None for models without one attention map per step (Transformers). Otherwise a dict with
        source_tokens, reference, source                              the pair
        teacher_forced, free_running                                  maps, lists of rows (target step) of
                                                                      weights over the real source tokens
        teacher_forced_tokens, free_running_tokens                    what each step predicts (gold / own argmax)
        teacher_forced_inputs, free_running_inputs                    what each step was fed
        parting_position                                              the first step where the fed tokens or
                                                                      the rows' argmax differ (None: never)
        total_variation                                               per step, 0.5 * sum |row_TF - row_FR|
    Both maps have one row per gold step (the gold length, <eos> included).
    """
    if not hasattr(model, "_attend"):
        return None
    pairs = task.split(split)
    if not 0 <= index < len(pairs):
        raise UnforcedError(f"index {index} is outside split {split!r} ({len(pairs)} pairs)")
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        batch = task.collate([pairs[index]], **(limits or {})).to(device)
        memory = model.encode(batch.source, batch.source_mask)
        forced = model.forced(memory, batch.inputs)
        if forced.attention is None:
            return None
        free = rollout(model, memory, Greedy(), max_len=batch.gold.shape[1], batch_size=1, stop_at_eos=False,
                       keep_hidden=False)
        free_attention = model.forced(memory, free.inputs).attention  # (1, time, source), equal to stepping
    finally:
        model.train(was_training)
    text = getattr(task.source_codec, "kind", "text") == "text" and task.source_tokenizer is not None
    if text:
        real = int(batch.source_mask[0].sum().clamp(min=1))
    else:  # audio or image: attention runs over the encoder's states (subsampled frames, image cells)
        states_mask = getattr(memory, "mask", None)
        width = forced.attention.shape[-1]
        real = (int(states_mask[0].sum().clamp(min=1)) if states_mask is not None
                and states_mask.shape[-1] == width else width)
    teacher_forced = forced.attention[0, :, :real].float().cpu()  # (time, source)
    free_running = free_attention[0, :, :real].float().cpu()
    fed_differ = (batch.inputs[0] != free.inputs[0]).cpu()
    argmax_differ = teacher_forced.argmax(-1) != free_running.argmax(-1)
    candidates = [p for p in (_first(fed_differ), _first(argmax_differ)) if p is not None]
    target = task.target_tokenizer
    return {
        "split": split,
        "index": index,
        "source": pairs[index][0],
        "reference": pairs[index][1],
        "source_tokens": (token_strings(task.source_tokenizer, batch.source[0, :real].tolist()) if text else
                          [f"{getattr(task.source_codec, 'kind', 'source')}[{i}]" for i in range(real)]),
        "teacher_forced_tokens": token_strings(target, batch.gold[0].tolist()),
        "free_running_tokens": token_strings(target, free.tokens[0].tolist()),
        "teacher_forced_inputs": token_strings(target, batch.inputs[0].tolist()),
        "free_running_inputs": token_strings(target, free.inputs[0].tolist()),
        "teacher_forced": teacher_forced.tolist(),
        "free_running": free_running.tolist(),
        "parting_position": min(candidates) if candidates else None,
        "total_variation": (0.5 * (teacher_forced - free_running).abs().sum(-1)).tolist(),
    }


def draw_attention(maps: dict, path) -> Path:
    """Two heatmaps side by side, teacher-forced and free-running (rows: target steps labelled with what each
    predicts; columns: source tokens), with a line where the two part."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    source = maps["source_tokens"]
    rows = len(maps["teacher_forced"])
    figure = Figure(figsize=(4 + 0.45 * 2 * len(source), 2 + 0.3 * rows))
    FigureCanvasAgg(figure)
    parting = maps.get("parting_position")
    image = None
    for column, (key, title) in enumerate((("teacher_forced", "teacher-forced"), ("free_running", "free-running"))):
        axes = figure.add_subplot(1, 2, column + 1)
        image = axes.imshow(maps[key], aspect="auto", vmin=0.0, vmax=1.0, cmap="viridis", interpolation="nearest")
        axes.set_xticks(range(len(source)), source, rotation=90, fontsize=7)
        axes.set_yticks(range(rows), maps[f"{key}_tokens"][:rows], fontsize=7)
        axes.set(xlabel="source token", ylabel="target step (predicted token)" if column == 0 else "", title=title)
        if parting is not None:
            axes.axhline(parting - 0.5, color="red", linewidth=1.5)
    if image is not None:
        figure.colorbar(image, ax=figure.axes, fraction=0.03, label="attention weight")
    if parting is not None:
        figure.suptitle(f"the two decodings part at target step {parting}", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    figure.savefig(path.with_suffix(".svg"), format="svg", bbox_inches="tight")
    return path


__all__ = ["attention_maps", "draw_attention", "token_strings"]
