"""Delimited text files (CSV, TSV, `::`-separated) -> `InteractionLog`, with a column mapping.

`read_table` is the generic reader for a user's own interaction file. The building blocks below it
(`read_lines`, `split_fields`, `parse_ints`, `parse_floats`) are shared with the MovieLens readers.

Why hand-written instead of `csv`/pyarrow: MovieLens 1M uses the two-character separator `::`,
which neither supports, and every skipped line must be reported with its file and line number.
The fast path is still C-speed: a file whose lines all have the expected number of separators is
split in one `str.split` and columns are taken by slicing (ML-1M's million rows: 1-2 s).
Lines containing the quote character are parsed with `csv` one at a time (a quoted field may
contain the delimiter; a quoted field spanning several lines is not supported and is reported as
malformed). Gzip-compressed files (recognised by their magic bytes) are decompressed.

Every problem names the file, the 1-based line number and, for a bad value, the column.
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import gzip
import itertools
import os
from typing import Mapping, Sequence

import numpy as np

from rec_t5x.data import interactions

PathLike = str | os.PathLike
Column = int | str


def read_bytes(path: PathLike) -> bytes:
  """Returns the file's bytes, gunzipped when the file is gzip-compressed."""
  with open(path, "rb") as f:
    data = f.read()
  if data[:2] == b"\x1f\x8b":
    data = gzip.decompress(data)
  return data


def read_lines(path: PathLike, *, encoding: str, report: interactions.ReadReport) -> list[str]:
  """Decodes a text file into lines (element i is line i + 1), without line terminators.

  Lines are split on "\\n" only (never on other Unicode line breaks, which occur inside titles); a
  trailing "\\r" is removed and a UTF-8 byte-order mark is dropped. A line with bytes that are not
  valid in `encoding` is decoded with U+FFFD replacement characters and counted as
  `bad_encoding`.

  Args:
    path: the file (gzip-compressed or plain).
    encoding: a Python codec name, e.g. "utf-8" or "latin-1".
    report: receives the `bad_encoding` counts.

  Returns:
    The lines; the empty string after a final newline is not a line.
  """
  data = read_bytes(path)
  try:
    text = data.decode(encoding)
    lines = text.split("\n")
  except UnicodeDecodeError:
    lines = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
      try:
        lines.append(raw.decode(encoding))
      except UnicodeDecodeError as e:
        report.add(interactions.BAD_ENCODING, f"{path}:{number}",
                   f"byte {raw[e.start:e.start + 1]!r} at column {e.start + 1} is not valid {encoding}")
        lines.append(raw.decode(encoding, errors="replace"))
  if lines and lines[-1] == "":
    lines.pop()
  if lines and lines[0].startswith("\ufeff"):
    lines[0] = lines[0][1:]
  if b"\r" in data:
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
  return lines


@dataclasses.dataclass(frozen=True)
class Fields:
  """The well-formed rows of a delimited file, column by column.

  Attributes:
    path: the file, for messages.
    header: the header's field names, or None.
    line_numbers: int64 [rows], 1-based line of each row.
    columns: `num_fields` lists of [rows] strings.
  """
  path: str
  header: tuple[str, ...] | None
  line_numbers: np.ndarray
  columns: list[list[str]]

  @property
  def num_rows(self) -> int:
    return len(self.line_numbers)

  def column_label(self, index: int) -> str:
    """'field 3' or 'field 3 ("rating")' for messages (1-based)."""
    if self.header is not None and index < len(self.header):
      return f"field {index + 1} ({self.header[index]!r})"
    return f"field {index + 1}"


def _most_common_count(counts: Sequence[int]) -> int:
  return collections.Counter(counts).most_common(1)[0][0]


