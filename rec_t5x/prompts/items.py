"""How items appear in text, and negatives drawn from items a user never interacted with.

An item is shown as `<public id>: <title>` (`4821: Toy Story (1995)`), or just `<public id>` when
the dataset has no title for it; histories and candidate lists join items with "; ". Targets that
name an item are the bare public ID (`4821`), so a constrained decoder can build a trie over the
ID token sequences. The ID is spelled in the dataset's item-ID style (`ds.item_id_style`,
rec_t5x/item_ids.py): `4821` (digits) or `<i4821>` (atomic, one vocabulary piece per item).
Internal item indices and user indices never appear in text.
"""
import numpy as np

from rec_t5x import item_ids

ITEM_SEPARATOR = "; "
TARGET_SEPARATOR = ", "


def public_id(ds, item: int) -> str:
  """The public ID of an internal item index, as text in the dataset's style ("4821", "<i4821>")."""
  return item_ids.format_id(int(ds.item_public_ids[int(item)]),
                            getattr(ds, "item_id_style", item_ids.DIGITS))


def item_text(ds, item: int) -> str:
  """`<public id>: <title>`, or `<public id>` when the title is empty."""
  title = ds.item_titles[int(item)]
  pid = public_id(ds, item)
  return f"{pid}: {title}" if title else pid


def item_words(ds, item: int) -> tuple[list[str], int]:
  """The words of `item_text` and how many leading words are the ID (1).

  Returns:
    (words, num_id_words): `" ".join(words) == item_text(ds, item)` up to whitespace runs inside
    the title, and `words[:num_id_words]` is the ID word ("4821:" or "4821"; "<i4821>:" in the
    atomic style).
  """
  title_words = ds.item_titles[int(item)].split()
  pid = public_id(ds, item)
  if not title_words:
    return [pid], 1
  return [pid + ":"] + title_words, 1


def join_items(ds, items) -> str:
  """Items rendered with `item_text` and joined with "; "."""
  return ITEM_SEPARATOR.join(item_text(ds, i) for i in items)


def format_rating(value: float) -> str:
  """A rating as short text: 4.0 -> "4", 3.5 -> "3.5"."""
  value = float(value)
  if not np.isfinite(value):
    raise ValueError(f"rating {value} is not finite")
  return str(int(value)) if value == int(value) else f"{value:g}"


def join_rated_items(ds, items, ratings) -> str:
  """Items with their ratings, e.g. "4821: Toy Story (1995) (rated 4); 17: Heat (1995) (rated 3)"."""
  return ITEM_SEPARATOR.join(f"{item_text(ds, i)} (rated {format_rating(r)})"
                             for i, r in zip(items, ratings))


def interacted_items(ds, user: int) -> np.ndarray:
  """Distinct items of the user's whole sequence (train, validation and test): int64 [k], sorted."""
  return np.unique(np.asarray(ds.sequence(user), dtype=np.int64))


def sample_negatives(ds, user: int, num: int, rng: np.random.Generator, task: str) -> np.ndarray:
  """`num` distinct items the user never interacted with anywhere in their sequence.

  Sampling never looks at the split: an item the user meets in validation or test is as excluded as
  one from training, so negatives can neither leak nor contradict held-out items.

  Args:
    ds: a RecDataset.
    user: internal user index.
    num: number of negatives.
    rng: the sample's Generator.
    task: task name, for the error message.

  Returns:
    int64 [num] distinct item indices, in sampling order.
  """
  seen = interacted_items(ds, user)
  available = ds.num_items - seen.size
  if available < num:
    raise ValueError(f"{task}: user {user} of {ds.name!r} interacted with {seen.size} of {ds.num_items} "
                     f"items, leaving {available} possible negatives; {num} are needed (lower "
                     "SampleConfig.num_candidates)")
  if num == 0:
    return np.zeros([0], np.int64)
  if 2 * seen.size >= ds.num_items or available < 4 * num:
    pool = np.setdiff1d(np.arange(ds.num_items, dtype=np.int64), seen, assume_unique=True)
    return rng.choice(pool, size=num, replace=False)
  # Rejection sampling: at least half of the catalogue is eligible, so this ends quickly.
  seen_set = set(seen.tolist())
  chosen: list[int] = []
  chosen_set: set[int] = set()
  while len(chosen) < num:
    for item in rng.integers(0, ds.num_items, size=2 * (num - len(chosen))).tolist():
      if item not in seen_set and item not in chosen_set:
        chosen.append(item)
        chosen_set.add(item)
        if len(chosen) == num:
          break
  return np.asarray(chosen, np.int64)
