"""The input check every reward shares: one list of references per hypothesis."""

from __future__ import annotations

from collections.abc import Sequence

from unforced.errors import UnforcedError


def check_batch(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    if len(hypotheses) != len(references):
        raise UnforcedError(
            f"{len(hypotheses)} hypotheses but {len(references)} reference lists: "
            "give one list of references per hypothesis"
        )
    for i, (hypothesis, refs) in enumerate(zip(hypotheses, references, strict=True)):
        if not isinstance(hypothesis, str):
            raise UnforcedError(f"hypothesis {i} is a {type(hypothesis).__name__}, not a string")
        if isinstance(refs, str):
            raise UnforcedError(
                f"references[{i}] is a string: each hypothesis takes a list of reference strings"
            )
        if len(refs) == 0:
            raise UnforcedError(f"hypothesis {i} has no reference")
