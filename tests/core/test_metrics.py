"""Tests for rec_t5x.metrics: hand-computed values, a brute-force cross-check, parsing and SeqIO use."""

import math
import random

import numpy as np
import pytest
import seqio

from rec_t5x import metrics


# --- numpy cores, hand-computed -----------------------------------------------------------------


def test_rank_metrics_by_hand():
  ranks = np.array([1, 3, 0, 6], dtype=np.int64)
  # HR@5: ranks 1 and 3 are within 5 -> 2 hits of 4.
  assert metrics.hr_at_k(ranks, 5) == pytest.approx(2 / 4)
  assert metrics.recall_at_k(ranks, 5) == pytest.approx(2 / 4)
  # NDCG@5: rank 1 -> 1/log2(2) = 1, rank 3 -> 1/log2(4) = 0.5; (1 + 0.5) / 4.
  assert metrics.ndcg_at_k(ranks, 5) == pytest.approx((1.0 + 0.5) / 4)
  # NDCG@10 also counts rank 6: 1/log2(7).
  assert metrics.ndcg_at_k(ranks, 10) == pytest.approx((1.0 + 0.5 + 1 / math.log2(7)) / 4)
  # MRR: (1/1 + 1/3 + 0 + 1/6) / 4 = 1.5 / 4.
  assert metrics.mrr(ranks) == pytest.approx(1.5 / 4)
  # MRR@5 drops rank 6: (1 + 1/3) / 4.
  assert metrics.mrr(ranks, k=5) == pytest.approx((1 + 1 / 3) / 4)
  # HR@1: only rank 1.
  assert metrics.hr_at_k(ranks, 1) == pytest.approx(1 / 4)


def test_rank_of_target_dedupes_and_keeps_invalid_slots():
  # Duplicates collapse to their first position: [5, 7] -> 7 is at rank 2.
  assert metrics.rank_of_target([5, 5, 7], 7) == 2
  # An invalid candidate keeps its slot: [5, invalid, 7] -> rank 3.
  assert metrics.rank_of_target([5, metrics.INVALID_ID, 7], 7) == 3
  # Two invalid candidates are not duplicates of each other.
  assert metrics.rank_of_target([metrics.INVALID_ID, metrics.INVALID_ID, 7], 7) == 3
  # A duplicate of the target itself: the first copy counts.
  assert metrics.rank_of_target([7, 3, 7], 7) == 1
  assert metrics.rank_of_target([3, 4], 7) == 0
  assert metrics.rank_of_target([], 7) == 0


def test_rmse_mae_by_hand():
  # Errors 1, -2, 0 -> RMSE sqrt((1 + 4 + 0) / 3), MAE (1 + 2 + 0) / 3.
  assert metrics.rmse([3.0, 4.0, 5.0], [4.0, 2.0, 5.0]) == pytest.approx(math.sqrt(5 / 3))
  assert metrics.mae([3.0, 4.0, 5.0], [4.0, 2.0, 5.0]) == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [np.array([[1]]), np.array([], dtype=np.int64), np.array([-1])])
def test_ranks_validation(bad):
  with pytest.raises(ValueError, match="ranks"):
    metrics.ndcg_at_k(bad, 5)


def test_k_validation():
  with pytest.raises(ValueError, match="k must be"):
    metrics.hr_at_k(np.array([1]), 0)
  with pytest.raises(ValueError, match="ks must be"):
    metrics.make_retrieval_metrics(ks=(0, 5))


# --- brute force against the vectorised implementation ------------------------------------------


def _brute_rank(row, target):
  seen, position = set(), 0
  for item in row:
    if item == metrics.PAD_ID:
      continue
    if item >= 0 and item in seen:
      continue
    position += 1
    if item >= 0:
      seen.add(item)
    if item == target:
      return position
  return 0


