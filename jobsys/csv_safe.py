"""CSV that is safe to open in a spreadsheet: every CSV jobsys writes goes through here.

Spreadsheet apps (Excel, LibreOffice Calc, Google Sheets) take a cell that starts with `=`,
`+`, `-`, `@`, a tab or a carriage return for a formula, so an item's input or a model's
output such as `=HYPERLINK(...)` would run when an operator opens the export. As OWASP's
"CSV Injection" advises, such a cell gets a leading `'`: the spreadsheet then shows it as
text. The full-width `＝ ＋ － ＠` count too (some East Asian spreadsheet locales read them
as their ASCII forms). Numbers are left alone (-5 is not a formula), so only text changes.

JSON Lines exports are not touched: they are read by programs, which need the values as
they are.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from typing import IO, Any

UTF8_BOM = "\ufeff"  # first in a CSV file to open: spreadsheets otherwise garble Korean text

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def safe_cell(value: Any) -> Any:
    """`value` as a spreadsheet reads it as data: text that starts with a formula trigger gets
    a leading `'`; numbers, None and other text are returned unchanged."""
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    text = value if isinstance(value, str) else str(value)
    if text.startswith(FORMULA_TRIGGERS):
        return "'" + text
    return value


def safe_row(row: Iterable[Any]) -> list[Any]:
    return [safe_cell(value) for value in row]


class _Writer:
    """csv.writer with every cell passed through safe_cell."""

    def __init__(self, out: IO[str], **options: Any) -> None:
        self._writer = csv.writer(out, **options)

    def writerow(self, row: Iterable[Any]) -> Any:
        return self._writer.writerow(safe_row(row))

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def writer(out: IO[str], **options: Any) -> _Writer:
    """Like csv.writer(out, **options), with formula cells neutralised."""
    return _Writer(out, **options)


class DictWriter(csv.DictWriter):  # type: ignore[type-arg]
    """csv.DictWriter with formula cells neutralised, the header row included."""

    def writerow(self, rowdict: Mapping[str, Any]) -> Any:
        return super().writerow({key: safe_cell(value) for key, value in rowdict.items()})

    def writerows(self, rowdicts: Iterable[Mapping[str, Any]]) -> None:
        for rowdict in rowdicts:
            self.writerow(rowdict)
