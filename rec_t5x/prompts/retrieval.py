"""Retrieval: a user's history -> the public ID of the next item.

Training samples: every position t >= 1 of `train_sequence(u)` predicts seq[t] from seq[:t] (the
last `max_history` items). Validation predicts `validation_item(u)` from the training sequence;
test predicts `test_item(u)` from the training sequence plus the validation item.
"""
import numpy as np

from rec_t5x.prompts import config as config_lib
from rec_t5x.prompts import items as items_lib
from rec_t5x.prompts import keys as keys_lib
from rec_t5x.prompts import templates

NAME = "retrieval"
SPLITS = config_lib.SPLITS


def sample_keys(ds, split: str, config: config_lib.SampleConfig) -> np.ndarray:
  """int64 [num_samples] keys of the split (see rec_t5x.prompts.keys)."""
  config_lib.check_split(split, SPLITS, NAME)
  if split == config_lib.TRAIN:
    return keys_lib.train_keys(ds, NAME, config, min_position=1)
  return keys_lib.eval_keys(ds)


def render(ds, key: int, split: str, config: config_lib.SampleConfig, seed: int) -> dict:
  """One sample: {"inputs", "targets", "key", "template_id"}; a pure function of its arguments."""
  config_lib.check_split(split, SPLITS, NAME)
  rng = keys_lib.sample_rng(NAME, split, key, seed)
  ctx = keys_lib.context(ds, key, split, NAME)
  template_id, phrasing = templates.choose(NAME, split, config.eval_templates, rng)
  history = items_lib.join_items(ds, ctx.history(config.max_history))
  return {
      "inputs": phrasing.format(history=history),
      "targets": items_lib.public_id(ds, ctx.target),
      "key": int(key),
      "template_id": template_id,
  }
