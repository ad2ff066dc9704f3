"""Items of a new batch from what an operator has at hand: lines pasted into the dialog, or
an uploaded CSV or JSONL file. Produces the list of field objects BatchCreate validates.

Pasted: one item per line. A line that is a JSON object is taken as is; any other line
fills the template's only placeholder (or `text`, as the CLI does for a bare string), so
"one review per line" works with a one-field template. Blank lines are skipped.
Files: CSV with a header row (columns are fields), or JSON Lines (an object or a string per
line). Errors carry an i18n key and values, so the dialog shows them in the page language.
"""

from __future__ import annotations

import csv
import io
import json
import pathlib
from typing import Any

from jobsys.batch.models import ITEMS_MAX

DEFAULT_FIELD = "text"
CSV_SUFFIXES = frozenset({".csv"})
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson", ".json"})
FILE_ACCEPT = ",".join(sorted(CSV_SUFFIXES | JSONL_SUFFIXES))

Item = dict[str, Any]


class ItemsError(ValueError):
    """Why the items cannot be read; `key` and `values` name the translated message."""

    def __init__(self, key: str, **values: Any) -> None:
        super().__init__(key)
        self.key = key
        self.values = values


def plain_field(placeholders: list[str]) -> str:
    """The field a plain pasted line fills."""
    return placeholders[0] if len(placeholders) == 1 else DEFAULT_FIELD


def _json_object(line: str, number: int) -> Item:
    try:
        value = json.loads(line)
    except ValueError:
        raise ItemsError("items_bad_json", line=number) from None
    if not isinstance(value, dict):
        raise ItemsError("items_bad_json", line=number)
    return value


def from_pasted(text: str, placeholders: list[str]) -> list[Item]:
    """One item per non-blank line; stops after ITEMS_MAX + 1 (the limit check needs no more)."""
    field = plain_field(placeholders)
    items: list[Item] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        items.append(_json_object(line, number) if line.startswith("{") else {field: line})
        if len(items) > ITEMS_MAX:
            break
    return items


def _file_item(value: Any, number: int) -> Item:
    if isinstance(value, str):
        return {DEFAULT_FIELD: value}
    if not isinstance(value, dict):
        raise ItemsError("items_bad_json", line=number)
    return value


def _from_jsonl(text: str) -> list[Item]:
    """JSON Lines; also a .json file holding one array of items."""
    if text.lstrip().startswith("["):
        try:
            values = json.loads(text)
        except ValueError:
            raise ItemsError("items_bad_json", line=1) from None
        if not isinstance(values, list):
            raise ItemsError("items_bad_json", line=1)
        return [_file_item(value, number) for number, value in enumerate(values[: ITEMS_MAX + 1], start=1)]
    items: list[Item] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except ValueError:
            raise ItemsError("items_bad_json", line=number) from None
        items.append(_file_item(value, number))
        if len(items) > ITEMS_MAX:
            break
    return items


def _from_csv(text: str) -> list[Item]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or any(not (name or "").strip() for name in reader.fieldnames):
        raise ItemsError("items_csv_header")
    items: list[Item] = []
    for row in reader:
        if None in row:  # more cells than header columns
            raise ItemsError("items_csv_row", line=reader.line_num)
        if all(value in (None, "") for value in row.values()):
            continue
        items.append({name.strip(): value for name, value in row.items()})
        if len(items) > ITEMS_MAX:
            break
    return items


def from_file(name: str, data: bytes) -> list[Item]:
    """Items of an uploaded file, by its suffix (.csv, or .jsonl / .ndjson / .json)."""
    suffix = pathlib.PurePath(name).suffix.lower()
    if suffix not in CSV_SUFFIXES | JSONL_SUFFIXES:
        raise ItemsError("items_file_type")
    try:
        text = data.decode("utf-8-sig")  # spreadsheet exports often start with a BOM
    except UnicodeDecodeError:
        raise ItemsError("items_file_encoding") from None
    items = _from_csv(text) if suffix in CSV_SUFFIXES else _from_jsonl(text)
    if not items:
        raise ItemsError("items_file_empty")
    return items


def as_lines(items: list[Item], placeholders: list[str]) -> str:
    """Items as the paste box shows them: plain lines for a one-field template, else JSON."""
    field = plain_field(placeholders)
    simple = len(placeholders) == 1 and all(
        set(item) == {field}
        and isinstance(item[field], str)
        and "\n" not in item[field]
        and not item[field].lstrip().startswith("{")
        for item in items
    )
    if simple:
        return "\n".join(item[field] for item in items)
    return "\n".join(json.dumps(item, ensure_ascii=False) for item in items)
