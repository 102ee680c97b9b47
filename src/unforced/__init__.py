"""unforced: measure and close the exposure-bias gap of autoregressive sequence models."""

from unforced.errors import UnforcedError

__version__ = "0.1.0"

__all__ = ["UnforcedError", "__version__"]
