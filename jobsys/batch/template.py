"""Prompt templates: `{field}` placeholders filled from an item's fields.

Only plain identifiers are allowed as fields ({review}, {text_2}); `{{` and `}}` are literal
braces. Positional fields, attribute or index access ({x.__class__}, {x[0]}), conversions
and format specs are refused: item values are always rendered as text, and a template is
operator input that must not reach into Python objects. jobsys.template_placeholders in
SQL applies the same rule.
"""

from __future__ import annotations

import functools
import string
from collections.abc import Mapping
from typing import Any

_FORMATTER = string.Formatter()


def _is_field_name(name: str) -> bool:
    return name.isidentifier() and name.isascii()


@functools.lru_cache(maxsize=64)  # a runner renders the same template for every item
def parse(template: str) -> tuple[tuple[str, str | None], ...]:
    """(literal text, field name or None) pieces. Raises ValueError with a clear message."""
    try:
        pieces = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise ValueError(f"template has an unmatched brace ({exc}); write {{{{ and }}}} for literal braces") from None
    out: list[tuple[str, str | None]] = []
    for literal, field, spec, conversion in pieces:
        if field is None:
            out.append((literal, None))
            continue
        if not _is_field_name(field):
            shown = "{" + field + "}" if field else "{}"
            raise ValueError(f"placeholder {shown} is not a plain field name; use {{name}} with letters, "
                             "digits and underscores")
        if spec or conversion:
            raise ValueError(f"placeholder {{{field}}} has a format spec or conversion; use a plain {{{field}}}")
        out.append((literal, field))
    return tuple(out)


def placeholders(template: str) -> list[str]:
    """The distinct field names a template uses, in first-use order."""
    seen: dict[str, None] = {}
    for _, field in parse(template):
        if field is not None:
            seen.setdefault(field)
    return list(seen)


def value_text(value: Any) -> str:
    """How an item value appears in a prompt: text as is, JSON scalars as JSON writes them."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render(template: str, item: Mapping[str, Any]) -> str:
    """The prompt for one item. A missing field raises KeyError (validation prevents it)."""
    return "".join(literal + ("" if field is None else value_text(item[field])) for literal, field in parse(template))
