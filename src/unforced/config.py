"""Validation at the boundary where user input enters: configs become library dataclasses, errors name the field."""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any, TypeVar

import pydantic

from unforced.errors import UnforcedError

T = TypeVar("T")


@functools.cache
def _adapter(config_class: type) -> pydantic.TypeAdapter:
    return pydantic.TypeAdapter(config_class)  # building one costs ~6 ms; each config class needs one


def validate_config(config_class: type[T], options: dict[str, Any], prefix: str = "") -> T:
    """Build the dataclass `config_class` from `options`, checking types with pydantic (strict about extras)."""
    if not isinstance(options, dict):
        raise UnforcedError(f"{prefix or config_class.__name__}: expected a mapping of options, got "
                            f"{type(options).__name__}")
    known = {f for f in getattr(config_class, "__dataclass_fields__", {})}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UnforcedError(f"{prefix + ': ' if prefix else ''}unknown option(s) {', '.join(unknown)}; "
                            f"known: {', '.join(sorted(known))}")
    try:
        return _adapter(config_class).validate_python(options)
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        name = f"{prefix}.{where}" if prefix else where
        raise UnforcedError(f"{name}: {first['msg']} (got {first.get('input')!r})") from None
    except UnforcedError:
        raise
    except (TypeError, ValueError) as error:
        raise UnforcedError(f"{prefix or config_class.__name__}: {error}") from None


def finite_number(name: str, value: Any) -> float:
    """`value` as a float, or an UnforcedError naming `name` if it is not a finite real number (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise UnforcedError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def integer_at_least(name: str, value: Any, minimum: int) -> int:
    """`value` as an int, or an UnforcedError naming `name` if it is not an integer >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise UnforcedError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