def split_fields(path: PathLike, *, delimiter: str, header: bool, encoding: str,
                 report: interactions.ReadReport, num_fields: int | None = None,
                 quotechar: str | None = '"') -> Fields:
  """Reads a delimited file into columns; rows with the wrong number of fields are skipped.

  Args:
    path: the file.
    delimiter: field separator, one or more characters ("\\t", ",", "|", "::").
    header: whether the first line names the columns.
    encoding: text encoding of the file.
    report: receives `blank_line`, `malformed_line` and `bad_encoding` counts.
    num_fields: the expected number of fields per row. Default: the header's length, else the
      most common field count among the first 1,000 rows.
    quotechar: quote character for CSV-style quoting, or None (only used with a one-character
      delimiter).

  Returns:
    The `Fields` of the well-formed rows.

  Raises:
    ValueError: when the delimiter is empty or the file has no header line but `header` is set.
  """
  if not delimiter:
    raise ValueError(f"delimiter: expected a non-empty string, got {delimiter!r} (file {path})")
  lines = read_lines(path, encoding=encoding, report=report)
  first = 1
  names = None
  if header:
    if not lines:
      raise ValueError(f"{path}: expected a header line, but the file is empty")
    names = tuple(name.strip() for name in _split_line(lines[0], delimiter, quotechar))
    lines = lines[1:]
    first = 2
  quoting = quotechar is not None and len(delimiter) == 1
  blank = [not line or line.isspace() for line in lines]
  if quoting and any(quotechar in line for line in lines):
    rows = [(_split_line(line, delimiter, quotechar) if not b else None)
            for line, b in zip(lines, blank)]
    counts = [len(r) - 1 if r is not None else -1 for r in rows]
  else:
    rows = None
    counts = list(map(str.count, lines, itertools.repeat(delimiter)))
  if num_fields is None:
    if names is not None:
      num_fields = len(names)
    else:
      sample = [c for c, b in zip(counts[:1000], blank[:1000]) if not b]
      num_fields = _most_common_count(sample) + 1 if sample else 1
  good = []
  for index, (count, is_blank) in enumerate(zip(counts, blank)):
    if is_blank:
      report.add(interactions.BLANK_LINE, f"{path}:{index + first}")
    elif count != num_fields - 1:
      report.add(interactions.MALFORMED_LINE, f"{path}:{index + first}",
                 f"expected {num_fields} fields separated by {delimiter!r}, got {count + 1}")
    else:
      good.append(index)
  if rows is None:
    kept = lines if len(good) == len(lines) else [lines[i] for i in good]
    flat = delimiter.join(kept).split(delimiter) if kept else []
    columns = [flat[j::num_fields] for j in range(num_fields)]
  else:
    kept_rows = [rows[i] for i in good]
    columns = [list(col) for col in zip(*kept_rows)] if kept_rows else [[] for _ in range(num_fields)]
  return Fields(path=str(path), header=names,
                line_numbers=np.asarray(good, dtype=np.int64) + first, columns=columns)


def _split_line(line: str, delimiter: str, quotechar: str | None) -> list[str]:
  if quotechar is not None and len(delimiter) == 1 and quotechar in line:
    parsed = next(csv.reader([line], delimiter=delimiter, quotechar=quotechar), [])
    return parsed
  return line.split(delimiter)


def _bad_rows(values: list[str], convert, ok: np.ndarray) -> list[int]:
  bad = []
  for i, value in enumerate(values):
    try:
      convert(value)
    except (ValueError, OverflowError):
      bad.append(i)
  ok[bad] = False
  return bad


def _exact_int(value: str) -> int:
  """int(value), also accepting integral floats written as "978300760.0" (exactly)."""
  try:
    return int(value)
  except ValueError:
    number = float(value)
    if not number.is_integer() or abs(number) > 2**53:
      raise
    return int(number)


def parse_ints(fields: Fields, index: int, *, report: interactions.ReadReport,
               what: str = "an integer") -> tuple[np.ndarray, np.ndarray]:
  """Parses column `index` as exact int64; bad values are reported as malformed lines.

  Args:
    fields: the table.
    index: column index.
    report: receives one `malformed_line` per bad value (file, line, column, value).
    what: description of the expected value for messages.

  Returns:
    (values int64 [rows] (0 where bad), ok bool [rows]).
  """
  values = fields.columns[index]
  ok = np.ones(len(values), dtype=bool)
  try:
    parsed = np.fromiter(map(int, values), dtype=np.int64, count=len(values))
  except (ValueError, OverflowError):
    parsed = np.zeros(len(values), dtype=np.int64)
    for i, value in enumerate(values):
      try:
        number = _exact_int(value)
        if not -2**63 <= number < 2**63:
          raise OverflowError(value)
        parsed[i] = number
      except (ValueError, OverflowError):
        ok[i] = False
        report.add(interactions.MALFORMED_LINE, f"{fields.path}:{fields.line_numbers[i]}",
                   f"{fields.column_label(index)}: expected {what}, got {value!r}")
  return parsed, ok


