"""Masked language modeling (MLM) on item text: a span-corrupted history -> the corrupted spans.

Training-only. The window is train_sequence(u)[:t+1] (the last min(max_history, 50) items, at least
2). Each
item is the words of "<public id>: <title>"; the title words are span-corrupted with T5 sentinels
(rec_t5x.prompts.span_corruption) and the target is the T5 span-corruption target
"<extra_id_0> span <extra_id_1> span ... <extra_id_k>". Item IDs stay intact, so the model must
recall words of the titles that belong to the IDs. When the window has fewer than two title words
(datasets without titles), the ID words are corrupted as well.
"""
import numpy as np

from rec_t5x.prompts import config as config_lib
from rec_t5x.prompts import items as items_lib
from rec_t5x.prompts import keys as keys_lib
from rec_t5x.prompts import span_corruption
from rec_t5x.prompts import templates

NAME = "mlm"
SPLITS = (config_lib.TRAIN,)


def sample_keys(ds, split: str, config: config_lib.SampleConfig) -> np.ndarray:
  """int64 [num_samples] training keys (see rec_t5x.prompts.keys)."""
  config_lib.check_split(split, SPLITS, NAME)
  return keys_lib.train_keys(ds, NAME, config, min_position=1)


def corrupt_history(ds, window, config: config_lib.SampleConfig,
                    rng: np.random.Generator) -> tuple[str, str]:
  """Span-corrupts the title words of `window` (int [n] items, n >= 2).

  Returns:
    (corrupted history text with items joined by "; ", T5 span-corruption target).
  """
  segments, corruptible = [], []
  for item in window:
    words, num_id_words = items_lib.item_words(ds, item)
    segments.append(words)
    corruptible.append([w >= num_id_words for w in range(len(words))])
  if sum(map(sum, corruptible)) < 2:
    corruptible = [[True] * len(words) for words in segments]
  pieces, targets = span_corruption.corrupt(segments, corruptible, config.mlm_noise_density,
                                            config.mlm_mean_span_length, rng)
  return items_lib.ITEM_SEPARATOR.join(pieces), targets


def render(ds, key: int, split: str, config: config_lib.SampleConfig, seed: int) -> dict:
  """One sample: {"inputs", "targets", "key", "template_id"}; a pure function of its arguments."""
  config_lib.check_split(split, SPLITS, NAME)
  rng = keys_lib.sample_rng(NAME, split, key, seed)
  ctx = keys_lib.context(ds, key, split, NAME)
  template_id, phrasing = templates.choose(NAME, split, config.eval_templates, rng)
  window = ctx.visible[-max(2, min(config.max_history, config_lib.MLM_MAX_ITEMS)):]
  history, targets = corrupt_history(ds, window, config, rng)
  return {
      "inputs": phrasing.format(history=history),
      "targets": targets,
      "key": int(key),
      "template_id": template_id,
  }
