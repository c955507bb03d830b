"""`RecDataset`, the processed and split dataset every other module reads, and its on-disk format.

Users and items have dense indices (`0..num_users-1`, `0..num_items-1`). Each user's events are
a contiguous, chronological slice of the flat `items`/`ratings`/`timestamps` arrays
(`user_offsets`, CSR style). Each item also has a public ID, a seeded random permutation of
`1..num_items`; prompts show only public IDs and titles. Splits are leave-one-out: the last event
of a user is the test item, the second-last the validation item, the rest training; users with
fewer than 3 events keep everything in training and are not evaluated.

On-disk format (a directory, written by `save`, read by `load`; FORMAT_VERSION 1):

  sequences.npz   numpy archive without pickles:
                    user_offsets int64 [num_users + 1], items int32 [num_interactions],
                    ratings float32 [num_interactions], timestamps int64 [num_interactions],
                    item_public_ids int64 [num_items]
  items.tsv       header `index<TAB>public_id<TAB>raw_id<TAB>title`, one row per item in index
                  order; `\\`, tab and newline inside a value are written as `\\\\`, `\\t`, `\\n`.
  users.tsv       header `index<TAB>raw_id`, one row per user in index order (same escaping);
                  items.tsv's raw_id column and users.tsv's rows are empty when the dataset has no
                  raw ids (meta.json "has_item_raw_ids" / "has_user_raw_ids").
  meta.json       {"format_version": 1, "name", "num_users", "num_items", "num_interactions",
                   "rating_scale": [min, max] | null, "info": {...}} where info holds the
                  provenance written by processing and the catalog: "source", "processing"
                  (ProcessingConfig fields), "report" (ReadReport counts and first locations),
                  "statistics", and for cached catalog entries "cache_key" and "source_files"
                  (path, size, mtime_ns of each raw file); "item_id_style" (absent in older
                  files: "digits").

`save` writes into a temporary sibling directory and renames it into place, so a reader never sees
a half-written dataset.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import tempfile
from typing import Any, Mapping

import numpy as np

from rec_t5x import item_ids

FORMAT_VERSION = 1
_ARRAYS = ("user_offsets", "items", "ratings", "timestamps", "item_public_ids")


@dataclasses.dataclass(frozen=True, eq=False)
class RecDataset:
  """A processed interaction dataset with leave-one-out splits.

  Attributes:
    name: dataset name (e.g. "ml1m").
    item_public_ids: int64 [num_items], a permutation of 1..num_items.
    item_titles: [num_items] cleaned titles; "" when the source has none.
    user_offsets: int64 [num_users + 1]; user u's events are [offsets[u], offsets[u + 1]).
    items: int32 [num_interactions], item index, chronological within each user.
    ratings: float32 [num_interactions], NaN when the source has no ratings.
    timestamps: int64 [num_interactions].
    rating_scale: (min, max) or None when the source has no ratings.
    item_raw_ids: [num_items] the source's item ids, or () when unknown.
    user_raw_ids: [num_users] the source's user ids, or () when unknown (never shown in prompts).
    info: JSON-serialisable provenance (source, processing config, read report, statistics).
    item_id_style: how prompts spell public IDs, "digits" (`4821`) or "atomic" (`<i4821>`, one
      vocabulary piece per item); see rec_t5x/item_ids.py. A rendering choice, not data: the
      `<name>_atomic` dataset variants are the same dataset with this set by `with_item_id_style`.
  """
  name: str
  item_public_ids: np.ndarray
  item_titles: tuple[str, ...]
  user_offsets: np.ndarray
  items: np.ndarray
  ratings: np.ndarray
  timestamps: np.ndarray
  rating_scale: tuple[float, float] | None
  item_raw_ids: tuple[str, ...] = ()
  user_raw_ids: tuple[str, ...] = ()
  info: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  item_id_style: str = item_ids.DIGITS
  _index_of_public_id: np.ndarray = dataclasses.field(init=False, repr=False)

  def __post_init__(self):
    _check_array("user_offsets", self.user_offsets, np.int64)
    _check_array("items", self.items, np.int32)
    _check_array("ratings", self.ratings, np.float32)
    _check_array("timestamps", self.timestamps, np.int64)
    _check_array("item_public_ids", self.item_public_ids, np.int64)
    num_items = len(self.item_public_ids)
    n = len(self.items)
    offsets = self.user_offsets
    if len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != n or np.any(np.diff(offsets) < 0):
      raise ValueError(f"RecDataset.user_offsets: expected non-decreasing offsets from 0 to "
                       f"num_interactions={n}, got {offsets[:3]}...{offsets[-3:]}")
    if len(self.ratings) != n or len(self.timestamps) != n:
      raise ValueError(f"RecDataset: items, ratings and timestamps must have the same length, got "
                       f"{n}, {len(self.ratings)}, {len(self.timestamps)}")
    if n and (self.items.min() < 0 or self.items.max() >= num_items):
      raise ValueError(f"RecDataset.items: expected indices in [0, {num_items}), got "
                       f"[{self.items.min()}, {self.items.max()}]")
    if len(self.item_titles) != num_items:
      raise ValueError(f"RecDataset.item_titles: expected {num_items} titles, got "
                       f"{len(self.item_titles)}")
    for field, expected in (("item_raw_ids", num_items), ("user_raw_ids", len(offsets) - 1)):
      value = getattr(self, field)
      if len(value) not in (0, expected):
        raise ValueError(f"RecDataset.{field}: expected {expected} ids or none, got {len(value)}")
    inverse = np.full(num_items + 1, -1, dtype=np.int64)
    valid = (self.item_public_ids >= 1) & (self.item_public_ids <= num_items)
    if valid.all():
      inverse[self.item_public_ids] = np.arange(num_items)
    if not valid.all() or np.any(inverse[1:] < 0):
      raise ValueError(f"RecDataset.item_public_ids: expected a permutation of 1..{num_items}")
    if self.rating_scale is not None:
      low, high = self.rating_scale
      if not low < high:
        raise ValueError(f"RecDataset.rating_scale: expected (min, max) with min < max, got "
                         f"{self.rating_scale}")
    item_ids.check_style(self.item_id_style, "RecDataset.item_id_style")
    object.__setattr__(self, "item_titles", tuple(self.item_titles))
    object.__setattr__(self, "_index_of_public_id", inverse)

  @property
  def num_users(self) -> int:
    return len(self.user_offsets) - 1

  @property
  def num_items(self) -> int:
    return len(self.item_public_ids)

  @property
  def num_interactions(self) -> int:
    return len(self.items)

  @property
  def has_ratings(self) -> bool:
    return self.rating_scale is not None

  def sequence_lengths(self) -> np.ndarray:
    """int64 [num_users], number of events per user."""
    return np.diff(self.user_offsets)

  def _slice(self, user: int) -> slice:
    if not 0 <= user < self.num_users:
      raise IndexError(f"user index {user} out of range [0, {self.num_users})")
    return slice(int(self.user_offsets[user]), int(self.user_offsets[user + 1]))

  def sequence(self, user: int) -> np.ndarray:
    """int32 [length], the user's item indices in chronological order."""
    return self.items[self._slice(user)]

  def sequence_ratings(self, user: int) -> np.ndarray:
    """float32 [length], the user's ratings aligned with `sequence(user)`."""
    return self.ratings[self._slice(user)]

  def sequence_timestamps(self, user: int) -> np.ndarray:
    """int64 [length], the user's timestamps aligned with `sequence(user)`."""
    return self.timestamps[self._slice(user)]

  def train_sequence(self, user: int) -> np.ndarray:
    """int32 [length - 2] (all events when the user has fewer than 3)."""
    sequence = self.sequence(user)
    return sequence[:-2] if len(sequence) >= 3 else sequence

  def validation_item(self, user: int) -> int | None:
    """The second-last item, or None when the user has fewer than 3 events."""
    sequence = self.sequence(user)
    return int(sequence[-2]) if len(sequence) >= 3 else None

  def test_item(self, user: int) -> int | None:
    """The last item, or None when the user has fewer than 3 events."""
    sequence = self.sequence(user)
    return int(sequence[-1]) if len(sequence) >= 3 else None

  def eval_users(self) -> np.ndarray:
    """int64 [num_eval_users], users with a validation and a test item (>= 3 events)."""
    return np.flatnonzero(self.sequence_lengths() >= 3).astype(np.int64)

  def item_index_of_public_id(self, public_id: int) -> int:
    """Item index of a public ID; KeyError naming the id when it is not one."""
    if isinstance(public_id, (bool, np.bool_)) or not isinstance(public_id, (int, np.integer)):
      raise KeyError(f"public item id {public_id!r} is not an integer")
    if not 1 <= public_id <= self.num_items:
      raise KeyError(f"public item id {public_id} is unknown in dataset {self.name!r} "
                     f"(valid ids are 1..{self.num_items})")
    return int(self._index_of_public_id[public_id])

  def public_id_of_item(self, item: int) -> int:
    """Public ID of an item index."""
    return int(self.item_public_ids[item])

  def with_item_id_style(self, style: str, name: str | None = None) -> RecDataset:
    """The same dataset (arrays shared, not copied) with another item-ID style and optionally name."""
    return dataclasses.replace(self, item_id_style=style, name=self.name if name is None else name)

  def without_titles(self, name: str | None = None) -> RecDataset:
    """The same dataset (arrays shared) with every title empty, so prompts show IDs only.

    The `<name>_notitles` variants (rec_t5x/item_ids.py) are this; `info["titles_dropped"]` counts
    the titles left out, so a saved copy says what it lacks.
    """
    dropped = sum(1 for title in self.item_titles if title)
    info = {**self.info, "titles_dropped": dropped}
    return dataclasses.replace(self, item_titles=("",) * self.num_items, info=info,
                               name=self.name if name is None else name)

  def save(self, directory: str | os.PathLike) -> pathlib.Path:
    """Writes the dataset to `directory` (see the module docstring for the format)."""
    return save(self, directory)

  @classmethod
  def load(cls, directory: str | os.PathLike) -> RecDataset:
    """Reads a dataset written by `save`."""
    return load(directory)


