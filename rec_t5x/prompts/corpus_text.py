"""Text for training a SentencePiece vocabulary on a dataset.

The corpus holds what the model will read: every item as "<public id>: <title>", every phrasing of
every task (training and held-out, with the fields left empty), and up to `max_samples` rendered
*training* samples (inputs and targets) drawn round-robin from the tasks. Validation and test
samples are left out so that not even the tokenizer has seen a held-out interaction. MLM samples
are left out as well: their sentinels (`<extra_id_i>`) are added to the vocabulary as extra ids
and must not be learned as text.
"""
from typing import Iterator

import numpy as np

from rec_t5x.prompts import bpr
from rec_t5x.prompts import config as config_lib
from rec_t5x.prompts import items as items_lib
from rec_t5x.prompts import mim
from rec_t5x.prompts import ranking
from rec_t5x.prompts import rating
from rec_t5x.prompts import retrieval
from rec_t5x.prompts import templates

_CORPUS_TASKS = (retrieval, ranking, rating, mim, bpr)


def _blank(phrasing: str) -> str:
  return phrasing.format(**{field: "" for field in templates.fields_of(phrasing)})


def corpus(ds, config: config_lib.SampleConfig, max_samples: int) -> Iterator[str]:
  """Yields the vocabulary-training text of `ds`, one string per item / phrasing / sample field.

  Args:
    ds: a RecDataset.
    config: sample configuration (its seed orders the samples).
    max_samples: how many training samples to render in total (>= 0), spread evenly over the
      tasks retrieval, ranking, rating (when the dataset has ratings), mim and bpr.

  Yields:
    Non-empty strings; deterministic for fixed (ds, config, max_samples).
  """
  if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 0:
    raise ValueError(f"corpus(max_samples={max_samples!r}): expected an integer >= 0")
  for item in range(ds.num_items):
    yield items_lib.item_text(ds, item)
  for template_set in templates.TEMPLATES.values():
    for phrasing in template_set.training + template_set.held_out:
      yield _blank(phrasing)
  tasks = [t for t in _CORPUS_TASKS if t is not rating or ds.has_ratings]
  rng = np.random.default_rng([config.seed, 7])
  orders = []
  for task in tasks:
    keys = task.sample_keys(ds, config_lib.TRAIN, config)
    orders.append(keys[rng.permutation(keys.size)])
  produced, position = 0, 0
  while produced < max_samples and any(position < keys.size for keys in orders):
    for task, keys in zip(tasks, orders):
      if position >= keys.size or produced >= max_samples:
        continue
      sample = task.render(ds, int(keys[position]), config_lib.TRAIN, config, config.seed)
      yield sample["inputs"]
      yield sample["targets"]
      produced += 1
    position += 1