def parse_floats(fields: Fields, index: int, *, report: interactions.ReadReport,
                 what: str = "a finite number") -> tuple[np.ndarray, np.ndarray]:
  """Parses column `index` as finite float32; bad values (including NaN) are malformed lines.

  Returns:
    (values float32 [rows] (NaN where bad), ok bool [rows]).
  """
  values = fields.columns[index]
  ok = np.ones(len(values), dtype=bool)
  try:
    parsed = np.fromiter(map(float, values), dtype=np.float64, count=len(values))
  except ValueError:
    parsed = np.full(len(values), np.nan)
    for i, value in enumerate(values):
      try:
        parsed[i] = float(value)
      except ValueError:
        pass
  for i in np.flatnonzero(~np.isfinite(parsed)):
    ok[i] = False
    report.add(interactions.MALFORMED_LINE, f"{fields.path}:{fields.line_numbers[i]}",
               f"{fields.column_label(index)}: expected {what}, got {values[i]!r}")
  return parsed.astype(np.float32), ok


def check_rating_range(fields: Fields, ratings: np.ndarray, ok: np.ndarray,
                       rating_scale: tuple[float, float], index: int,
                       report: interactions.ReadReport) -> None:
  """Marks (in `ok`) and reports the rows whose rating lies outside `rating_scale`."""
  low, high = rating_scale
  outside = ok & ((ratings < low) | (ratings > high))
  for i in np.flatnonzero(outside):
    report.add(interactions.RATING_OUT_OF_RANGE, f"{fields.path}:{fields.line_numbers[i]}",
               f"{fields.column_label(index)}: rating {fields.columns[index][i]!r} outside "
               f"[{low:g}, {high:g}]")
  ok &= ~outside


def check_ids(fields: Fields, index: int, ok: np.ndarray, report: interactions.ReadReport) -> list[str]:
  """Strips whitespace from an id column; empty ids are malformed. Returns the stripped ids."""
  ids = [value.strip() for value in fields.columns[index]]
  for i, value in enumerate(ids):
    if not value:
      ok[i] = False
      report.add(interactions.MALFORMED_LINE, f"{fields.path}:{fields.line_numbers[i]}",
                 f"{fields.column_label(index)}: empty id")
  return ids


@dataclasses.dataclass(frozen=True)
class ColumnMapping:
  """Where each event field is in a table: a 0-based column index or a header name.

  Attributes:
    user, item: required.
    rating: None when the file has no ratings (ratings become NaN).
    timestamp: None when the file has no timestamps: all timestamps are 0 and the file order
      alone gives the chronology.
    title: optional item title column (the first non-empty title of an item is kept).
  """
  user: Column = 0
  item: Column = 1
  rating: Column | None = None
  timestamp: Column | None = None
  title: Column | None = None

  def __post_init__(self):
    for name in ("user", "item", "rating", "timestamp", "title"):
      value = getattr(self, name)
      optional = name not in ("user", "item")
      if value is None and optional:
        continue
      if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"ColumnMapping.{name}: expected a column index (int >= 0) or a header "
                         f"name (str), got {value!r}")
      if isinstance(value, int) and value < 0:
        raise ValueError(f"ColumnMapping.{name}: expected a column index >= 0, got {value}")
    used = [v for v in dataclasses.astuple(self) if v is not None]
    if len(set(used)) != len(used):
      raise ValueError(f"ColumnMapping: each column may be used once, got {self}")

  def resolve(self, fields: Fields) -> dict[str, int]:
    """Column indices by field name (only the mapped fields).

    Raises:
      ValueError: naming the file and the column when a name is not in the header or an index is
        beyond the number of fields.
    """
    resolved = {}
    for name in ("user", "item", "rating", "timestamp", "title"):
      column = getattr(self, name)
      if column is None:
        continue
      if isinstance(column, str):
        if fields.header is None:
          raise ValueError(f"{fields.path}: column {name}={column!r} is a name, but the file is "
                           "read without a header (pass header=True or a column index)")
        if column not in fields.header:
          raise ValueError(f"{fields.path}:1: column {name}={column!r} is not in the header "
                           f"{list(fields.header)}")
        resolved[name] = fields.header.index(column)
      else:
        if column >= len(fields.columns):
          raise ValueError(f"{fields.path}: column {name}={column} is out of range; the rows have "
                           f"{len(fields.columns)} fields")
        resolved[name] = column
    return resolved