def _check_array(field: str, array: Any, dtype) -> None:
  if not isinstance(array, np.ndarray) or array.ndim != 1 or array.dtype != dtype:
    got = f"{type(array).__name__} {getattr(array, 'dtype', '')} {getattr(array, 'shape', '')}"
    raise ValueError(f"RecDataset.{field}: expected a 1-D {np.dtype(dtype)} array, got {got}")


def _escape(value: str) -> str:
  return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _unescape(value: str) -> str:
  out, i = [], 0
  mapping = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}
  while i < len(value):
    char = value[i]
    if char == "\\" and i + 1 < len(value) and value[i + 1] in mapping:
      out.append(mapping[value[i + 1]])
      i += 2
    else:
      out.append(char)
      i += 1
  return "".join(out)


def save(dataset: RecDataset, directory: str | os.PathLike) -> pathlib.Path:
  """Writes `dataset` to `directory` (replaced if it exists) in the format above.

  Returns:
    The directory.
  """
  directory = pathlib.Path(directory)
  directory.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
  try:
    tmp.chmod(0o755)  # mkdtemp creates 0700; the cache is meant to be shared like its parent.
    np.savez(tmp / "sequences.npz", **{name: getattr(dataset, name) for name in _ARRAYS})
    raw_ids = dataset.item_raw_ids or ("",) * dataset.num_items
    with open(tmp / "items.tsv", "w", encoding="utf-8", newline="\n") as f:
      f.write("index\tpublic_id\traw_id\ttitle\n")
      for index, (public, raw, title) in enumerate(
          zip(dataset.item_public_ids.tolist(), raw_ids, dataset.item_titles)):
        f.write(f"{index}\t{public}\t{_escape(raw)}\t{_escape(title)}\n")
    with open(tmp / "users.tsv", "w", encoding="utf-8", newline="\n") as f:
      f.write("index\traw_id\n")
      for index, raw in enumerate(dataset.user_raw_ids):
        f.write(f"{index}\t{_escape(raw)}\n")
    meta = {"format_version": FORMAT_VERSION, "name": dataset.name,
            "num_users": dataset.num_users, "num_items": dataset.num_items,
            "num_interactions": dataset.num_interactions,
            "rating_scale": list(dataset.rating_scale) if dataset.rating_scale else None,
            "has_item_raw_ids": bool(dataset.item_raw_ids),
            "has_user_raw_ids": bool(dataset.user_raw_ids), "info": dict(dataset.info),
            "item_id_style": dataset.item_id_style}
    with open(tmp / "meta.json", "w", encoding="utf-8") as f:
      json.dump(meta, f, indent=1, sort_keys=True)
    if directory.exists():
      shutil.rmtree(directory)
    os.replace(tmp, directory)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return directory


