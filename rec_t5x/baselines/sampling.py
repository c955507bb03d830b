"""Training interactions and uniform negative sampling for the pairwise (BPR) baselines.

Written here because the sampling must exclude each user's own training items exactly; a sorted
array of `user * num_items + item` keys and `np.searchsorted` does that in vectorised numpy
without a dense [users, items] matrix (too large for the Amazon datasets).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from rec_t5x.data import dataset as dataset_lib

MAX_RESAMPLE_ROUNDS = 10


def training_mask(ds: dataset_lib.RecDataset) -> np.ndarray:
  """bool [num_interactions], True for events in some user's `train_sequence`.

  The last two events of users with >= 3 events are held out (validation, test); users with
  fewer keep everything in training, as `RecDataset.train_sequence` does.
  """
  lengths = ds.sequence_lengths()
  users = np.repeat(np.arange(ds.num_users), lengths)
  position = np.arange(ds.num_interactions) - ds.user_offsets[users]
  held_out = np.where(lengths >= 3, 2, 0)
  return position < (lengths - held_out)[users]


@dataclasses.dataclass(frozen=True)
class Interactions:
  """Training (user, item) pairs, one per training event, and their distinct keys.

  Attributes:
    users: int32 [num_pairs].
    items: int32 [num_pairs].
    num_users / num_items: sizes of the index spaces.
    keys: int64 [distinct pairs] sorted `user * num_items + item`.
  """
  users: np.ndarray
  items: np.ndarray
  num_users: int
  num_items: int
  keys: np.ndarray

  @property
  def num_pairs(self) -> int:
    return len(self.users)


def training_interactions(ds: dataset_lib.RecDataset) -> Interactions:
  """Every training event of every user as a (user, item) pair (repeats kept)."""
  keep = training_mask(ds)
  users = np.repeat(np.arange(ds.num_users, dtype=np.int32), ds.sequence_lengths())[keep]
  items = ds.items[keep].astype(np.int32)
  if users.size == 0:
    raise ValueError(f"dataset {ds.name!r} has no training interactions")
  keys = np.unique(users.astype(np.int64) * ds.num_items + items)
  return Interactions(users=users, items=items, num_users=ds.num_users, num_items=ds.num_items,
                      keys=keys)


def is_positive(inter: Interactions, users: np.ndarray, items: np.ndarray) -> np.ndarray:
  """bool [n]: whether each (user, item) is a training interaction."""
  keys = users.astype(np.int64) * inter.num_items + items
  pos = np.minimum(np.searchsorted(inter.keys, keys), len(inter.keys) - 1)
  return inter.keys[pos] == keys


def sample_negatives(inter: Interactions, users: np.ndarray,
                     rng: np.random.Generator) -> tuple[np.ndarray, int]:
  """One uniformly sampled item per user that the user has not interacted with in training.

  Collisions with training items are re-drawn up to MAX_RESAMPLE_ROUNDS times; the few left (users
  who trained on most of the catalogue) are drawn exactly from the user's complement. A user who
  trained on every item keeps a collision, which is counted, not hidden.

  Args:
    inter: the training interactions.
    users: int [n] users to sample for.
    rng: numpy generator.

  Returns:
    (negatives int32 [n], number of negatives that are still training positives).
  """
  negatives = rng.integers(0, inter.num_items, size=len(users), dtype=np.int32)
  bad = np.flatnonzero(is_positive(inter, users, negatives))
  for _ in range(MAX_RESAMPLE_ROUNDS):
    if bad.size == 0:
      break
    negatives[bad] = rng.integers(0, inter.num_items, size=bad.size, dtype=np.int32)
    bad = bad[is_positive(inter, users[bad], negatives[bad])]
  collisions = 0
  for index in bad:
    user = int(users[index])
    lo, hi = np.searchsorted(inter.keys, [user * inter.num_items, (user + 1) * inter.num_items])
    unseen = np.setdiff1d(np.arange(inter.num_items), inter.keys[lo:hi] - user * inter.num_items)
    if unseen.size:
      negatives[index] = rng.choice(unseen)
    else:
      collisions += 1
  return negatives, collisions
