"""Raw interaction events as read from a source, and the report of what reading skipped or repaired.

Every reader in `rec_t5x.data` (MovieLens, Amazon, generic tables) returns an `InteractionLog`: one
row per event with the *raw* user and item ids as strings, the rating (NaN when the source has
none), the exact integer timestamp and the event's position in the source files (`order`), which
breaks timestamp ties deterministically. Titles are a separate mapping raw item id -> raw title.

Nothing is dropped silently. A `ReadReport` counts each kind of problem (the kinds are the
constants below) and keeps the first few locations (`file:line: detail`) of each. Readers skip a
line only for the kinds listed in `SKIPPED_KINDS`; the other kinds are repairs or informational
counts. Reports merge, so one report can describe a dataset read from several files and then
processed (`rec_t5x.data.processing` adds its own kinds).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

# Problems met while reading (the event or metadata row is skipped).
BLANK_LINE = "blank_line"
MALFORMED_LINE = "malformed_line"
RATING_OUT_OF_RANGE = "rating_out_of_range"
# Repairs and informational counts while reading (nothing is lost).
BAD_ENCODING = "bad_encoding"  # Line decoded with U+FFFD replacement characters.
DUPLICATE_METADATA = "duplicate_metadata"  # A second metadata row for an item; the first title is kept.
UNKNOWN_ITEM_IN_METADATA = "unknown_item_in_metadata"  # Metadata row for an item without events.
PLACEHOLDER_TITLE = "placeholder_title"  # A title such as "unknown", treated as missing.
# Counted by processing (rec_t5x.data.processing).
DUPLICATE_EVENT = "duplicate_event"  # Repeated (user, item) pair removed by the dedupe policy.
BELOW_MIN_RATING = "below_min_rating"  # Event removed by ProcessingConfig.min_rating.
K_CORE_REMOVED = "k_core_removed"  # Event removed by the iterative k-core filter.
MISSING_TITLE = "missing_title"  # Item of the processed dataset without a title ("" is used).
TITLE_TRUNCATED = "title_truncated"  # Title longer than ProcessingConfig.title_max_chars, cut.

SKIPPED_KINDS = frozenset({BLANK_LINE, MALFORMED_LINE, RATING_OUT_OF_RANGE})

_DESCRIPTIONS = {
    BLANK_LINE: "blank lines skipped",
    MALFORMED_LINE: "malformed lines skipped (wrong field count, unparsable value, missing field)",
    RATING_OUT_OF_RANGE: "events skipped because the rating is outside the rating scale",
    BAD_ENCODING: "lines with invalid bytes for the file's encoding (decoded with U+FFFD)",
    DUPLICATE_METADATA: "repeated metadata rows for an item (first title kept)",
    UNKNOWN_ITEM_IN_METADATA: "metadata rows for items that have no events (ignored)",
    PLACEHOLDER_TITLE: "placeholder titles such as 'unknown' (treated as missing)",
    DUPLICATE_EVENT: "repeated (user, item) events removed by the dedupe policy",
    BELOW_MIN_RATING: "events removed by min_rating",
    K_CORE_REMOVED: "events removed by the k-core filter",
    MISSING_TITLE: "items without a title (empty title used)",
    TITLE_TRUNCATED: "titles cut at a word boundary to title_max_chars",
}

MAX_EXAMPLES = 5


@dataclasses.dataclass
class ReadReport:
  """Counts of problems per kind, with the first `MAX_EXAMPLES` locations of each.

  Attributes:
    counts: kind -> number of occurrences.
    examples: kind -> up to `MAX_EXAMPLES` strings `"<file>:<line>: <detail>"` (or another
      location such as `"item 'B000123'"` for processing kinds).
    strict: when True, `add` raises `ValueError` for kinds in `SKIPPED_KINDS` instead of counting
      (readers expose this as their `strict` argument). Not serialised.
  """
  counts: dict[str, int] = dataclasses.field(default_factory=dict)
  examples: dict[str, list[str]] = dataclasses.field(default_factory=dict)
  strict: bool = False

  def add(self, kind: str, where: str, detail: str = "", count: int = 1) -> None:
    """Records `count` occurrences of `kind`; `where` and `detail` describe the first one.

    Raises:
      ValueError: in strict mode, for a kind that makes a reader skip data.
    """
    message = f"{where}: {detail}" if detail else where
    if self.strict and kind in SKIPPED_KINDS:
      raise ValueError(f"{message} ({kind}; strict reading is on)")
    if count <= 0:
      return
    self.counts[kind] = self.counts.get(kind, 0) + count
    shown = self.examples.setdefault(kind, [])
    if len(shown) < MAX_EXAMPLES:
      shown.append(message)

  def count(self, kind: str) -> int:
    """Number of occurrences of `kind` (0 when never seen)."""
    return self.counts.get(kind, 0)

  @property
  def num_skipped(self) -> int:
    """Events or rows skipped while reading (sum over `SKIPPED_KINDS`)."""
    return sum(n for kind, n in self.counts.items() if kind in SKIPPED_KINDS)

  def merge(self, other: ReadReport) -> ReadReport:
    """Returns a new report with the counts of both and their first examples (self's first)."""
    merged = ReadReport(strict=self.strict or other.strict)
    for report in (self, other):
      for kind, n in report.counts.items():
        merged.counts[kind] = merged.counts.get(kind, 0) + n
        shown = merged.examples.setdefault(kind, [])
        for example in report.examples.get(kind, []):
          if len(shown) < MAX_EXAMPLES:
            shown.append(example)
    return merged

  def summary(self) -> str:
    """Human-readable text: one line per kind with its count and first locations."""
    if not self.counts:
      return "no problems found"
    lines = []
    for kind in sorted(self.counts):
      description = _DESCRIPTIONS.get(kind, kind)
      lines.append(f"{kind}: {self.counts[kind]:,} ({description})")
      for example in self.examples.get(kind, []):
        lines.append(f"    {example}")
    return "\n".join(lines)

  def to_json(self) -> dict[str, Any]:
    """A JSON-serialisable dict (used in the processed dataset's meta.json)."""
    return {"counts": dict(sorted(self.counts.items())),
            "examples": {k: list(v) for k, v in sorted(self.examples.items())}}

  @classmethod
  def from_json(cls, data: Mapping[str, Any]) -> ReadReport:
    """Inverse of `to_json`."""
    return cls(counts={str(k): int(v) for k, v in data.get("counts", {}).items()},
               examples={str(k): [str(e) for e in v] for k, v in data.get("examples", {}).items()})


@dataclasses.dataclass(frozen=True, eq=False)
class InteractionLog:
  """Raw events of one source, in file order.

  Attributes:
    users: object array [n] of str, raw user ids.
    items: object array [n] of str, raw item ids.
    ratings: float32 [n]; NaN where the source has no rating.
    timestamps: int64 [n], exact integer timestamps (seconds for all built-in sources).
    order: int64 [n], position of the event in the source files (strictly increasing); breaks
      timestamp ties.
    titles: raw item id -> raw (uncleaned) title, for the items the metadata names.
    source: description of where the events came from (paths, format).
    rating_scale: (min, max) of valid ratings, or None when the source has no ratings.
    report: what reading skipped or repaired.
  """
  users: np.ndarray
  items: np.ndarray
  ratings: np.ndarray
  timestamps: np.ndarray
  order: np.ndarray
  titles: Mapping[str, str]
  source: str
  rating_scale: tuple[float, float] | None = None
  report: ReadReport = dataclasses.field(default_factory=ReadReport)

  def __post_init__(self):
    n = len(self.users)
    expected = {"users": object, "items": object, "ratings": np.float32,
                "timestamps": np.int64, "order": np.int64}
    for field, dtype in expected.items():
      array = getattr(self, field)
      if not isinstance(array, np.ndarray) or array.ndim != 1 or array.dtype != dtype:
        got = f"{type(array).__name__} {getattr(array, 'dtype', '')} {getattr(array, 'shape', '')}"
        raise ValueError(f"InteractionLog.{field}: expected a 1-D {np.dtype(dtype)} array, got {got}")
      if len(array) != n:
        raise ValueError(f"InteractionLog.{field}: length {len(array)} != len(users) {n}")
    if self.rating_scale is not None:
      low, high = self.rating_scale
      if not low < high:
        raise ValueError(f"InteractionLog.rating_scale: expected (min, max) with min < max, "
                         f"got {self.rating_scale}")

  def __len__(self) -> int:
    return len(self.users)

  @property
  def has_ratings(self) -> bool:
    """True when the source carries ratings (`rating_scale` is set)."""
    return self.rating_scale is not None


def make_log(users: list[str], items: list[str], ratings, timestamps, *, titles: Mapping[str, str],
             source: str, rating_scale: tuple[float, float] | None,
             report: ReadReport) -> InteractionLog:
  """Builds an `InteractionLog` from per-event lists, numbering events in the given (file) order.

  Args:
    users, items: raw ids, length n.
    ratings: length n floats (NaN for none), converted to float32.
    timestamps: length n ints, converted to int64.
    titles, source, rating_scale, report: as in `InteractionLog`.

  Returns:
    The log; `order` is 0..n-1.
  """
  users_array = np.empty(len(users), dtype=object)
  users_array[:] = users
  items_array = np.empty(len(items), dtype=object)
  items_array[:] = items
  return InteractionLog(
      users=users_array, items=items_array,
      ratings=np.asarray(ratings, dtype=np.float32).reshape(-1),
      timestamps=np.asarray(timestamps, dtype=np.int64).reshape(-1),
      order=np.arange(len(users), dtype=np.int64), titles=dict(titles), source=source,
      rating_scale=rating_scale, report=report)


PLACEHOLDER_TITLES = frozenset({"unknown", "unkonwn", "n/a", "none", "null"})


def collect_titles(entries, *, known_items, report: ReadReport) -> dict[str, str]:
  """Builds raw item id -> raw title from metadata rows, counting what it ignores.

  Args:
    entries: iterable of (raw item id, raw title or None, location such as "file:line").
    known_items: the raw item ids that have events, or None to keep every item. Rows for other
      items are counted as `unknown_item_in_metadata` and ignored.
    report: receives `unknown_item_in_metadata`, `duplicate_metadata` and `placeholder_title`.

  Returns:
    The first non-empty, non-placeholder title of each item (items without one are absent).
  """
  titles: dict[str, str] = {}
  seen: set[str] = set()
  for item, title, where in entries:
    if known_items is not None and item not in known_items:
      report.add(UNKNOWN_ITEM_IN_METADATA, where, f"item {item!r} has no events")
      continue
    if item in seen:
      report.add(DUPLICATE_METADATA, where, f"item {item!r} already has a metadata row")
    seen.add(item)
    if title is None or not title.strip():
      continue
    if title.strip().lower() in PLACEHOLDER_TITLES:
      report.add(PLACEHOLDER_TITLE, where, f"item {item!r} has title {title!r}")
      continue
    titles.setdefault(item, title)
  return titles
