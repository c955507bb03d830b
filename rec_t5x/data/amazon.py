"""Amazon product reviews (McAuley lab, 2014 and 2018 releases) -> `InteractionLog`.

Both releases ship per category a gzipped reviews file (one JSON object per line with `reviewerID`,
`asin`, `overall` (1-5 stars) and `unixReviewTime` (seconds)) and a gzipped metadata file with
the product `title`:

| release | reviews (5-core / full)                                   | metadata                    |
|---------|-----------------------------------------------------------|-----------------------------|
| 2014    | `reviews_<Cat>_5.json.gz` / `reviews_<Cat>.json.gz`       | `meta_<Cat>.json.gz`        |
| 2018    | `<Cat>_5.json.gz` / `<Cat>.json.gz`                       | `meta_<Cat>.json.gz`        |

2014 (https://jmcauley.ucsd.edu/data/amazon/index_2014.html, files under
http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/): categories `Beauty`,
`Toys_and_Games`, `Sports_and_Outdoors`. Its metadata lines are Python literals (single quotes),
not JSON; they are parsed with `ast.literal_eval`, never `eval`.
2018 (https://nijianmo.github.io/amazon/index.html; `categoryFilesSmall/<Cat>_5.json.gz`,
`categoryFiles/<Cat>.json.gz`, `metaFiles/meta_<Cat>.json.gz`): JSON lines throughout. 2018 has no
`Beauty` category; `All_Beauty` (and `Luxury_Beauty`) replace it, so `CATEGORIES` maps beauty to
`All_Beauty` there. The 2018 metadata repeats some products (counted as `duplicate_metadata`) and
its 5-core files contain repeated reviews (removed by processing's dedupe, counted).

Readers take explicit paths, so renamed files never block a user; `expected_files` gives the
conventional names for the catalog. Titles are returned raw (they may contain HTML entities such
as `&amp;`); `rec_t5x.data.processing` cleans them.
"""
from __future__ import annotations

import ast
import dataclasses
import gzip
import json
import os
import re
from typing import Any, Iterator

from rec_t5x.data import interactions

PathLike = str | os.PathLike
RATING_SCALE = (1.0, 5.0)
RELEASES = ("2014", "2018")

# Short name -> category file stem per release.
CATEGORIES = {
    "beauty": {"2014": "Beauty", "2018": "All_Beauty"},
    "toys": {"2014": "Toys_and_Games", "2018": "Toys_and_Games"},
    "sports": {"2014": "Sports_and_Outdoors", "2018": "Sports_and_Outdoors"},
}

_URLS = {
    "2014": "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/{file} "
            "(see https://jmcauley.ucsd.edu/data/amazon/index_2014.html)",
    "2018": "https://nijianmo.github.io/amazon/index.html (5-core: categoryFilesSmall/{file}, "
            "full: categoryFiles/, metadata: metaFiles/)",
}

_ASIN = re.compile(r"""['"]asin['"]\s*:\s*['"]([^'"\\]*)['"]""")


@dataclasses.dataclass(frozen=True)
class ExpectedFiles:
  """Conventional file names of one category and release.

  Attributes:
    reviews: candidate review files, preferred first (the 5-core file, then the full one).
    meta: the metadata file.
    where: where to download them.
  """
  reviews: tuple[str, ...]
  meta: str
  where: str


def expected_files(category: str, release: str) -> ExpectedFiles:
  """File names for a category ("Beauty", "Toys_and_Games", ... as in `CATEGORIES`) and release."""
  release = str(release)
  if release not in RELEASES:
    raise ValueError(f"release: expected one of {RELEASES}, got {release!r}")
  if release == "2014":
    reviews = (f"reviews_{category}_5.json.gz", f"reviews_{category}.json.gz")
  else:
    reviews = (f"{category}_5.json.gz", f"{category}.json.gz")
  return ExpectedFiles(reviews=reviews, meta=f"meta_{category}.json.gz",
                       where=_URLS[release].format(file=reviews[0]))


def _iter_lines(path: PathLike, report: interactions.ReadReport) -> Iterator[tuple[int, str]]:
  """Streams (line number, decoded line) from a gzipped or plain UTF-8 file; skips blank lines."""
  with open(path, "rb") as probe:
    gzipped = probe.read(2) == b"\x1f\x8b"
  opener = gzip.open if gzipped else open
  with opener(path, "rb") as f:
    for number, raw in enumerate(f, start=1):
      raw = raw.rstrip(b"\r\n")
      if not raw.strip():
        report.add(interactions.BLANK_LINE, f"{path}:{number}")
        continue
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        report.add(interactions.BAD_ENCODING, f"{path}:{number}",
                   f"byte {raw[e.start:e.start + 1]!r} at column {e.start + 1} is not valid utf-8")
        line = raw.decode("utf-8", errors="replace")
      yield number, line


