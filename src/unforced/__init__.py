"""unforced: measure and close the exposure-bias gap of autoregressive sequence models.

`unforced.measure(model, data, tokenizer=...)` measures a model the user already has (unforced.measurement)."""

from unforced.errors import UnforcedError

__version__ = "0.1.0"


def measure(model, data, tokenizer=None, **options):
    """Every measure of the gap report on the user's own model: see `unforced.measurement.measure`."""
    from unforced.measurement import measure as measure_model

    return measure_model(model, data, tokenizer, **options)


__all__ = ["UnforcedError", "__version__", "measure"]
