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


def postprocess_item_ids(output: Any, example: Any = None, is_target: bool = False):
  """Decoded text (str or UTF-8 bytes) -> stripped str; a list of beams -> list of str."""
  del example, is_target
  if isinstance(output, (list, tuple, np.ndarray)):
    return [postprocess_item_ids(o) for o in output]
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


class SampledRankingMetricFn:
  """SeqIO score metric_fn `(targets, scores)` of P5's sampled protocol (prefix "sampled/").

  Each score is float [1 + negatives], the positive's log-likelihood first. The positive's rank is
  1 + the number of negatives scoring at least as high (ties count against the model); then
  hr@K, ndcg@K and mrr as in `rec_t5x.metrics`.
  """

  def __init__(self, ks: Sequence[int] = metrics.DEFAULT_RANKING_KS):
    self.ks = tuple(ks)

  def __call__(self, targets, scores) -> dict[str, float]:
    del targets  # the positive is always first
    ranks = np.asarray([1 + int(np.sum(np.asarray(s)[1:] >= np.asarray(s)[0])) for s in scores],
                       np.int64)
    out = {}
    for k in self.ks:
      out[f"sampled/hr@{k}"] = metrics.hr_at_k(ranks, k)
      out[f"sampled/ndcg@{k}"] = metrics.ndcg_at_k(ranks, k)
    out["sampled/mrr"] = metrics.mrr(ranks)
    out["sampled/num_candidates"] = float(np.mean([len(s) for s in scores]))
    return out


class LikelihoodRankingMetricFn:
  """SeqIO predict_with_aux metric_fn: hr/ndcg@K, mrr of `aux_values["ranked_ids"]` (prefix
  "likelihood/"), the candidates ordered by their target log-likelihood."""

  def __init__(self, ks: Sequence[int] = metrics.DEFAULT_RANKING_KS):
    self.ks = tuple(ks)

  def __call__(self, targets, predictions, aux_values) -> dict[str, float]:
    del predictions
    ranked = [list(np.asarray(r).reshape(-1)) for r in aux_values["ranked_ids"]]
    result = metrics.topk_metrics(targets, ranked, self.ks, include_recall=False)
    return {f"likelihood/{k}": v for k, v in result.items()
            if k not in ("invalid_rate", "duplicate_rate")}


class ExpectedRatingMetricFn:
  """SeqIO predict_with_aux metric_fn: RMSE / MAE of `aux_values["expected"]` (prefix
  "expected/"), the expected rating under the model's distribution over the rating strings, and
  the mean probability mass the model puts on them."""

  def __call__(self, targets, predictions, aux_values) -> dict[str, float]:
    del predictions
    true = np.asarray([metrics.parse_rating(t) if not isinstance(t, float) else t for t in targets],
                      np.float64)
    pred = np.asarray(aux_values["expected"], np.float64).reshape(-1)
    return {"expected/rmse": metrics.rmse(true, pred), "expected/mae": metrics.mae(true, pred),
            "expected/mean_mass": float(np.mean(np.asarray(aux_values["mass"], np.float64)))}


def eval_functions(kind: str, dataset_fn: Callable[[], Any]):
  """(postprocess_fn, metric_fns) of a prompt task; (None, []) for the training-only tasks.

  retrieval: generated top-K metrics + P5's sampled protocol (score); ranking: generation +
  likelihood ranking (predict_with_aux); rating: decoded + expected rating (predict_with_aux).
  """
  if kind == "retrieval":
    return postprocess_item_ids, [LazyMetricFn(kind, dataset_fn), SampledRankingMetricFn()]
  if kind == "ranking":
    return postprocess_item_ids, [LazyMetricFn(kind, dataset_fn), LikelihoodRankingMetricFn()]
  if kind == "rating":
    return postprocess_rating, [LazyMetricFn(kind, dataset_fn), ExpectedRatingMetricFn()]
  return None, []
