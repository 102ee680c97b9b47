"""Diagnostics of exposure bias: the gap between teacher-forced and free-running figures, and what explains it."""

from unforced.diagnostics.attention import attention_maps, draw_attention
from unforced.diagnostics.divergence import hidden_divergence, jacobian_amplification
from unforced.diagnostics.gap import corpus_metric, evaluate
from unforced.diagnostics.probes import (
    BigramModel,
    NgramModel,
    mid_training_dips,
    prefix_divergence,
    zero_gradient_probe,
)
from unforced.diagnostics.recovery import corrupt_inputs, recovery_probe
from unforced.diagnostics.sweep import ratio_sweep

__all__ = ["BigramModel", "NgramModel", "attention_maps", "corpus_metric", "draw_attention", "corrupt_inputs", "evaluate", "hidden_divergence",
           "jacobian_amplification", "mid_training_dips", "prefix_divergence", "ratio_sweep", "recovery_probe",
           "zero_gradient_probe"]
