"""Rating prediction: history with ratings + a target item -> the user's rating of it, as text.

Only for datasets with ratings (`ds.has_ratings`). Training positions, validation and test targets
are those of retrieval; the history shows each item with its rating ("4821: Toy Story (1995)
(rated 4)"); the target is the rating as short text ("4", "3.5").
"""
import numpy as np

from rec_t5x.prompts import config as config_lib
from rec_t5x.prompts import items as items_lib
from rec_t5x.prompts import keys as keys_lib
from rec_t5x.prompts import templates

NAME = "rating"
SPLITS = config_lib.SPLITS


def _check_ratings(ds) -> None:
  if not ds.has_ratings or ds.rating_scale is None:
    raise ValueError(f"prompt task 'rating' needs ratings, but dataset {ds.name!r} has none")


def sample_keys(ds, split: str, config: config_lib.SampleConfig) -> np.ndarray:
  """int64 [num_samples] keys of the split (see rec_t5x.prompts.keys)."""
  config_lib.check_split(split, SPLITS, NAME)
  _check_ratings(ds)
  if split == config_lib.TRAIN:
    return keys_lib.train_keys(ds, NAME, config, min_position=1)
  return keys_lib.eval_keys(ds)


def render(ds, key: int, split: str, config: config_lib.SampleConfig, seed: int) -> dict:
  """One sample: {"inputs", "targets", "key", "template_id"}; a pure function of its arguments."""
  config_lib.check_split(split, SPLITS, NAME)
  _check_ratings(ds)
  rng = keys_lib.sample_rng(NAME, split, key, seed)
  ctx = keys_lib.context(ds, key, split, NAME)
  template_id, phrasing = templates.choose(NAME, split, config.eval_templates, rng)
  if not np.isfinite(ctx.target_rating):
    raise ValueError(f"rating/{split}: sample key {key} targets an interaction without a rating")
  history = items_lib.join_rated_items(ds, ctx.history(config.max_history),
                                       ctx.history_ratings(config.max_history))
  low, high = ds.rating_scale
  inputs = phrasing.format(history=history, item=items_lib.item_text(ds, ctx.target),
                           low=items_lib.format_rating(low), high=items_lib.format_rating(high))
  return {
      "inputs": inputs,
      "targets": items_lib.format_rating(ctx.target_rating),
      "key": int(key),
      "template_id": template_id,
  }
