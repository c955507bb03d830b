"""Full-catalogue leave-one-out evaluation shared by every baseline.

Protocol (docs/baselines.md, /work/shared/reference/papers.md §5):
  * validation: the input prefix is `train_sequence(u)`, the target `validation_item(u)`;
    test: the input prefix is `train_sequence(u) + [validation_item(u)]`, the target `test_item(u)`;
    only `eval_users()` are scored.
  * every model scores ALL items (no sampled negatives). Items in the user's input prefix are
    masked (score -inf) for every model, Pop and SASRec alike. A target that is itself in the
    prefix (impossible on MovieLens, where nobody rates an item twice) is masked too and counted in
    `masked_targets`, so nothing is dropped silently.
  * ties are broken by item index (lower index first), identically for the top-N lists and for
    the full rank, so both agree exactly.
  * Recall@K, NDCG@K and MRR come from `rec_t5x.metrics` (the same code that scores the language
    models): `ranks_of_targets` on the top-N item lists gives ranks up to N; the rank over the
    whole catalogue (for full MRR) is counted directly from the scores and checked against it.

Scores are produced by a `Scorer` in row chunks of `[chunk, num_items]`, so no `[users, items]`
matrix is ever held in memory.
"""
from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

from rec_t5x import metrics as metrics_lib
from rec_t5x.data import dataset as dataset_lib

SPLITS = ("validation", "test")
DEFAULT_KS = (5, 10, 20)
MRR_CUTOFF = 10


@dataclasses.dataclass(frozen=True)
class EvalSplit:
  """One evaluation split: per row a user, the input prefix and the held-out target.

  Attributes:
    name: "validation" or "test".
    users: int64 [rows] user indices (the dataset's `eval_users()`).
    targets: int64 [rows] item index to predict.
    history_offsets: int64 [rows + 1]; row r's input prefix is history[offsets[r]:offsets[r+1]].
    history: int32 [total] item indices of the input prefixes, chronological.
  """
  name: str
  users: np.ndarray
  targets: np.ndarray
  history_offsets: np.ndarray
  history: np.ndarray

  @property
  def num_rows(self) -> int:
    return len(self.users)

  def prefix(self, row: int) -> np.ndarray:
    """int32 [length] the input prefix of `row`, chronological."""
    return self.history[self.history_offsets[row]:self.history_offsets[row + 1]]


def make_split(ds: dataset_lib.RecDataset, name: str) -> EvalSplit:
  """Builds the validation or test split of `ds` (see the module docstring).

  Args:
    ds: the dataset.
    name: "validation" or "test".

  Returns:
    The split over `ds.eval_users()`.

  Raises:
    ValueError: for an unknown split name or a dataset without evaluation users.
  """
  if name not in SPLITS:
    raise ValueError(f"split name must be one of {SPLITS}; got {name!r}")
  users = ds.eval_users()
  if users.size == 0:
    raise ValueError(f"dataset {ds.name!r} has no user with >= 3 events: nothing to evaluate")
  starts = ds.user_offsets[users]
  ends = ds.user_offsets[users + 1]
  # The prefix is everything before the target: seq[:-2] for validation, seq[:-1] for test.
  prefix_ends = ends - (2 if name == "validation" else 1)
  target_pos = prefix_ends
  lengths = prefix_ends - starts
  offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
  gather = np.concatenate([np.arange(s, e) for s, e in zip(starts, prefix_ends)]).astype(np.int64)
  return EvalSplit(name=name, users=users.astype(np.int64),
                   targets=ds.items[target_pos].astype(np.int64), history_offsets=offsets,
                   history=ds.items[gather].astype(np.int32))


class Scorer(Protocol):
  """Scores the whole catalogue for some rows of a split."""

  def __call__(self, rows: np.ndarray) -> np.ndarray:
    """Args: rows: int64 [chunk] row indices into the split. Returns: float32 [chunk, num_items]."""


def history_mask(split: EvalSplit, rows: np.ndarray, num_items: int) -> np.ndarray:
  """bool [len(rows), num_items], True where the item is in the row's input prefix."""
  mask = np.zeros((len(rows), num_items), dtype=bool)
  for i, row in enumerate(rows):
    mask[i, split.prefix(int(row))] = True
  return mask