def test_vectorised_matches_brute_force_on_random_rankings():
  rng = random.Random(1234)
  rows, targets = [], []
  for _ in range(300):
    length = rng.randint(0, 25)
    # Small id range forces duplicates; some invalid slots; variable lengths padded below.
    row = [rng.choice([metrics.INVALID_ID] + list(range(1, 15))) for _ in range(length)]
    rows.append(row)
    targets.append(rng.randint(1, 15))
  width = max(len(r) for r in rows)
  ranked = np.full((len(rows), width), metrics.PAD_ID, dtype=np.int64)
  for i, r in enumerate(rows):
    ranked[i, :len(r)] = r
  ranks = metrics.ranks_of_targets(ranked, np.asarray(targets, dtype=np.int64))
  expected = [_brute_rank(r, t) for r, t in zip(rows, targets)]
  assert ranks.tolist() == expected
  assert ranks.dtype == np.int64
  assert 0 < np.count_nonzero(ranks) < len(rows)  # the case mixes hits and misses
  for k in (1, 5, 10, 20):
    hits = [1.0 if 1 <= r <= k else 0.0 for r in expected]
    gains = [1.0 / math.log2(r + 1) if 1 <= r <= k else 0.0 for r in expected]
    assert metrics.hr_at_k(ranks, k) == pytest.approx(sum(hits) / len(hits))
    assert metrics.recall_at_k(ranks, k) == pytest.approx(sum(hits) / len(hits))
    assert metrics.ndcg_at_k(ranks, k) == pytest.approx(sum(gains) / len(gains))
  assert metrics.mrr(ranks) == pytest.approx(sum(1.0 / r if r else 0.0 for r in expected) / len(expected))


# --- parsing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text,expected", [
    ("4821", [4821]),
    (" 12; 7, 93 4 ", [12, 7, 93, 4]),
    ("12;;7", [12, 7]),
    (b"5 6", [5, 6]),
    ("item 5", [5]),
    ("no ids here", []),
    ("", []),
    ("<i12>; <i7>, 93", [12, 7, 93]),  # the atomic item-ID style (rec_t5x/item_ids.py)
    ("<i12 > <x3>", []),
])
def test_parse_item_ids(text, expected):
  assert metrics.parse_item_ids(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("4", 4.0), (" 4.5 ", 4.5), ("3.", 3.0), (".5", 0.5), (b"2", 2.0), (5, 5.0),
    ("four", None), ("4 stars", None), ("", None), ("nan", None), (float("inf"), None), (True, None),
])
def test_parse_rating(text, expected):
  assert metrics.parse_rating(text) == expected


# --- SeqIO metric functions ---------------------------------------------------------------------


def test_retrieval_metrics_mixed_prediction_forms():
  targets = ["7", 3, ["9"], "4"]
  predictions = [
      ["5", "5", "7"],  # duplicate 5 collapses: 7 at rank 2
      "3",              # single string: rank 1
      "abc",            # nothing parses: one invalid candidate, miss
      [8, "x y", 4],    # "x y" is one invalid beam, keeps its slot: rank 3
  ]
  out = metrics.retrieval_metrics(targets, predictions, ks=(1, 5))
  # Ranks: 2, 1, 0 (miss), 3.
  assert out["hr@1"] == pytest.approx(1 / 4)
  assert out["recall@5"] == pytest.approx(3 / 4)
  assert out["hr@5"] == out["recall@5"]
  # NDCG@5 = (1/log2(3) + 1/log2(2) + 0 + 1/log2(4)) / 4.
  assert out["ndcg@5"] == pytest.approx((1 / math.log2(3) + 1 + 0.5) / 4)
  assert out["mrr"] == pytest.approx((1 / 2 + 1 + 0 + 1 / 3) / 4)
  # Candidates: 3 + 1 + 1 + 3 = 8; invalid: "abc" and "x y" -> 2/8; duplicates: one 5 -> 1/8.
  assert out["invalid_rate"] == pytest.approx(2 / 8)
  assert out["duplicate_rate"] == pytest.approx(1 / 8)
  assert out["num_examples"] == 4.0


def test_default_keys():
  out = metrics.retrieval_metrics(["1"], ["1"])
  for key in ("recall@5", "recall@10", "recall@20", "hr@5", "ndcg@10", "ndcg@20", "mrr", "invalid_rate"):
    assert key in out
  ranking = metrics.ranking_metrics(["1"], ["2; 1"])
  assert set(ranking) == {"hr@1", "hr@5", "hr@10", "ndcg@1", "ndcg@5", "ndcg@10", "mrr",
                          "invalid_rate", "duplicate_rate", "num_examples"}
  assert ranking["hr@1"] == 0.0 and ranking["ndcg@5"] == pytest.approx(1 / math.log2(3))