def parse_record(line: str) -> dict[str, Any]:
  """Parses one JSON object, or a Python dict literal (2014 metadata) with `ast.literal_eval`.

  Raises:
    ValueError: when the line is neither, or not a dict.
  """
  try:
    record = json.loads(line)
  except ValueError:
    try:
      record = ast.literal_eval(line)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
      raise ValueError(f"neither JSON nor a Python literal ({type(e).__name__})") from None
  if not isinstance(record, dict):
    raise ValueError(f"expected an object, got {type(record).__name__}")
  return record


def _review_fields(record: dict[str, Any]) -> tuple[str, str, float, int]:
  """(user, item, rating, timestamp) of a review; ValueError naming the bad field."""
  values = []
  for field in ("reviewerID", "asin"):
    value = record.get(field)
    if not isinstance(value, str) or not value.strip():
      raise ValueError(f"field {field!r}: expected a non-empty string, got {value!r}")
    values.append(value.strip())
  rating = record.get("overall")
  if isinstance(rating, str):
    try:
      rating = float(rating)
    except ValueError:
      pass
  if isinstance(rating, bool) or not isinstance(rating, (int, float)) or rating != rating:
    raise ValueError(f"field 'overall': expected a number, got {record.get('overall')!r}")
  timestamp = record.get("unixReviewTime")
  if isinstance(timestamp, float) and timestamp.is_integer():
    timestamp = int(timestamp)
  if isinstance(timestamp, str) and timestamp.strip().isdigit():
    timestamp = int(timestamp)
  if isinstance(timestamp, bool) or not isinstance(timestamp, int):
    raise ValueError(f"field 'unixReviewTime': expected an integer, got "
                     f"{record.get('unixReviewTime')!r}")
  return values[0], values[1], float(rating), timestamp


def _read_reviews(path: PathLike, report: interactions.ReadReport, rating_scale):
  users, items, ratings, timestamps = [], [], [], []
  low, high = rating_scale
  for number, line in _iter_lines(path, report):
    try:
      user, item, rating, timestamp = _review_fields(parse_record(line))
    except ValueError as e:
      report.add(interactions.MALFORMED_LINE, f"{path}:{number}", str(e))
      continue
    if not low <= rating <= high:
      report.add(interactions.RATING_OUT_OF_RANGE, f"{path}:{number}",
                 f"field 'overall': rating {rating:g} outside [{low:g}, {high:g}]")
      continue
    users.append(user)
    items.append(item)
    ratings.append(rating)
    timestamps.append(timestamp)
  return users, items, ratings, timestamps


def _meta_entries(path: PathLike, known_items: set[str], report: interactions.ReadReport):
  """Yields (asin, title or None, location) for metadata rows; unknown items skip parsing."""
  for number, line in _iter_lines(path, report):
    where = f"{path}:{number}"
    matches = _ASIN.findall(line)
    if len(matches) == 1 and matches[0] not in known_items:
      # Skip the (slow) full parse of products without reviews; collect_titles counts them.
      yield matches[0], None, where
      continue
    try:
      record = parse_record(line)
    except ValueError as e:
      report.add(interactions.MALFORMED_LINE, where, str(e))
      continue
    asin = record.get("asin")
    if not isinstance(asin, str) or not asin.strip():
      report.add(interactions.MALFORMED_LINE, where, f"field 'asin': expected a non-empty string, "
                 f"got {asin!r}")
      continue
    title = record.get("title")
    yield asin.strip(), title if isinstance(title, str) else None, where


def read_amazon(reviews_path: PathLike, meta_path: PathLike | None = None, *,
                rating_scale: tuple[float, float] = RATING_SCALE,
                strict: bool = False) -> interactions.InteractionLog:
  """Reads an Amazon reviews file (+ metadata for titles), either release.

  Args:
    reviews_path: gzipped (or plain) JSON lines with reviewerID, asin, overall, unixReviewTime.
    meta_path: gzipped metadata, JSON lines (2018) or Python-literal lines (2014), or None.
    rating_scale: valid range of `overall`.
    strict: raise at the first skipped line instead of counting it.

  Returns:
    The reviews in file order; titles (raw, possibly with HTML entities) of reviewed products.

  Raises:
    ValueError: when the reviews file has no valid review.
  """
  report = interactions.ReadReport(strict=strict)
  users, items, ratings, timestamps = _read_reviews(reviews_path, report, rating_scale)
  if not users:
    raise ValueError(f"{reviews_path}: no valid review found; problems:\n{report.summary()}")
  titles: dict[str, str] = {}
  if meta_path is not None:
    titles = interactions.collect_titles(_meta_entries(meta_path, set(items), report),
                                         known_items=set(items), report=report)
  source = f"Amazon reviews {reviews_path}" + (f" + {meta_path}" if meta_path else "")
  return interactions.make_log(users, items, ratings, timestamps, titles=titles, source=source,
                               rating_scale=rating_scale, report=report)
