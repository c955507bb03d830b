"""BPR (Bayesian personalised ranking) as text: history + two items -> the one the user prefers.

Training-only. At training position t the history is train_sequence(u)[:t] (last `max_history`
items); the positive is drawn uniformly from the next `bpr_positive_window` training items
(seq[t], seq[t+1], ...), the negative from items the user never interacted with anywhere in their
sequence; the two are shown in random order and the target is the positive's public ID.
"""
import numpy as np

from rec_t5x.prompts import config as config_lib
from rec_t5x.prompts import items as items_lib
from rec_t5x.prompts import keys as keys_lib
from rec_t5x.prompts import templates

NAME = "bpr"
SPLITS = (config_lib.TRAIN,)


def sample_keys(ds, split: str, config: config_lib.SampleConfig) -> np.ndarray:
  """int64 [num_samples] training keys (see rec_t5x.prompts.keys)."""
  config_lib.check_split(split, SPLITS, NAME)
  return keys_lib.train_keys(ds, NAME, config, min_position=1)


def render(ds, key: int, split: str, config: config_lib.SampleConfig, seed: int) -> dict:
  """One sample: {"inputs", "targets", "key", "template_id"}; a pure function of its arguments."""
  config_lib.check_split(split, SPLITS, NAME)
  rng = keys_lib.sample_rng(NAME, split, key, seed)
  ctx = keys_lib.context(ds, key, split, NAME)
  template_id, phrasing = templates.choose(NAME, split, config.eval_templates, rng)
  later = np.append([ctx.target], ctx.later)[:config.bpr_positive_window]
  positive = int(later[rng.integers(len(later))])
  negative = int(items_lib.sample_negatives(ds, ctx.user, 1, rng, NAME)[0])
  pair = (positive, negative) if rng.integers(2) == 0 else (negative, positive)
  inputs = phrasing.format(history=items_lib.join_items(ds, ctx.history(config.max_history)),
                           item_a=items_lib.item_text(ds, pair[0]),
                           item_b=items_lib.item_text(ds, pair[1]))
  return {
      "inputs": inputs,
      "targets": items_lib.public_id(ds, positive),
      "key": int(key),
      "template_id": template_id,
  }
