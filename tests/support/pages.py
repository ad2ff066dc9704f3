"""Reading the dashboard through NiceGUI's simulated `user`: elements by marker and the
texts they show."""

from __future__ import annotations

from typing import Any

from nicegui.testing import User


def element(user: User, marker: str) -> Any:
    """The one element with this marker (fails when there are none or several)."""
    elements = user.find(marker=marker).elements
    assert len(elements) == 1, f"{len(elements)} elements marked {marker}"
    return next(iter(elements))


def text_of(user: User, marker: str) -> str:
    """The text of the one element with this marker."""
    return str(element(user, marker).text)


def texts(user: User, marker: str) -> list[str]:
    """The texts shown inside the element with this marker (empty when it is not on the page)."""
    found: set[Any] = user._gather_elements(None, None, marker, None)  # no retries: for wait_until predicates
    return [
        str(e.text)
        for root in found
        for e in root.descendants(include_self=True)
        if isinstance(getattr(e, "text", None), str) and e.visible
    ]
