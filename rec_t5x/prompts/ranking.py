"""Ranking: history + shuffled candidates -> the public ID of the positive candidate.

The candidates are the item the user interacts with next (the positive) and
`num_candidates - 1` negatives drawn uniformly from items the user never interacted with anywhere
in their sequence (training, validation or test), in random order. Splits and histories are those
of retrieval.
"""
import numpy as np

from rec_t5x.prompts import config as config_lib
from rec_t5x.prompts import items as items_lib
from rec_t5x.prompts import keys as keys_lib
from rec_t5x.prompts import templates

NAME = "ranking"
SPLITS = config_lib.SPLITS


def sample_keys(ds, split: str, config: config_lib.SampleConfig) -> np.ndarray:
  """int64 [num_samples] keys of the split (see rec_t5x.prompts.keys)."""
  config_lib.check_split(split, SPLITS, NAME)
  if split == config_lib.TRAIN:
    return keys_lib.train_keys(ds, NAME, config, min_position=1)
  return keys_lib.eval_keys(ds)


def candidates(ds, ctx: keys_lib.Context, config: config_lib.SampleConfig,
               rng: np.random.Generator) -> np.ndarray:
  """The positive and the negatives in random order: int64 [num_candidates]."""
  negatives = items_lib.sample_negatives(ds, ctx.user, config.num_candidates - 1, rng, NAME)
  return rng.permutation(np.append(negatives, ctx.target).astype(np.int64))


def render(ds, key: int, split: str, config: config_lib.SampleConfig, seed: int) -> dict:
  """One sample: {"inputs", "targets", "key", "template_id"}; a pure function of its arguments."""
  config_lib.check_split(split, SPLITS, NAME)
  rng = keys_lib.sample_rng(NAME, split, key, seed)
  ctx = keys_lib.context(ds, key, split, NAME)
  template_id, phrasing = templates.choose(NAME, split, config.eval_templates, rng)
  history = items_lib.join_items(ds, ctx.history(config.max_history))
  shown = items_lib.join_items(ds, candidates(ds, ctx, config, rng))
  return {
      "inputs": phrasing.format(history=history, candidates=shown),
      "targets": items_lib.public_id(ds, ctx.target),
      "key": int(key),
      "template_id": template_id,
  }
