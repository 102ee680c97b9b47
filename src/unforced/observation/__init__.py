"""Data shaped by how it was observed, outside sequence models: position bias in click logs and survivor bias in
specimen collections. The correction is the one exposure bias asks for: weight each observation by the inverse of
its chance of being observed (docs/observation.md).

- `clicklog`: the click-log file (`query, item, rank, click[, propensity]`), read with every bad row named.
- `position_bias`: a position-based click simulator, relevance and policy-value estimators (naive, IPS, SNIPS,
  clipped IPS, doubly robust), propensities by result randomisation and by regression EM, unbiased learning to rank.
- `survivorship`: a specimen-collection simulator and the naive, inverse-exposure-weighted and Kaplan-Meier life
  tables.
- `report`: an HTML page for each, estimates against the truth with bands.

Parquet needs pyarrow and Kaplan-Meier needs lifelines: the `observation` extra (`pip install unforced[observation]`).
"""

EXTRA_HINT = "pip install 'unforced[observation]'"


def require(module: str):
    """Import an optional dependency of this part, or fail with a user error naming the extra that brings it."""
    import importlib

    from unforced.errors import UnforcedError

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UnforcedError(f"{module} is needed here and is not installed: {EXTRA_HINT}") from None


__all__ = ["EXTRA_HINT", "require"]
