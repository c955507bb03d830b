"""Masked item modeling (MIM, after BERT4Rec): a history with items masked -> the masked items' IDs.

Training-only. A sample at training position t takes the window train_sequence(u)[:t+1] (the
last max(2, max_history) items; t >= 1 guarantees two), replaces round(mim_mask_rate * window) of
its items (at least 1, at most `mim_max_masks`, always leaving one visible) by "[MASK]", and asks
for their public IDs in order of appearance, joined by ", ".
"""
import numpy as np

from rec_t5x.prompts import config as config_lib
from rec_t5x.prompts import items as items_lib
from rec_t5x.prompts import keys as keys_lib
from rec_t5x.prompts import templates

NAME = "mim"
SPLITS = (config_lib.TRAIN,)


def sample_keys(ds, split: str, config: config_lib.SampleConfig) -> np.ndarray:
  """int64 [num_samples] training keys (see rec_t5x.prompts.keys)."""
  config_lib.check_split(split, SPLITS, NAME)
  return keys_lib.train_keys(ds, NAME, config, min_position=1)


def mask_positions(window_length: int, config: config_lib.SampleConfig,
                   rng: np.random.Generator) -> np.ndarray:
  """Sorted positions to mask in a window of `window_length` >= 2 items: int64 [num_masks]."""
  num = int(round(config.mim_mask_rate * window_length))
  num = int(np.clip(num, 1, min(config.mim_max_masks, window_length - 1)))
  return np.sort(rng.choice(window_length, size=num, replace=False)).astype(np.int64)


def render(ds, key: int, split: str, config: config_lib.SampleConfig, seed: int) -> dict:
  """One sample: {"inputs", "targets", "key", "template_id"}; a pure function of its arguments."""
  config_lib.check_split(split, SPLITS, NAME)
  rng = keys_lib.sample_rng(NAME, split, key, seed)
  ctx = keys_lib.context(ds, key, split, NAME)
  template_id, phrasing = templates.choose(NAME, split, config.eval_templates, rng)
  window = ctx.visible[-max(2, config.max_history):]
  masked = mask_positions(len(window), config, rng)
  masked_set = set(masked.tolist())
  shown = [templates.MASK if p in masked_set else items_lib.item_text(ds, item)
           for p, item in enumerate(window)]
  return {
      "inputs": phrasing.format(history=items_lib.ITEM_SEPARATOR.join(shown)),
      "targets": items_lib.TARGET_SEPARATOR.join(items_lib.public_id(ds, window[p]) for p in masked),
      "key": int(key),
      "template_id": template_id,
  }
