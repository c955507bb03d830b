"""Small synthetic RecDatasets for prompt and SeqIO tests (built by hand or by hypothesis).

Titles are made of letters only, so every number in a rendered sample is an item ID, a rating or
part of a sentinel; tests parse item mentions out of the text with `mentioned_public_ids`.
"""
import re

import numpy as np
from hypothesis import strategies as st

from rec_t5x.data import dataset as dataset_lib

_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
          "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo")
_MENTION_RE = re.compile(r"(?<![\w<])(\d+):")
_NUMBER_RE = re.compile(r"(?<![\w<])(\d+)(?![\w>])")
_ATOMIC_ID_RE = re.compile(r"<i(\d+)>")  # rec_t5x/item_ids.py's atomic style


def make_dataset(sequences, num_items: int, ratings=None, titles=None, seed: int = 0,
                 name: str = "synthetic", with_ratings: bool = True) -> dataset_lib.RecDataset:
  """A RecDataset from per-user item-index lists.

  Args:
    sequences: list of per-user lists of item indices (chronological).
    num_items: catalogue size.
    ratings: optional per-user lists of ratings; default: (item % 5) + 1.
    titles: optional [num_items] titles; default: two or three words from a fixed list.
    seed: seeds the public-ID permutation.
    name: dataset name.
    with_ratings: False gives NaN ratings and rating_scale None.
  """
  rng = np.random.default_rng(seed)
  lengths = [len(s) for s in sequences]
  offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
  items = np.asarray([i for s in sequences for i in s], dtype=np.int32)
  if with_ratings:
    if ratings is None:
      values = [float(i % 5 + 1) for i in items.tolist()]
    else:
      values = [float(r) for rs in ratings for r in rs]
    ratings_array = np.asarray(values, np.float32)
  else:
    ratings_array = np.full(items.shape, np.nan, np.float32)
  if titles is None:
    titles = tuple(" ".join(_WORDS[(i * 7 + k * 3) % len(_WORDS)] for k in range(2 + i % 2)).title()
                   for i in range(num_items))
  return dataset_lib.RecDataset(
      name=name,
      item_public_ids=(rng.permutation(num_items) + 1).astype(np.int64),
      item_titles=tuple(titles),
      user_offsets=offsets,
      items=items,
      ratings=ratings_array,
      timestamps=np.arange(items.size, dtype=np.int64),
      rating_scale=(1.0, 5.0) if with_ratings else None)


def _digits_spelling(text: str) -> str:
  """Atomic item IDs (`<i4821>`) respelled as digits, so one parser reads both styles."""
  return _ATOMIC_ID_RE.sub(r"\1", text)


def mentioned_public_ids(text: str) -> set[int]:
  """Public IDs shown as items ("4821: ..." or "<i4821>: ...") in a rendered input."""
  return {int(m) for m in _MENTION_RE.findall(_digits_spelling(text))}


def numbers(text: str) -> list[int]:
  """Every free-standing integer of a text (item-ID targets, either style), sentinels excluded."""
  return [int(m) for m in _NUMBER_RE.findall(_digits_spelling(text))]


@st.composite
def datasets(draw, max_users: int = 5, max_length: int = 8, min_free_items: int = 6,
             titles: bool = True):
  """Hypothesis strategy: small RecDatasets with possibly repeated items and short users.

  Every user leaves at least `min_free_items` items never interacted with, so ranking / BPR
  negatives exist.
  """
  num_users = draw(st.integers(1, max_users))
  num_items = draw(st.integers(max_length + min_free_items, max_length + min_free_items + 10))
  sequences = [draw(st.lists(st.integers(0, num_items - 1), min_size=1, max_size=max_length))
               for _ in range(num_users)]
  ratings = [draw(st.lists(st.sampled_from([1.0, 2.0, 3.0, 3.5, 4.0, 5.0]), min_size=len(s),
                           max_size=len(s))) for s in sequences]
  title_list = None
  if not titles:
    title_list = tuple(draw(st.sampled_from(["", "Solo", "Two Words"])) for _ in range(num_items))
  seed = draw(st.integers(0, 2**16))
  return make_dataset(sequences, num_items, ratings=ratings, titles=title_list, seed=seed)


def parse_fields(task: str, template_id: int, inputs: str) -> dict[str, str]:
  """Recovers the field values of a rendered input from its phrasing (an independent parser).

  Args:
    task: prompt task name.
    template_id: the sample's "template_id" (training phrasings first, then held-out ones).
    inputs: the rendered input text.

  Returns:
    {field: value}; AssertionError when the text does not match the phrasing.
  """
  from rec_t5x.prompts import templates  # pylint: disable=g-import-not-at-top
  template_set = templates.TEMPLATES[task]
  phrasing = (template_set.training + template_set.held_out)[template_id]
  pattern, last = "", 0
  for match in re.finditer(r"\{(\w+)\}", phrasing):
    pattern += re.escape(phrasing[last:match.start()]) + f"(?P<{match.group(1)}>.*)"
    last = match.end()
  pattern += re.escape(phrasing[last:])
  found = re.fullmatch(pattern, inputs, flags=re.DOTALL)
  assert found is not None, f"{inputs!r} does not match {task} phrasing {template_id}: {phrasing!r}"
  return found.groupdict()


def split_items(text: str) -> list[str]:
  """The items of a rendered history / candidate list."""
  return text.split("; ") if text else []
