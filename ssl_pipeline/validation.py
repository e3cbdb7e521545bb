"""One-line checks of config values, for the sections of ``config.py`` to validate themselves: each raises a
ConfigError ``<dotted path>=<value> must be <valid range>``. Cheap to import (no torch, no numpy)."""

from __future__ import annotations

import functools
import math
import re
from typing import Callable, Literal, get_args, get_origin, get_type_hints

from ssl_pipeline.errors import ConfigError

BATCH_WHY = "InfoNCE needs another pair of the batch as its negative"


def require(condition: bool, path: str, value: object, valid: str) -> None:
    """Unless ``condition``, raise the one-line ConfigError ``<path>=<value> must be <valid>``."""
    if not condition:
        shown = repr(value) if isinstance(value, str) else value
        raise ConfigError(f"{path}={shown} must be {valid}")


def require_at_least(path: str, value: float | None, low: float, *, optional: bool = False, why: str = "") -> None:
    """value ≥ low (None allowed when ``optional``); ``why`` is added to the message in parentheses."""
    if value is None and optional:
        return
    valid = f"at least {low:g}" + (" or null" if optional else "") + (f" ({why})" if why else "")
    require(value is not None and value >= low, path, value, valid)


def require_positive(path: str, value: float | None, *, optional: bool = False) -> None:
    """value finite and > 0 (None allowed when ``optional``)."""
    if value is None and optional:
        return
    valid = ("> 0" if value is None or math.isfinite(value) else "finite and > 0") + (" or null" if optional else "")
    require(value is not None and math.isfinite(value) and value > 0, path, value, valid)


def require_fraction(path: str, value: float | None, *, closed: bool = False, optional: bool = False) -> None:
    """value in (0, 1), or in [0, 1] when ``closed`` (None allowed when ``optional``)."""
    if value is None and optional:
        return
    inside = value is not None and (0.0 <= value <= 1.0 if closed else 0.0 < value < 1.0)
    require(inside, path, value, ("in [0, 1]" if closed else "in (0, 1)") + (" or null" if optional else ""))


def require_delta(path: str, value: float) -> None:
    """δ in [0, 1]."""
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ConfigError(f"{path}={value} is outside [0, 1]; δ is the probability that a positive shares the "
                          "anchor's class")


def axis_items(path: str, value: object) -> list[tuple[str, object]]:
    """A sweep axis (a scalar or a list of values) as (dotted path, value) pairs: ``[(path, value)]`` for a scalar,
    ``[(f"{path}[i]", value_i), …]`` for a list."""
    if isinstance(value, (list, tuple)):
        return [(f"{path}[{i}]", item) for i, item in enumerate(value)]
    return [(path, value)]


def require_axis(path: str, value: object, check: Callable[[str, object], None], example: str) -> None:
    """A sweep axis: a scalar, or a non-empty list without repeated values; ``check(path, value)`` is applied to
    every value with its indexed path (``heads.r[1]``); ``example`` is a valid list for the message."""
    if isinstance(value, (list, tuple)) and not value:
        raise ConfigError(f"{path} is an empty list; give a value or a non-empty list, e.g. --{path} {example}")
    items = axis_items(path, value)
    for i, (where, item) in enumerate(items):
        require(isinstance(item, (int, float)) and not isinstance(item, bool), where, item, "a number")
        check(where, item)
        first = next(j for j, (_, other) in enumerate(items) if other == item)
        if first != i:
            raise ConfigError(f"{where}={item} repeats {items[first][0]}; give each value of a sweep axis once")


def require_device(path: str, value: str, names: tuple[str, ...]) -> None:
    """value is one of ``names``, ``cuda`` or ``cuda:N``."""
    valid = value in names or value == "cuda" or re.fullmatch(r"cuda:\d+", value) is not None
    require(valid, path, value, f"one of {', '.join(names)}, cuda, cuda:N")


@functools.cache
def _literal_fields(cls: type) -> dict[str, tuple[bool, tuple]]:
    """Per field of ``cls`` typed by a Literal (or a list of one): whether it is a list, and the valid values."""
    choices = {}
    for name, hint in get_type_hints(cls).items():
        is_list = get_origin(hint) is list
        inner = get_args(hint)[0] if is_list else hint
        if get_origin(inner) is Literal:
            choices[name] = (is_list, get_args(inner))
    return choices


def check_choices(section: object, path: str) -> None:
    """Every Literal-typed field of the dataclass ``section`` holds one of its values (jsonargparse checks them
    when parsing; this covers configs built in code)."""
    for name, (is_list, valid) in _literal_fields(type(section)).items():
        value = getattr(section, name)
        items = [(f"{path}.{name}[{i}]", v) for i, v in enumerate(value)] if is_list else [(f"{path}.{name}", value)]
        for where, item in items:
            require(item in valid, where, item, f"one of {', '.join(valid)}")
