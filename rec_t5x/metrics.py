"""Recommendation metrics for generated item ids and ratings, usable as SeqIO `metric_fns`.

Top-K metrics follow the leave-one-out protocol: every example has exactly one relevant item (the held-out
validation or test item), and the model emits a ranked list of public item ids, best first (one string
"4821", one string "4821; 17; 90", a list of beam-search outputs, or already-parsed ints). Ratings are
scored with RMSE and MAE on the dataset's rating scale.

Layers:
  * pure numpy cores over 1-based ranks: `ranks_of_targets`, `rank_of_target`, `recall_at_k`,
    `hr_at_k`, `ndcg_at_k`, `mrr`, plus `rmse` and `mae`;
  * postprocessors: `parse_item_ids` and `parse_rating`;
  * SeqIO metric functions `fn(targets, predictions) -> dict[str, float]`: `retrieval_metrics`,
    `ranking_metrics`, `rating_metrics` and the factories `make_retrieval_metrics`,
    `make_ranking_metrics`, `make_rating_metrics`.

Conventions (identical in every metric function):
  * A rank is 1-based; rank 0 means the target is not in the list (a miss).
  * Duplicates in a ranked list count once, at their first position; later copies are removed, so the
    items after them move up. The removed copies are reported as `duplicate_rate`.
  * An invalid candidate (text that is not exactly one id, `4821` or `<i4821>`, or an id outside
    `valid_item_ids`)
    can never be a hit but keeps its position: a wasted slot still pushes the target down.
    `invalid_rate` is the share of predicted candidates that were invalid; an empty prediction counts
    as one invalid candidate, so a single-string prediction gives the per-example rate.
  * Nothing is dropped silently: every example is scored (misses score 0) and the counts above are
    returned as metrics.

Written here rather than taken from RecBole (PyTorch, full-sort score matrices) or seqio.metrics (text
metrics only): generated id lists need the parsing, deduplication and invalid-output accounting above.
Explicit dtypes throughout (no `np.float`, cf. RecBole issue #1604).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
import math
import re
from typing import Any

import numpy as np

from rec_t5x import item_ids

# Marks an invalid candidate inside an id array (public item ids are >= 1).
INVALID_ID = -1
# Pads ranked lists of different lengths to one matrix; a padding slot is not a candidate.
PAD_ID = -2

DEFAULT_RETRIEVAL_KS = (5, 10, 20)
DEFAULT_RANKING_KS = (1, 5, 10)
DEFAULT_RATING_SCALE = (1.0, 5.0)

_SEPARATORS = re.compile(r"[;,\s]+")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")

MetricFn = Callable[[Sequence[Any], Sequence[Any]], dict[str, float]]


# ---------------------------------------------------------------------------------------------
# Numpy cores.
# ---------------------------------------------------------------------------------------------


def ranks_of_targets(ranked: np.ndarray, targets: np.ndarray) -> np.ndarray:
  """1-based rank of each example's target in its ranked list, after removing duplicates.

  Vectorised over examples; the pairwise duplicate test costs O(batch * length^2), which is small
  for beam widths and candidate lists (length <= a few hundred).

  Args:
    ranked: int [batch, length] item ids, best first. `INVALID_ID` (-1) marks an invalid candidate
      (it keeps its position but never matches), `PAD_ID` (-2) marks padding after the end of a
      shorter list (it takes no position). Other negative values are not allowed.
    targets: int [batch] the relevant item id of each example (>= 0).

  Returns:
    int64 [batch]: the target's position among the first occurrences of the candidates (1 = best),
    or 0 when the target is not in the list.
  """
  ranked = np.asarray(ranked, dtype=np.int64)
  targets = np.asarray(targets, dtype=np.int64)
  if ranked.ndim != 2 or targets.shape != (ranked.shape[0],):
    raise ValueError(f"ranked must be [batch, length] and targets [batch]; got ranked shape "
                     f"{ranked.shape} and targets shape {targets.shape}")
  if np.any(ranked < PAD_ID):
    raise ValueError(f"ranked ids must be >= {PAD_ID} (-1 invalid, -2 padding); got min {ranked.min()}")
  if np.any(targets < 0):
    raise ValueError(f"targets must be >= 0; got min {targets.min()}")
  length = ranked.shape[1]
  if length == 0:
    return np.zeros(ranked.shape[0], dtype=np.int64)
  same = ranked[:, :, None] == ranked[:, None, :]  # [batch, length, length]
  earlier = np.tril(np.ones((length, length), dtype=bool), k=-1)  # earlier[j, i]: i < j
  duplicate = np.any(same & earlier[None], axis=2) & (ranked >= 0)
  occupies = (ranked != PAD_ID) & ~duplicate
  position = np.cumsum(occupies, axis=1, dtype=np.int64)  # [batch, length]
  match = (ranked == targets[:, None]) & ~duplicate
  found = np.any(match, axis=1)
  first = np.argmax(match, axis=1)
  return np.where(found, position[np.arange(ranked.shape[0]), first], 0).astype(np.int64)


def rank_of_target(ranked: Sequence[int] | np.ndarray, target: int) -> int:
  """1-based rank of `target` in one ranked list after removing duplicates; 0 when absent.

  Args:
    ranked: int [length] item ids, best first; `INVALID_ID` (-1) marks an invalid candidate.
    target: the relevant item id.

  Returns:
    The rank (1 = best), or 0 for a miss.
  """
  row = np.asarray(ranked, dtype=np.int64).reshape(1, -1)
  return int(ranks_of_targets(row, np.asarray([target], dtype=np.int64))[0])


def _check_ranks(ranks: np.ndarray, k: int | None = None) -> np.ndarray:
  ranks = np.asarray(ranks, dtype=np.int64)
  if ranks.ndim != 1 or ranks.size == 0:
    raise ValueError(f"ranks must be a non-empty 1-D array; got shape {ranks.shape}")
  if np.any(ranks < 0):
    raise ValueError(f"ranks must be >= 0 (0 = miss); got min {ranks.min()}")
  if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1):
    raise ValueError(f"k must be an integer >= 1; got {k!r}")
  return ranks


def hit_at_k(ranks: np.ndarray, k: int) -> np.ndarray:
  """Per-example hit indicator: float64 [batch], 1.0 where 1 <= rank <= k, else 0.0."""
  ranks = _check_ranks(ranks, k)
  return ((ranks >= 1) & (ranks <= k)).astype(np.float64)


def hr_at_k(ranks: np.ndarray, k: int) -> float:
  r"""Hit ratio at K.

  .. math:: \mathrm{HR@K} = \frac{1}{|U|} \sum_{u \in U} \delta(\hat{R}_u(K) \cap R_u \neq \emptyset)

  where :math:`\hat{R}_u(K)` is the top-K list of example u and :math:`R_u` its relevant items.
  Reference: Deshpande & Karypis, "Item-based top-N recommendation algorithms", TOIS 2004;
  RecBole `Hit`.

  Args:
    ranks: int [batch] 1-based ranks of the relevant item, 0 for a miss.
    k: cut-off K >= 1.

  Returns:
    The mean over examples, in [0, 1].
  """
  return float(np.mean(hit_at_k(ranks, k), dtype=np.float64))


def recall_at_k(ranks: np.ndarray, k: int) -> float:
  r"""Recall at K.

  .. math:: \mathrm{Recall@K} = \frac{1}{|U|} \sum_{u \in U} \frac{|\hat{R}_u(K) \cap R_u|}{|R_u|}

  Under leave-one-out :math:`|R_u| = 1`, so Recall@K equals HR@K exactly; both names are reported
  because papers use either. Reference: RecBole `Recall` (Zhao et al., "RecBole", CIKM 2021).

  Args:
    ranks: int [batch] 1-based ranks of the single relevant item, 0 for a miss.
    k: cut-off K >= 1.

  Returns:
    The mean over examples, in [0, 1].
  """
  return hr_at_k(ranks, k)


def ndcg_at_k(ranks: np.ndarray, k: int) -> float:
  r"""Normalised discounted cumulative gain at K with binary relevance.

  .. math::
     \mathrm{NDCG@K} = \frac{1}{|U|} \sum_{u \in U} \frac{1}{\mathrm{IDCG}_u}
       \sum_{i=1}^{K} \frac{\delta(\hat{R}_{u,i} \in R_u)}{\log_2(i + 1)}

  With one relevant item the ideal DCG is 1, so an example contributes
  :math:`1 / \log_2(\mathrm{rank} + 1)` when rank <= K and 0 otherwise.
  Reference: Järvelin & Kekäläinen, "Cumulated gain-based evaluation of IR techniques", TOIS 2002;
  RecBole `NDCG`.

  Args:
    ranks: int [batch] 1-based ranks of the single relevant item, 0 for a miss.
    k: cut-off K >= 1.

  Returns:
    The mean over examples, in [0, 1].
  """
  hits = hit_at_k(ranks, k)
  safe = np.maximum(np.asarray(ranks, dtype=np.float64), 1.0)
  return float(np.mean(hits / np.log2(safe + 1.0), dtype=np.float64))


def mrr(ranks: np.ndarray, k: int | None = None) -> float:
  r"""Mean reciprocal rank, over the whole list or cut at K.

  .. math:: \mathrm{MRR} = \frac{1}{|U|} \sum_{u \in U} \frac{1}{\mathrm{rank}_u}

  where a missed (or, with K, a rank > K) item contributes 0.
  Reference: Voorhees, "The TREC-8 question answering track report", 1999; RecBole `MRR`.

  Args:
    ranks: int [batch] 1-based ranks of the single relevant item, 0 for a miss.
    k: optional cut-off K >= 1; None scores the whole predicted list.

  Returns:
    The mean over examples, in [0, 1].
  """
  ranks = _check_ranks(ranks, k)
  keep = ranks >= 1 if k is None else (ranks >= 1) & (ranks <= k)
  reciprocal = np.where(keep, 1.0 / np.maximum(ranks, 1).astype(np.float64), 0.0)
  return float(np.mean(reciprocal, dtype=np.float64))


def rmse(targets: np.ndarray, predictions: np.ndarray) -> float:
  r"""Root mean squared error.

  .. math:: \mathrm{RMSE} = \sqrt{\frac{1}{|S|} \sum_{(u,i) \in S} (\hat{r}_{u,i} - r_{u,i})^2}

  Reference: RecBole `RMSE`. Returns NaN for empty input.

  Args:
    targets: float [batch] true ratings.
    predictions: float [batch] predicted ratings.
  """
  err = np.asarray(predictions, dtype=np.float64) - np.asarray(targets, dtype=np.float64)
  return float(np.sqrt(np.mean(np.square(err)))) if err.size else math.nan


def mae(targets: np.ndarray, predictions: np.ndarray) -> float:
  r"""Mean absolute error.

  .. math:: \mathrm{MAE} = \frac{1}{|S|} \sum_{(u,i) \in S} |\hat{r}_{u,i} - r_{u,i}|

  Reference: RecBole `MAE`. Returns NaN for empty input.

  Args:
    targets: float [batch] true ratings.
    predictions: float [batch] predicted ratings.
  """
  err = np.asarray(predictions, dtype=np.float64) - np.asarray(targets, dtype=np.float64)
  return float(np.mean(np.abs(err))) if err.size else math.nan


# ---------------------------------------------------------------------------------------------
# Postprocessors.
# ---------------------------------------------------------------------------------------------


def _as_text(value: Any) -> str:
  if isinstance(value, (bytes, np.bytes_)):
    return bytes(value).decode("utf-8", errors="replace")
  return str(value)


def _split_tokens(text: Any) -> list[str]:
  return [tok for tok in _SEPARATORS.split(_as_text(text).strip()) if tok]


def parse_item_ids(text: str | bytes) -> list[int]:
  """Parses a generated list of item ids, keeping the order.

  Items are separated by ';', ',' or whitespace ("12; 7, 93 4" -> [12, 7, 93, 4]); an ID may be
  spelled in either item-ID style ("<i12>" -> 12, rec_t5x/item_ids.py). Tokens that are not IDs
  are left out here; use `retrieval_metrics` (which counts them as invalid) to score.

  Args:
    text: decoded model output (str or UTF-8 bytes).

  Returns:
    The parsed ids, best first; [] when nothing parses.
  """
  ids = (item_ids.parse_id(tok) for tok in _split_tokens(text))
  return [i for i in ids if i is not None]


def parse_rating(text: str | bytes | float | int) -> float | None:
  """Parses a generated rating such as "4", "4.5" or " 3.0 ".

  Args:
    text: decoded model output, or an already-numeric value.

  Returns:
    The rating as a float, or None when the text is not exactly one finite number.
  """
  if isinstance(text, (bool, np.bool_)):
    return None
  if isinstance(text, (int, float, np.integer, np.floating)):
    value = float(text)
  else:
    stripped = _as_text(text).strip()
    if not _NUMBER.fullmatch(stripped):
      return None
    value = float(stripped)
  return value if math.isfinite(value) else None


# ---------------------------------------------------------------------------------------------
# From SeqIO targets / predictions to ids.
# ---------------------------------------------------------------------------------------------


def _candidate_id(value: Any, valid: Collection[int] | None) -> int:
  """One candidate (a beam output or an int) -> its id, or INVALID_ID."""
  if isinstance(value, (bool, np.bool_)):
    return INVALID_ID
  if isinstance(value, (int, np.integer)):
    item = int(value)
  else:
    tokens = _split_tokens(value)
    parsed = item_ids.parse_id(tokens[0]) if len(tokens) == 1 else None
    if parsed is None:
      return INVALID_ID
    item = parsed
  if item < 0 or (valid is not None and item not in valid):
    return INVALID_ID
  return item


def prediction_to_ids(prediction: Any, valid_item_ids: Collection[int] | None = None) -> list[int]:
  """Converts one SeqIO prediction into a ranked id list with `INVALID_ID` for invalid candidates.

  Args:
    prediction: a string/bytes (split into candidates by ';', ',' or whitespace), an int, or a
      sequence (list, tuple, 1-D array) whose elements are single candidates, best first (e.g. the
      decoded beams). A list element that is not exactly one integer is one invalid candidate.
    valid_item_ids: optional catalogue; ids outside it are invalid.

  Returns:
    int ids, best first; an empty prediction gives [INVALID_ID] (one wasted, invalid slot).
  """
  if isinstance(prediction, (str, bytes, np.str_, np.bytes_)):
    candidates: Sequence[Any] = _split_tokens(prediction)
  elif isinstance(prediction, (int, np.integer)) and not isinstance(prediction, (bool, np.bool_)):
    candidates = [prediction]
  elif isinstance(prediction, (Sequence, np.ndarray)):
    candidates = list(np.asarray(prediction, dtype=object).reshape(-1))
  else:
    candidates = [prediction]
  ids = [_candidate_id(c, valid_item_ids) for c in candidates]
  return ids or [INVALID_ID]


def target_to_id(target: Any, index: int) -> int:
  """Converts one SeqIO target (str "4821", int, or a one-element list) into the relevant item id.

  Raises:
    ValueError: naming the example index when the target is not exactly one non-negative integer
      (a broken target is a data bug, not a model miss).
  """
  value = target
  if isinstance(target, (Sequence, np.ndarray)) and not isinstance(target, (str, bytes)):
    flat = list(np.asarray(target, dtype=object).reshape(-1))
    value = flat[0] if len(flat) == 1 else None
  item = INVALID_ID if value is None else _candidate_id(value, None)
  if item == INVALID_ID:
    raise ValueError(f"target of example {index} must be exactly one non-negative item id; got {target!r}")
  return item


def _ranked_matrix(rows: Sequence[Sequence[int]]) -> np.ndarray:
  length = max(len(r) for r in rows)
  ranked = np.full((len(rows), length), PAD_ID, dtype=np.int64)
  for i, row in enumerate(rows):
    ranked[i, :len(row)] = row
  return ranked


def _check_ks(ks: Iterable[int]) -> tuple[int, ...]:
  ks = tuple(ks)
  if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in ks):
    raise ValueError(f"ks must be a non-empty sequence of integers >= 1; got {ks!r}")
  return tuple(sorted(set(int(k) for k in ks)))


def _check_lengths(targets: Sequence[Any], predictions: Sequence[Any]) -> int:
  if len(targets) != len(predictions):
    raise ValueError(f"got {len(targets)} targets but {len(predictions)} predictions")
  if len(targets) == 0:
    raise ValueError("no examples to score: targets and predictions are empty")
  return len(targets)


def topk_metrics(targets: Sequence[Any], predictions: Sequence[Any], ks: Iterable[int],
                 valid_item_ids: Collection[int] | None = None,
                 include_recall: bool = True) -> dict[str, float]:
  """Scores ranked id predictions against one relevant item per example.

  Args:
    targets: [batch] relevant item ids (see `target_to_id`).
    predictions: [batch] predictions (see `prediction_to_ids`).
    ks: cut-offs K.
    valid_item_ids: optional catalogue of valid public ids.
    include_recall: also report `recall@K` (== `hr@K` under leave-one-out).

  Returns:
    {"hr@K", "ndcg@K" (and "recall@K") for each K, "mrr", "invalid_rate", "duplicate_rate",
     "num_examples"} as floats.
  """
  ks = _check_ks(ks)
  _check_lengths(targets, predictions)
  valid = None if valid_item_ids is None else frozenset(int(i) for i in valid_item_ids)
  target_ids = np.asarray([target_to_id(t, i) for i, t in enumerate(targets)], dtype=np.int64)
  rows = [prediction_to_ids(p, valid) for p in predictions]
  ranked = _ranked_matrix(rows)
  ranks = ranks_of_targets(ranked, target_ids)
  num_candidates = sum(len(r) for r in rows)
  num_invalid = sum(r.count(INVALID_ID) for r in rows)
  num_duplicates = sum(
      len([i for i in r if i != INVALID_ID]) - len({i for i in r if i != INVALID_ID}) for r in rows)
  out: dict[str, float] = {}
  for k in ks:
    if include_recall:
      out[f"recall@{k}"] = recall_at_k(ranks, k)
    out[f"hr@{k}"] = hr_at_k(ranks, k)
    out[f"ndcg@{k}"] = ndcg_at_k(ranks, k)
  out["mrr"] = mrr(ranks)
  out["invalid_rate"] = num_invalid / num_candidates
  out["duplicate_rate"] = num_duplicates / num_candidates
  out["num_examples"] = float(len(rows))
  return out


# ---------------------------------------------------------------------------------------------
# SeqIO metric functions.
# ---------------------------------------------------------------------------------------------


def retrieval_metrics(targets: Sequence[Any], predictions: Sequence[Any],
                      ks: Iterable[int] = DEFAULT_RETRIEVAL_KS) -> dict[str, float]:
  """SeqIO metric_fn for next-item retrieval: recall@K, hr@K, ndcg@K, mrr, invalid/duplicate rates.

  Every id >= 0 counts as valid; use `make_retrieval_metrics(ks, valid_item_ids)` to restrict ids to
  the catalogue. See the module docstring for the ranking conventions.

  Args:
    targets: [batch] relevant item ids ("4821", 4821 or ["4821"]).
    predictions: [batch] generated ids: a string, an int, or a ranked list (beams, best first).
    ks: cut-offs K.

  Returns:
    Metric name -> value, e.g. {"recall@5": ..., "ndcg@10": ..., "mrr": ..., "invalid_rate": ...}.
  """
  return topk_metrics(targets, predictions, ks)


def make_retrieval_metrics(ks: Iterable[int] = DEFAULT_RETRIEVAL_KS,
                           valid_item_ids: Collection[int] | None = None) -> MetricFn:
  """Returns a SeqIO metric_fn `fn(targets, predictions)` computing `retrieval_metrics`.

  Args:
    ks: cut-offs K.
    valid_item_ids: optional catalogue of public item ids (e.g. `RecDataset.item_public_ids`);
      generated ids outside it are invalid. Copied once, so the returned fn is cheap per call.
  """
  ks = _check_ks(ks)
  valid = None if valid_item_ids is None else frozenset(int(i) for i in np.asarray(valid_item_ids).reshape(-1))

  def retrieval_metric_fn(targets: Sequence[Any], predictions: Sequence[Any]) -> dict[str, float]:
    return topk_metrics(targets, predictions, ks, valid)

  return retrieval_metric_fn


def ranking_metrics(targets: Sequence[Any], predictions: Sequence[Any],
                    ks: Iterable[int] = DEFAULT_RANKING_KS) -> dict[str, float]:
  """SeqIO metric_fn for candidate ranking: hr@K and ndcg@K (K in 1, 5, 10), mrr, invalid rates.

  The prediction is the model's ordering of the candidates shown in the prompt, best first.

  Args:
    targets: [batch] the relevant candidate's id.
    predictions: [batch] ranked candidate ids (a string "12; 7; 93" or a list).
    ks: cut-offs K.

  Returns:
    Metric name -> value, e.g. {"hr@1": ..., "ndcg@5": ..., "mrr": ..., "invalid_rate": ...}.
  """
  return topk_metrics(targets, predictions, ks, include_recall=False)


def make_ranking_metrics(ks: Iterable[int] = DEFAULT_RANKING_KS,
                         valid_item_ids: Collection[int] | None = None) -> MetricFn:
  """Returns a SeqIO metric_fn `fn(targets, predictions)` computing `ranking_metrics`."""
  ks = _check_ks(ks)
  valid = None if valid_item_ids is None else frozenset(int(i) for i in np.asarray(valid_item_ids).reshape(-1))

  def ranking_metric_fn(targets: Sequence[Any], predictions: Sequence[Any]) -> dict[str, float]:
    return topk_metrics(targets, predictions, ks, valid, include_recall=False)

  return ranking_metric_fn


def _check_scale(scale: Sequence[float]) -> tuple[float, float]:
  if len(scale) != 2 or not all(math.isfinite(float(s)) for s in scale) or not scale[0] < scale[1]:
    raise ValueError(f"scale must be (low, high) with finite low < high; got {scale!r}")
  return float(scale[0]), float(scale[1])


def rating_metrics(targets: Sequence[Any], predictions: Sequence[Any],
                   scale: Sequence[float] = DEFAULT_RATING_SCALE,
                   invalid_fill: str = "worst") -> dict[str, float]:
  """SeqIO metric_fn for rating prediction: rmse, mae, invalid_rate, clipped_rate.

  Predictions outside `scale` are clipped to it and counted in `clipped_rate`. An unparseable
  prediction (see `parse_rating`) counts in `invalid_rate` and is scored as a miss: with
  `invalid_fill="worst"` (default) it is replaced by the scale end farthest from the target (the
  largest possible error), with `"midpoint"` by the scale's midpoint. `rmse_valid` and `mae_valid`
  score only the parseable predictions (NaN when there are none), for comparison with papers that
  drop invalid outputs.

  Args:
    targets: [batch] true ratings (str or number).
    predictions: [batch] generated ratings (str or number).
    scale: (low, high) rating scale, e.g. `RecDataset.rating_scale`.
    invalid_fill: "worst" or "midpoint".

  Returns:
    {"rmse", "mae", "rmse_valid", "mae_valid", "invalid_rate", "clipped_rate", "num_examples"}.
  """
  low, high = _check_scale(scale)
  if invalid_fill not in ("worst", "midpoint"):
    raise ValueError(f"invalid_fill must be 'worst' or 'midpoint'; got {invalid_fill!r}")
  n = _check_lengths(targets, predictions)
  true = np.empty(n, dtype=np.float64)
  pred = np.empty(n, dtype=np.float64)
  valid = np.ones(n, dtype=bool)
  for i, (t, p) in enumerate(zip(targets, predictions)):
    t_value = parse_rating(t[0] if isinstance(t, (list, tuple)) and len(t) == 1 else t)
    if t_value is None:
      raise ValueError(f"target of example {i} must be one finite number; got {t!r}")
    true[i] = t_value
    p_value = parse_rating(p[0] if isinstance(p, (list, tuple)) and len(p) == 1 else p)
    valid[i] = p_value is not None
    pred[i] = math.nan if p_value is None else p_value
  clipped = valid & ((pred < low) | (pred > high))
  pred = np.where(valid, np.clip(pred, low, high), pred)
  if invalid_fill == "worst":
    fill = np.where(np.abs(true - low) >= np.abs(true - high), low, high)
  else:
    fill = np.full(n, (low + high) / 2.0, dtype=np.float64)
  scored = np.where(valid, pred, fill)
  return {
      "rmse": rmse(true, scored),
      "mae": mae(true, scored),
      "rmse_valid": rmse(true[valid], pred[valid]),
      "mae_valid": mae(true[valid], pred[valid]),
      "invalid_rate": float(np.mean(~valid, dtype=np.float64)),
      "clipped_rate": float(np.mean(clipped, dtype=np.float64)),
      "num_examples": float(n),
  }


def make_rating_metrics(scale: Sequence[float] = DEFAULT_RATING_SCALE,
                        invalid_fill: str = "worst") -> MetricFn:
  """Returns a SeqIO metric_fn `fn(targets, predictions)` computing `rating_metrics` on `scale`."""
  scale = _check_scale(scale)
  if invalid_fill not in ("worst", "midpoint"):
    raise ValueError(f"invalid_fill must be 'worst' or 'midpoint'; got {invalid_fill!r}")

  def rating_metric_fn(targets: Sequence[Any], predictions: Sequence[Any]) -> dict[str, float]:
    return rating_metrics(targets, predictions, scale, invalid_fill)

  return rating_metric_fn