def events_from_fields(fields: Fields, columns: Mapping[str, int], *,
                       rating_scale: tuple[float, float] | None,
                       report: interactions.ReadReport):
  """Parses and validates the event columns of a table; bad rows are skipped and reported.

  Args:
    fields: the table.
    columns: resolved indices for "user", "item" and optionally "rating", "timestamp", "title".
    rating_scale: required when "rating" is mapped.
    report: receives per-row problems.

  Returns:
    (users list[str], items list[str], ratings float32 [n], timestamps int64 [n], titles list[str]
    or None, line_numbers int64 [n]) for the good rows.
  """
  ok = np.ones(fields.num_rows, dtype=bool)
  users = check_ids(fields, columns["user"], ok, report)
  items = check_ids(fields, columns["item"], ok, report)
  if "timestamp" in columns:
    timestamps, ts_ok = parse_ints(fields, columns["timestamp"], report=report,
                                   what="an integer timestamp")
    ok &= ts_ok
  else:
    timestamps = np.zeros(fields.num_rows, dtype=np.int64)
  if "rating" in columns:
    if rating_scale is None:
      raise ValueError(f"{fields.path}: rating_scale is required when a rating column is mapped, "
                       "e.g. rating_scale=(1.0, 5.0)")
    ratings, r_ok = parse_floats(fields, columns["rating"], report=report, what="a numeric rating")
    ok &= r_ok
    check_rating_range(fields, ratings, ok, rating_scale, columns["rating"], report)
  else:
    ratings = np.full(fields.num_rows, np.nan, dtype=np.float32)
  titles = fields.columns[columns["title"]] if "title" in columns else None
  if not ok.all():
    keep = np.flatnonzero(ok)
    users = [users[i] for i in keep]
    items = [items[i] for i in keep]
    titles = None if titles is None else [titles[i] for i in keep]
    return users, items, ratings[keep], timestamps[keep], titles, fields.line_numbers[keep]
  return users, items, ratings, timestamps, titles, fields.line_numbers


def read_table(path: PathLike, columns: ColumnMapping, *, delimiter: str = ",", header: bool = True,
               encoding: str = "utf-8", rating_scale: tuple[float, float] | None = None,
               quotechar: str | None = '"', strict: bool = False) -> interactions.InteractionLog:
  """Reads a CSV/TSV interaction file.

  Args:
    path: the file (may be gzip-compressed).
    columns: where user, item, rating, timestamp and title are (indices or header names).
    delimiter: field separator.
    header: whether the first line is a header.
    encoding: text encoding.
    rating_scale: (min, max) of valid ratings; required when `columns.rating` is set. Ratings
      outside are skipped and counted.
    quotechar: CSV quote character (None: no quoting).
    strict: raise `ValueError` at the first skipped line instead of counting it.

  Returns:
    The `InteractionLog` in file order; titles from the title column when mapped.

  Raises:
    ValueError: bad mapping (names file and column), or no valid event in the file.
  """
  report = interactions.ReadReport(strict=strict)
  fields = split_fields(path, delimiter=delimiter, header=header, encoding=encoding, report=report,
                        quotechar=quotechar)
  resolved = columns.resolve(fields)
  users, items, ratings, timestamps, raw_titles, line_numbers = events_from_fields(
      fields, resolved, rating_scale=rating_scale, report=report)
  if not users:
    raise ValueError(f"{path}: no valid event found; problems:\n{report.summary()}")
  titles: dict[str, str] = {}
  if raw_titles is not None:
    for item, title, line in zip(items, raw_titles, line_numbers):
      title = title.strip()
      if not title:
        continue
      previous = titles.setdefault(item, title)
      if previous != title:
        report.add(interactions.DUPLICATE_METADATA, f"{path}:{line}",
                   f"item {item!r} has title {title!r}, first seen as {previous!r}")
  return interactions.make_log(
      users, items, ratings, timestamps, titles=titles,
      source=f"table {path} (delimiter {delimiter!r}, columns {columns})",
      rating_scale=rating_scale if "rating" in resolved else None, report=report)
