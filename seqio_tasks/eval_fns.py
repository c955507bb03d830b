"""Postprocessors and metric functions of the recommendation tasks (wiring of rec_t5x.metrics).

SeqIO calls `postprocess_fn(text, example=..., is_target=...)` on decoded outputs and targets, then
each metric_fn `(targets, predictions) -> dict`. Item-ID tasks keep the text (stripped): the
metrics parse it themselves so that non-ID tokens count in `invalid_rate` instead of being dropped.
Ratings are parsed with `rec_t5x.metrics.parse_rating` (None for unparseable output, which the
rating metrics score as invalid).

The metric functions are built lazily: the catalogue of valid public IDs and the rating scale come
from the dataset, which is loaded on the first evaluation, never at registration.
"""
import threading
from typing import Any, Callable, Sequence

import numpy as np

from rec_t5x import metrics


def postprocess_item_ids(output: Any, example: Any = None, is_target: bool = False) -> str:
  """Decoded text (str or UTF-8 bytes) -> stripped str, for the item-ID metrics."""
  del example, is_target
  if isinstance(output, (bytes, np.bytes_)):
    output = bytes(output).decode("utf-8", errors="replace")
  return str(output).strip()


def postprocess_rating(output: Any, example: Any = None, is_target: bool = False) -> float | None:
  """Decoded text -> rating float, or None when it is not exactly one number."""
  del example, is_target
  return metrics.parse_rating(output)


class LazyMetricFn:
  """A SeqIO metric_fn `(targets, predictions) -> dict` built from the dataset on first call.

  Attributes:
    kind: "retrieval", "ranking" or "rating".
    dataset_fn: zero-argument callable returning the RecDataset (cached by the caller).
  """

  def __init__(self, kind: str, dataset_fn: Callable[[], Any]):
    if kind not in ("retrieval", "ranking", "rating"):
      raise ValueError(f"LazyMetricFn kind {kind!r}: expected 'retrieval', 'ranking' or 'rating'")
    self.kind = kind
    self._dataset_fn = dataset_fn
    self._fn = None
    self._lock = threading.Lock()

  def __repr__(self) -> str:
    return f"LazyMetricFn({self.kind!r})"

  def _build(self):
    ds = self._dataset_fn()
    if self.kind == "retrieval":
      return metrics.make_retrieval_metrics(valid_item_ids=ds.item_public_ids)
    if self.kind == "ranking":
      return metrics.make_ranking_metrics(valid_item_ids=ds.item_public_ids)
    if ds.rating_scale is None:
      raise ValueError(f"rating metrics need a rating scale; dataset {ds.name!r} has none")
    return metrics.make_rating_metrics(scale=ds.rating_scale)

  def __call__(self, targets: Sequence[Any], predictions: Sequence[Any]) -> dict[str, float]:
    with self._lock:
      if self._fn is None:
        self._fn = self._build()
    return self._fn(targets, predictions)


def eval_functions(kind: str, dataset_fn: Callable[[], Any]):
  """(postprocess_fn, metric_fns) of a prompt task; (None, []) for the training-only tasks."""
  if kind in ("retrieval", "ranking"):
    return postprocess_item_ids, [LazyMetricFn(kind, dataset_fn)]
  if kind == "rating":
    return postprocess_rating, [LazyMetricFn(kind, dataset_fn)]
  return None, []