def read_meta(directory: str | os.PathLike) -> dict[str, Any]:
  """Reads and checks `meta.json` of a saved dataset.

  Raises:
    FileNotFoundError: when `directory/meta.json` does not exist.
    ValueError: when the format version is not FORMAT_VERSION.
  """
  path = pathlib.Path(directory) / "meta.json"
  with open(path, encoding="utf-8") as f:
    meta = json.load(f)
  version = meta.get("format_version")
  if version != FORMAT_VERSION:
    raise ValueError(f"{path}: format_version {version!r} is not supported (expected "
                     f"{FORMAT_VERSION}); rebuild the dataset")
  return meta


def _read_tsv(path: pathlib.Path, header: str, num_rows: int) -> list[list[str]]:
  with open(path, encoding="utf-8", newline="\n") as f:
    lines = f.read().split("\n")
  if lines and lines[-1] == "":
    lines.pop()
  if not lines or lines[0] != header:
    raise ValueError(f"{path}:1: expected the header {header!r}")
  rows = [[_unescape(v) for v in line.split("\t")] for line in lines[1:]]
  width = header.count("\t") + 1
  for number, row in enumerate(rows, start=2):
    if len(row) != width:
      raise ValueError(f"{path}:{number}: expected {width} tab-separated fields, got {len(row)}")
  if len(rows) != num_rows:
    raise ValueError(f"{path}: expected {num_rows} rows (meta.json), got {len(rows)}")
  return rows


