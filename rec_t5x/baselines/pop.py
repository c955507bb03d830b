"""Pop: rank items by how often they occur in the training part of all users' sequences.

Every training interaction counts (RecBole's stock Pop counts an item at most once per training
batch, papers.md §5). Validation and test items are never counted. The ranking is the same for
every user; the user's own prefix is masked by `evaluation.evaluate` like for every model, and
ties are broken by item index.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from rec_t5x.baselines import common
from rec_t5x.baselines import evaluation
from rec_t5x.baselines import sampling
from rec_t5x.data import dataset as dataset_lib


@dataclasses.dataclass(frozen=True)
class PopConfig:
  """Pop has nothing to configure; the class exists so every model has a config in gin."""


def item_counts(ds: dataset_lib.RecDataset) -> np.ndarray:
  """int64 [num_items], the number of training interactions of each item."""
  keep = sampling.training_mask(ds)
  return np.bincount(ds.items[keep], minlength=ds.num_items).astype(np.int64)


def make_scorer(counts: np.ndarray) -> evaluation.Scorer:
  """A scorer giving every row the item counts as scores ([chunk, num_items] float32)."""
  scores = counts.astype(np.float32)

  def scorer(rows: np.ndarray) -> np.ndarray:
    return np.broadcast_to(scores, (len(rows), len(scores)))

  return scorer


def train(ds: dataset_lib.RecDataset, config: PopConfig, train_config: common.TrainConfig,
          log: common.Log = print) -> common.TrainedModel:
  """Counts training interactions.

  Args:
    ds: the dataset.
    config: `PopConfig()`.
    train_config: only `eval_batch_size` and `top_n` are used (for the reported validation score).
    log: progress lines.

  Returns:
    The `TrainedModel`; embeddings hold "item_counts" int64 [num_items].
  """
  del config
  start = time.perf_counter()
  counts = item_counts(ds)
  split = evaluation.make_split(ds, "validation")
  result = evaluation.evaluate(make_scorer(counts), split, ds.num_items,
                               train_config.eval_batch_size, train_config.top_n)
  log(f"pop: {int(counts.sum())} training interactions counted; validation ndcg@10 "
      f"{result.metrics['ndcg@10']:.4f}")
  fit = common.no_training_fit(time.perf_counter() - start, result.metrics["ndcg@10"])
  return common.TrainedModel(name="pop", make_scorer=lambda split: make_scorer(counts), fit=fit,
                             embeddings={"item_counts": counts})