def test_catalogue_makes_unknown_ids_invalid():
  fn = metrics.make_retrieval_metrics(ks=(2,), valid_item_ids=np.array([1, 2, 3], dtype=np.int64))
  # 99 is outside the catalogue: invalid, keeps its slot, so 2 is at rank 2.
  out = fn(["2"], ["99 2"])
  assert out["invalid_rate"] == pytest.approx(1 / 2)
  assert out["hr@2"] == 1.0
  assert out["mrr"] == pytest.approx(1 / 2)
  # Without the catalogue 99 is valid.
  assert metrics.retrieval_metrics(["2"], ["99 2"], ks=(2,))["invalid_rate"] == 0.0


def test_bad_targets_and_lengths_raise():
  with pytest.raises(ValueError, match="example 1"):
    metrics.retrieval_metrics(["1", "oops"], ["1", "2"])
  with pytest.raises(ValueError, match="2 targets but 1 predictions"):
    metrics.retrieval_metrics(["1", "2"], ["1"])
  with pytest.raises(ValueError, match="no examples"):
    metrics.retrieval_metrics([], [])


def test_rating_metrics_by_hand():
  targets = ["4", "2", "5", "3"]
  predictions = ["4.5", "x", "7", "1"]
  out = metrics.rating_metrics(targets, predictions, scale=(1, 5))
  # Errors: 0.5; invalid with target 2 -> worst end 5 -> 3; 7 clipped to 5 -> 0; 1 vs 3 -> 2.
  assert out["rmse"] == pytest.approx(math.sqrt((0.25 + 9 + 0 + 4) / 4))
  assert out["mae"] == pytest.approx((0.5 + 3 + 0 + 2) / 4)
  assert out["rmse_valid"] == pytest.approx(math.sqrt((0.25 + 0 + 4) / 3))
  assert out["mae_valid"] == pytest.approx((0.5 + 0 + 2) / 3)
  assert out["invalid_rate"] == pytest.approx(1 / 4)
  assert out["clipped_rate"] == pytest.approx(1 / 4)
  midpoint = metrics.make_rating_metrics((1, 5), invalid_fill="midpoint")(targets, predictions)
  # The invalid one becomes 3 -> error 1.
  assert midpoint["rmse"] == pytest.approx(math.sqrt((0.25 + 1 + 0 + 4) / 4))


def test_rating_metrics_errors():
  with pytest.raises(ValueError, match="example 0"):
    metrics.rating_metrics(["five"], ["5"])
  with pytest.raises(ValueError, match="scale"):
    metrics.rating_metrics(["5"], ["5"], scale=(5, 1))
  with pytest.raises(ValueError, match="invalid_fill"):
    metrics.make_rating_metrics(invalid_fill="zero")
  out = metrics.rating_metrics(["5"], ["?"])
  assert math.isnan(out["rmse_valid"]) and out["rmse"] == pytest.approx(4.0)


def test_seqio_recognises_metric_fns():
  task = seqio.Task(
      "rec_t5x_metrics_test_task",
      source=seqio.FunctionDataSource(lambda split, shuffle_files: None, splits=["validation"]),
      output_features={"targets": seqio.Feature(seqio.PassThroughVocabulary(8))},
      metric_fns=[metrics.retrieval_metrics, metrics.make_retrieval_metrics((5,)),
                  metrics.ranking_metrics, metrics.make_rating_metrics((1, 5)), metrics.rating_metrics],
  )
  assert len(task.predict_metric_fns) == 5
  assert not task.score_metric_fns
  # SeqIO calls fn(targets, predictions) by keyword.
  for fn in task.predict_metric_fns[:3]:
    out = fn(targets=["3"], predictions=[["3", "4"]])
    assert out["mrr"] == 1.0
    assert all(isinstance(v, float) for v in out.values())