def load(directory: str | os.PathLike) -> RecDataset:
  """Reads a dataset written by `save`.

  Raises:
    FileNotFoundError: a file of the format is missing (named).
    ValueError: inconsistent files (named, with what was expected).
  """
  directory = pathlib.Path(directory)
  meta = read_meta(directory)
  with np.load(directory / "sequences.npz", allow_pickle=False) as arrays:
    missing = [name for name in _ARRAYS if name not in arrays.files]
    if missing:
      raise ValueError(f"{directory / 'sequences.npz'}: missing arrays {missing}")
    values = {name: arrays[name] for name in _ARRAYS}
  items = _read_tsv(directory / "items.tsv", "index\tpublic_id\traw_id\ttitle", meta["num_items"])
  users = _read_tsv(directory / "users.tsv", "index\traw_id",
                    meta["num_users"] if meta.get("has_user_raw_ids") else 0)
  public_ids = [int(row[1]) for row in items]
  if public_ids != values["item_public_ids"].tolist():
    raise ValueError(f"{directory / 'items.tsv'}: public ids disagree with sequences.npz")
  scale = meta.get("rating_scale")
  return RecDataset(
      name=meta["name"], item_public_ids=values["item_public_ids"],
      item_titles=tuple(row[3] for row in items), user_offsets=values["user_offsets"],
      items=values["items"], ratings=values["ratings"], timestamps=values["timestamps"],
      rating_scale=tuple(scale) if scale else None,
      item_raw_ids=tuple(row[2] for row in items) if meta.get("has_item_raw_ids") else (),
      user_raw_ids=tuple(row[1] for row in users), info=meta.get("info", {}),
      item_id_style=meta.get("item_id_style", item_ids.DIGITS))
