"""Studies: small experiments that each answer one question with numbers, a figure and a short report page.

Each is `run_study(out_dir, quick=False, seed=0) -> dict`, writing `out_dir/results.json`,
`out_dir/figures/*.png` and `out_dir/report.html`.
"""

from __future__ import annotations

from unforced.studies.tbptt_myopia import run_study as run_tbptt_myopia
from unforced.studies.tokenization import run_study as run_tokenization

STUDIES = {"tbptt-myopia": run_tbptt_myopia, "tokenization": run_tokenization}

__all__ = ["STUDIES", "run_tbptt_myopia", "run_tokenization"]