def rank_scores(scores: np.ndarray, targets: np.ndarray,
                top_n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Orders items by score (ties: lower index first) and ranks the targets.

  Args:
    scores: float32 [rows, num_items], already masked (-inf for excluded items).
    targets: int64 [rows] target item indices.
    top_n: length of the returned lists (capped at num_items).

  Returns:
    (full_ranks int64 [rows] 1-based rank of the target among all items,
     top_items int64 [rows, top_n] best items first,
     top_scores float32 [rows, top_n] their scores).
  """
  rows, num_items = scores.shape
  top_n = min(top_n, num_items)
  target_scores = scores[np.arange(rows), targets][:, None]
  item_index = np.arange(num_items)[None, :]
  better = (scores > target_scores) | ((scores == target_scores) & (item_index < targets[:, None]))
  full_ranks = better.sum(axis=1).astype(np.int64) + 1
  if top_n < num_items:
    candidates = np.argpartition(-scores, top_n - 1, axis=1)[:, :top_n]
  else:
    candidates = np.broadcast_to(np.arange(num_items), (rows, num_items))
  cand_scores = np.take_along_axis(scores, candidates, axis=1)
  # Boundary ties: argpartition may pick any of several equal scores at position top_n; redo those
  # rows exactly with a stable sort so the list is "highest score, then lowest index".
  kth = cand_scores.min(axis=1, keepdims=True)
  ambiguous = np.flatnonzero((scores == kth).sum(axis=1) != (cand_scores == kth).sum(axis=1))
  order = np.lexsort((candidates, -cand_scores), axis=1)
  top_items = np.take_along_axis(candidates, order, axis=1).astype(np.int64)
  for r in ambiguous:
    top_items[r] = np.argsort(-scores[r], kind="stable")[:top_n]
  top_scores = np.take_along_axis(scores, top_items, axis=1).astype(np.float32)
  return full_ranks, top_items, top_scores


def metrics_from_ranks(ranks: np.ndarray, full_ranks: np.ndarray,
                       ks: tuple[int, ...] = DEFAULT_KS) -> dict[str, float]:
  """Recall@K, NDCG@K, MRR@10 and full MRR via `rec_t5x.metrics`.

  Args:
    ranks: int64 [rows] ranks from `metrics.ranks_of_targets` on the top-N lists (0 = beyond N).
    full_ranks: int64 [rows] ranks over the whole catalogue.
    ks: cut-offs, each <= N.

  Returns:
    {"recall@K", "ndcg@K" for K in ks, "mrr@10", "mrr", "num_users"}.
  """
  out: dict[str, float] = {}
  for k in ks:
    out[f"recall@{k}"] = metrics_lib.recall_at_k(ranks, k)
  for k in ks:
    out[f"ndcg@{k}"] = metrics_lib.ndcg_at_k(ranks, k)
  out[f"mrr@{MRR_CUTOFF}"] = metrics_lib.mrr(ranks, MRR_CUTOFF)
  out["mrr"] = metrics_lib.mrr(full_ranks)
  out["num_users"] = float(len(ranks))
  return out


@dataclasses.dataclass(frozen=True)
class EvalResult:
  """Metrics and per-row rankings of one split.

  Attributes:
    metrics: see `metrics_from_ranks`, plus "masked_targets" (targets found in their own prefix).
    full_ranks: int64 [rows] rank of the target over all items.
    top_items: int64 [rows, top_n] item indices, best first (prefix items excluded unless fewer
      than top_n unseen items exist, in which case they trail with score -inf).
    top_scores: float32 [rows, top_n].
  """
  metrics: dict[str, float]
  full_ranks: np.ndarray
  top_items: np.ndarray
  top_scores: np.ndarray


def evaluate(scorer: Scorer, split: EvalSplit, num_items: int, batch_size: int = 1024,
             top_n: int = 100, ks: tuple[int, ...] = DEFAULT_KS) -> EvalResult:
  """Scores every row of `split` over the whole catalogue, masks prefixes and computes metrics.

  Args:
    scorer: the model's scorer for this split.
    split: the split.
    num_items: catalogue size.
    batch_size: rows scored at once ([batch_size, num_items] floats in memory).
    top_n: length of the saved top lists; must be >= max(ks) and >= MRR_CUTOFF.
    ks: Recall/NDCG cut-offs.

  Returns:
    The `EvalResult`.

  Raises:
    ValueError: for top_n below a cut-off, or a scorer returning the wrong shape or NaN.
  """
  need = max(max(ks), MRR_CUTOFF)
  if top_n < need or num_items < need:
    raise ValueError(f"top_n={top_n} and num_items={num_items} must be >= the largest cut-off "
                     f"{need}")
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1; got {batch_size}")
  full, tops, top_scores, masked_targets = [], [], [], 0
  for start in range(0, split.num_rows, batch_size):
    rows = np.arange(start, min(start + batch_size, split.num_rows), dtype=np.int64)
    scores = np.array(scorer(rows), dtype=np.float32)
    if scores.shape != (len(rows), num_items):
      raise ValueError(f"scorer returned shape {scores.shape}; expected {(len(rows), num_items)}")
    if np.isnan(scores).any():
      raise ValueError(f"scorer returned NaN scores for rows {start}..{rows[-1]} of the "
                       f"{split.name} split")
    mask = history_mask(split, rows, num_items)
    targets = split.targets[rows]
    masked_targets += int(mask[np.arange(len(rows)), targets].sum())
    scores[mask] = -np.inf
    f, t, s = rank_scores(scores, targets, top_n)
    full.append(f)
    tops.append(t)
    top_scores.append(s)
  full_ranks = np.concatenate(full)
  top_items = np.concatenate(tops)
  ranks = metrics_lib.ranks_of_targets(top_items, split.targets)
  within = ranks > 0
  if (not np.array_equal(ranks[within], full_ranks[within])
      or np.any(full_ranks[~within] <= top_items.shape[1])):
    raise AssertionError("top-N ranks and full ranks disagree: tie-breaking bug")
  out = metrics_from_ranks(ranks, full_ranks, ks)
  out["masked_targets"] = float(masked_targets)
  return EvalResult(metrics=out, full_ranks=full_ranks, top_items=top_items,
                    top_scores=np.concatenate(top_scores))
