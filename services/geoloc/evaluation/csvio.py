"""Reading the CSV inputs with errors that say which file, row and column, and what is wrong."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

LAT_LIMIT = 90.0
LON_LIMIT = 180.0


class InputError(ValueError):
    """A problem in something the user handed us; the CLI prints it without a traceback."""


@dataclass(frozen=True)
class Row:
    path: Path
    number: int  # 1-based among data rows, so the header is not row 1
    line: int  # physical line in the file where the row starts, for editors
    values: dict[str, str]

    def error(self, column: str, problem: str) -> InputError:
        return InputError(f"{self.path}: row {self.number} (line {self.line}), column {column!r}: {problem}")

    def text(self, column: str) -> str:
        return self.values[column].strip()

    def required_text(self, column: str) -> str:
        value = self.text(column)
        if not value:
            raise self.error(column, "is empty")
        return value

    def coordinate(self, column: str, limit: float) -> float:
        return parse_coordinate(self, column, self.required_text(column), limit)


def parse_coordinate(row: Row, column: str, raw: str, limit: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise row.error(column, f"{raw!r} is not a number") from None
    # float() happily accepts "nan" and "inf", which would silently poison every mean.
    if not math.isfinite(value):
        raise row.error(column, f"{raw!r} is not a finite number")
    if not -limit <= value <= limit:
        raise row.error(column, f"{raw} is out of range [{-limit:g}, {limit:g}]")
    return value


def read_table(path: Path, required: Sequence[str]) -> tuple[tuple[str, ...], list[Row]]:
    """Header and rows of a CSV file, after checking the header names every required column."""
    try:
        # utf-8-sig: spreadsheets often prepend a BOM, which would otherwise rename column 1.
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return _parse(path, csv.reader(handle), required)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a CSV file") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise InputError(f"{path}: malformed CSV: {exc}") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _parse(path: Path, reader, required: Sequence[str]) -> tuple[tuple[str, ...], list[Row]]:
    try:
        header = tuple(name.strip() for name in next(reader))
    except StopIteration:
        raise InputError(
            f"{path}: empty file, expected a header line naming the columns {', '.join(required)}"
        ) from None
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise InputError(f"{path}: header names column {name!r} more than once")
        seen.add(name)
    absent = [name for name in required if name not in seen]
    if absent:
        raise InputError(
            f"{path}: missing column{'s' if len(absent) > 1 else ''} {', '.join(repr(n) for n in absent)} "
            f"(header has: {', '.join(header)})"
        )

    rows: list[Row] = []
    while True:
        line = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        if not any(field.strip() for field in fields):
            continue  # blank lines, typically a trailing newline or two, carry no data
        number = len(rows) + 1
        if len(fields) != len(header):
            raise InputError(f"{path}: row {number} (line {line}): has {len(fields)} fields, header has {len(header)}")
        rows.append(Row(path, number, line, dict(zip(header, fields, strict=True))))
    return header, rows


def check_unique(rows: Sequence[Row], column: str) -> None:
    first_row: dict[str, int] = {}
    for row in rows:
        key = row.text(column)
        if key in first_row:
            raise row.error(column, f"{key!r} already appears in row {first_row[key]}")
        first_row[key] = row.number
