"""Validation errors in words: what a person reads in the lobby or a client log, never pydantic's text.

:func:`describe` turns one pydantic error (``ValidationError.errors()[0]``) into
``"<field>: <what is wrong>"`` using the field's wire name (camelCase) and the rule it broke.
"""

from __future__ import annotations

from typing import Any

from .common import ID_PATTERN

#: the rule for room ids and every other id on the wire, in words (the lobby shows the same text)
ID_RULE = "use 1-64 letters, digits, '-' or '_' (no spaces or dots)"


def where(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc) or "payload"


def _text(err: dict) -> str:
    kind = str(err.get("type", ""))
    ctx = err.get("ctx") or {}
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a known field"
    if kind == "string_pattern_mismatch":
        return ID_RULE if ctx.get("pattern") == ID_PATTERN else "has characters that are not allowed"
    if kind == "string_too_short":
        return "must not be empty" if ctx.get("min_length", 1) <= 1 else f"needs at least {ctx['min_length']} characters"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind in ("too_long", "too_short"):
        return f"must have at most {ctx.get('max_length')} items" if kind == "too_long" else \
            f"needs at least {ctx.get('min_length')} items"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    if kind in ("greater_than_equal", "greater_than"):
        return f"must be at least {ctx.get('ge', ctx.get('gt'))}"
    if kind in ("less_than_equal", "less_than"):
        return f"must be at most {ctx.get('le', ctx.get('lt'))}"
    if kind == "value_error":  # our own validators' messages
        return str(ctx.get("error") or err.get("msg", "")).removeprefix("Value error, ") or "is not valid"
    for suffix, what in (("string_type", "text"), ("int_type", "a whole number"), ("bool_type", "true or false"),
                         ("float_type", "a number"), ("list_type", "a list"), ("dict_type", "an object"),
                         ("model_type", "an object"), ("model_attributes_type", "an object")):
        if kind == suffix:
            return f"must be {what}"
    return "is not valid"


def describe(err: dict) -> str:
    """``"roomId: use 1-64 letters, ..."`` for one pydantic error dict."""
    return f"{where(err.get('loc', ()))}: {_text(err)}"
