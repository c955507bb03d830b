"""Sample keys and the leakage-safe view of a user's sequence that a key selects.

A key is one int64: `user << 24 | position`. For the training split, `position` indexes the user's
`train_sequence` (the item the sample predicts or ends at); for validation / test it is 0 and the
target is `validation_item(u)` / `test_item(u)`. Keys are cheap to enumerate for a whole dataset, so
a SeqIO source is `from_tensor_slices(keys).map(render)` and rendering stays a pure function of
(dataset, key, split, config, seed).

This module is the only place that decides which part of a user's sequence a sample may see:
training windows come from `train_sequence(u)` only; validation sees `train_sequence(u)`; test
sees `train_sequence(u) + [validation_item(u)]`.
"""
import dataclasses
import zlib

import numpy as np

from rec_t5x.prompts import config as config_lib

POSITION_BITS = 24
_POSITION_MASK = (1 << POSITION_BITS) - 1
_SPLIT_CODES = {config_lib.TRAIN: 0, config_lib.VALIDATION: 1, config_lib.TEST: 2}


def encode_key(user: int, position: int) -> int:
  """Packs (user, position) into one non-negative int64 key."""
  if not 0 <= position <= _POSITION_MASK:
    raise ValueError(f"position {position} does not fit in {POSITION_BITS} bits")
  return (int(user) << POSITION_BITS) | int(position)


def decode_key(key: int) -> tuple[int, int]:
  """Returns (user, position) of a key made by `encode_key`."""
  key = int(key)
  if key < 0:
    raise ValueError(f"sample key {key} is negative; keys come from sample_keys()")
  return key >> POSITION_BITS, key & _POSITION_MASK


def sample_rng(task: str, split: str, key: int, seed: int) -> np.random.Generator:
  """A numpy Generator that depends only on (task, split, key, seed)."""
  task_code = zlib.crc32(task.encode("utf-8"))
  return np.random.default_rng([int(seed), task_code, _SPLIT_CODES[split], int(key)])


def train_keys(ds, task: str, config: config_lib.SampleConfig, min_position: int = 1) -> np.ndarray:
  """Keys of every training position t >= min_position of every user (capped per user).

  Args:
    ds: a RecDataset.
    task: task name; makes the capped subsets of different tasks independent.
    config: `max_train_samples_per_user` caps the positions per user (a subset seeded by
      `config.seed`, kept in chronological order).
    min_position: first position that can be a sample (1 = at least one history item).

  Returns:
    int64 [num_samples] keys, grouped by user, chronological within a user.
  """
  cap = config.max_train_samples_per_user
  task_code = zlib.crc32(task.encode("utf-8"))
  parts = []
  for user in range(ds.num_users):
    length = len(ds.train_sequence(user))
    if length > _POSITION_MASK:
      raise ValueError(f"user {user} has {length} training events; keys hold at most {_POSITION_MASK}")
    positions = np.arange(min_position, length, dtype=np.int64)
    if cap is not None and positions.size > cap:
      rng = np.random.default_rng([config.seed, task_code, user])
      positions = np.sort(rng.choice(positions, size=cap, replace=False))
    parts.append((np.int64(user) << POSITION_BITS) | positions)
  if not parts:
    return np.zeros([0], np.int64)
  return np.concatenate(parts).astype(np.int64)


def eval_keys(ds) -> np.ndarray:
  """Keys (position 0) of the users that have a validation and a test item: int64 [num_users']."""
  users = np.asarray(ds.eval_users(), dtype=np.int64)
  return users << POSITION_BITS


@dataclasses.dataclass(frozen=True)
class Context:
  """What a sample may see of one user.

  Attributes:
    user: internal user index (metadata only; never rendered).
    position: training position of the target (0 for validation / test keys).
    visible: int [n] item indices the sample may show, chronological; training: the training
      sequence up to and including the target; validation: the training sequence + the validation
      item; test: training sequence + validation item + test item. The target is `visible[-1]`.
    visible_ratings: float32 [n] ratings aligned with `visible` (NaN without ratings).
    later: int [m] training items after the target (training split only; empty otherwise).
  """
  user: int
  position: int
  visible: np.ndarray
  visible_ratings: np.ndarray
  later: np.ndarray

  @property
  def target(self) -> int:
    return int(self.visible[-1])

  @property
  def target_rating(self) -> float:
    return float(self.visible_ratings[-1])

  def history(self, max_items: int) -> np.ndarray:
    """The last `max_items` items before the target: int [h], most recent last."""
    return self.visible[:-1][-max_items:]

  def history_ratings(self, max_items: int) -> np.ndarray:
    return self.visible_ratings[:-1][-max_items:]


def context(ds, key: int, split: str, task: str, min_position: int = 1) -> Context:
  """The leakage-safe view of the user that `key` selects.

  Args:
    ds: a RecDataset.
    key: a key from `train_keys` (train) or `eval_keys` (validation / test).
    split: "train", "validation" or "test".
    task: task name, for error messages.
    min_position: smallest valid training position for this task.

  Returns:
    The Context of the sample.
  """
  user, position = decode_key(key)
  if not 0 <= user < ds.num_users:
    raise ValueError(f"{task}/{split}: sample key {key} names user {user}, but dataset "
                     f"{ds.name!r} has {ds.num_users} users")
  train = np.asarray(ds.train_sequence(user))
  ratings = np.asarray(ds.sequence_ratings(user), dtype=np.float32)
  if split == config_lib.TRAIN:
    if not min_position <= position < len(train):
      raise ValueError(f"{task}/train: sample key {key} names position {position} of user {user}, whose "
                       f"training sequence has {len(train)} items (valid: {min_position}..{len(train) - 1})")
    return Context(user, position, train[:position + 1], ratings[:position + 1], train[position + 1:])
  if position != 0:
    raise ValueError(f"{task}/{split}: sample key {key} has position {position}; evaluation keys have 0")
  validation_item = ds.validation_item(user)
  test_item = ds.test_item(user)
  if validation_item is None or test_item is None:
    raise ValueError(f"{task}/{split}: user {user} of {ds.name!r} has no validation/test item; "
                     "evaluation keys come from eval_users()")
  n = len(train)
  if split == config_lib.VALIDATION:
    visible = np.append(train, validation_item)
    return Context(user, 0, visible, ratings[:n + 1], np.zeros([0], train.dtype))
  if split == config_lib.TEST:
    visible = np.concatenate([train, [validation_item, test_item]])
    return Context(user, 0, visible, ratings[:n + 2], np.zeros([0], train.dtype))
  raise ValueError(f"{task}: unknown split {split!r}; expected one of {config_lib.SPLITS}")
