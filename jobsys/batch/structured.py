"""Structured output: every answer of a batch with a response_schema is parsed as JSON and
validated against it (jsonschema). The model is told what was wrong once (the engine asks
again with `correction_prompt`); a second invalid answer fails the item with the reason."""

from __future__ import annotations

import json
from typing import Any

import jsonschema

ERROR_MAX_CHARS = 300


class OutputChecker:
    def __init__(self, schema: dict[str, Any]) -> None:
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        self._validator = cls(schema)

    def problem(self, text: str) -> str | None:
        """Why `text` is not a valid answer, or None when it is."""
        try:
            value = json.loads(text)
        except ValueError as exc:
            return f"not JSON ({exc})"[:ERROR_MAX_CHARS]
        try:
            error = jsonschema.exceptions.best_match(self._validator.iter_errors(value))
        except Exception as exc:  # noqa: BLE001 - e.g. a $ref to nowhere: the item fails with why, the run goes on
            return f"cannot be checked against response_schema ({type(exc).__name__}: {exc})"[:ERROR_MAX_CHARS]
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return f"at {where}: {error.message}"[:ERROR_MAX_CHARS]


def correction_prompt(prompt: str, problem: str) -> str:
    return (f"{prompt}\n\nYour previous answer did not match the required JSON Schema: {problem}\n"
            "Answer again with only a JSON value that matches the schema.")


def parse_object(output: str | None) -> dict[str, Any] | None:
    """The top-level object of a structured output (for export columns); None otherwise."""
    if not output:
        return None
    try:
        value = json.loads(output)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
