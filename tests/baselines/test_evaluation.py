"""Tests for rec_t5x.baselines.evaluation: splits, masking, tie-breaking and metric values."""
import math

import numpy as np
import pytest

from rec_t5x.baselines import evaluation
from tests.baselines import synthetic


def _dataset():
  # user 0: train [0, 1, 2], val 3, test 4; user 1: train [5], val 0, test 1; user 2: too short;
  # user 3: train [6], val 7, test 8.
  return synthetic.make_dataset([[0, 1, 2, 3, 4], [5, 0, 1], [2, 3], [6, 7, 8]], num_items=25)


def test_make_split_follows_leave_one_out():
  ds = _dataset()
  val = evaluation.make_split(ds, "validation")
  test = evaluation.make_split(ds, "test")
  assert val.users.tolist() == [0, 1, 3] and test.users.tolist() == [0, 1, 3]
  assert val.targets.tolist() == [3, 0, 7] and test.targets.tolist() == [4, 1, 8]
  assert val.prefix(0).tolist() == [0, 1, 2] and val.prefix(1).tolist() == [5]
  assert test.prefix(0).tolist() == [0, 1, 2, 3] and test.prefix(1).tolist() == [5, 0]
  for row, user in enumerate(val.users):
    assert val.prefix(row).tolist() == ds.train_sequence(int(user)).tolist()


def test_make_split_rejects_unknown_name():
  with pytest.raises(ValueError, match="'train'"):
    evaluation.make_split(_dataset(), "train")


def _expected_rank(scores_row, masked, target):
  """Independent rank: sort (item) by (-score, item) over unmasked items plus masked at -inf."""
  keyed = [(-(-math.inf if i in masked else float(s)), i) for i, s in enumerate(scores_row)]
  order = [i for _, i in sorted(keyed)]
  return order.index(target) + 1


def test_evaluate_matches_independent_metrics_on_hand_built_scores():
  ds = _dataset()
  split = evaluation.make_split(ds, "test")
  num_items = ds.num_items
  scores = np.zeros((3, num_items), np.float32)
  # Row 0 (prefix {0,1,2,3}, target 4): seen items score highest but are masked; items 10 and 11
  # tie above the target (both beat it), item 7 ties with the target but has a higher index, so
  # the target wins that tie.
  scores[0, [0, 1, 2, 3]] = 9.0
  scores[0, [10, 11]] = 5.0
  scores[0, [7, 4]] = 3.0
  # Row 1 (prefix {5, 0}, target 1): target is best among unseen items.
  scores[1, 5] = 10.0
  scores[1, 1] = 8.0
  scores[1, 2:5] = 1.0
  # Row 2 (prefix {6, 7}, target 8): twelve unseen items (9..20) score above the target.
  scores[2, 6:8] = 7.0
  scores[2, 9:21] = 2.0
  scores[2, 8] = 1.0

  def scorer(rows):
    return scores[rows]

  result = evaluation.evaluate(scorer, split, num_items, batch_size=1, top_n=20)
  expected_ranks = [_expected_rank(scores[0], {0, 1, 2, 3}, 4),
                    _expected_rank(scores[1], {5, 0}, 1), _expected_rank(scores[2], {6, 7}, 8)]
  assert expected_ranks == [3, 1, 13]
  assert result.full_ranks.tolist() == expected_ranks
  m = result.metrics
  assert m["recall@5"] == pytest.approx(2 / 3)
  assert m["recall@10"] == pytest.approx(2 / 3)
  assert m["recall@20"] == pytest.approx(1.0)
  assert m["ndcg@5"] == pytest.approx((1 / math.log2(4) + 1.0) / 3)
  assert m["ndcg@20"] == pytest.approx((1 / math.log2(4) + 1.0 + 1 / math.log2(14)) / 3)
  assert m["mrr@10"] == pytest.approx((1 / 3 + 1.0) / 3)
  assert m["mrr"] == pytest.approx((1 / 3 + 1.0 + 1 / 13) / 3)
  assert m["masked_targets"] == 0
  assert result.top_items[0, :4].tolist() == [10, 11, 4, 7]
  assert result.top_items[1, 0] == 1


def test_evaluate_masks_the_input_prefix_for_every_row():
  ds = _dataset()
  for name in evaluation.SPLITS:
    split = evaluation.make_split(ds, name)
    # Seen items get the highest scores; none may appear among the unmasked top items.
    def scorer(rows, split=split):
      out = np.tile(np.linspace(0, 1, ds.num_items, dtype=np.float32), (len(rows), 1))
      for i, r in enumerate(rows):
        out[i, split.prefix(int(r))] = 100.0
      return out

    result = evaluation.evaluate(scorer, split, ds.num_items, top_n=20)
    for row in range(split.num_rows):
      seen = set(split.prefix(row).tolist())
      unseen_top = result.top_items[row, :ds.num_items - len(seen)]
      assert not seen & set(unseen_top.tolist())
      assert np.all(np.isneginf(result.top_scores[row, ds.num_items - len(seen):]))


def test_evaluate_counts_targets_inside_their_prefix():
  ds = synthetic.make_dataset([[0, 1, 0, 1]] + [[i, i + 1, i + 2] for i in range(2, 22)],
                              num_items=25)
  split = evaluation.make_split(ds, "test")  # user 0: prefix [0, 1, 0], target 1 (seen).
  result = evaluation.evaluate(lambda rows: np.zeros((len(rows), 25), np.float32), split, 25,
                               top_n=20)
  assert result.metrics["masked_targets"] == 1
  assert result.full_ranks[0] > 25 - 2  # Masked target ranks among the -inf items.


def test_rank_scores_breaks_ties_by_item_index_with_argpartition_boundary():
  rng = np.random.default_rng(0)
  scores = rng.integers(0, 4, size=(30, 50)).astype(np.float32)  # Many ties at every boundary.
  targets = rng.integers(0, 50, size=30)
  full, top, _ = evaluation.rank_scores(scores, targets, top_n=20)
  for r in range(30):
    order = sorted(range(50), key=lambda i: (-scores[r, i], i))
    assert top[r].tolist() == order[:20]
    assert full[r] == order.index(targets[r]) + 1


def test_evaluate_rejects_bad_scorer_output():
  ds = _dataset()
  split = evaluation.make_split(ds, "validation")
  with pytest.raises(ValueError, match="shape"):
    evaluation.evaluate(lambda rows: np.zeros((len(rows), 3)), split, ds.num_items, top_n=20)
  with pytest.raises(ValueError, match="NaN"):
    evaluation.evaluate(lambda rows: np.full((len(rows), ds.num_items), np.nan), split,
                        ds.num_items, top_n=20)
