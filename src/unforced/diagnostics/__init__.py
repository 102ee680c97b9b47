"""Diagnostics of exposure bias: the gap between teacher-forced and free-running figures, and what explains it."""

from unforced.diagnostics.gap import corpus_metric, evaluate

__all__ = ["corpus_metric", "evaluate"]
