"""Postprocessors and lazily built metric functions."""
import pytest

from seqio_tasks import eval_fns
from tests.prompts import synthetic


def _ds():
  return synthetic.make_dataset([[0, 1, 2, 3]], 10)


def test_postprocessors():
  assert eval_fns.postprocess_item_ids(b" 17; 4 ", example={}, is_target=True) == "17; 4"
  assert eval_fns.postprocess_rating("4") == 4.0
  assert eval_fns.postprocess_rating(b"3.5") == 3.5
  assert eval_fns.postprocess_rating("great movie") is None


def test_metric_fns_are_built_on_first_call_from_the_dataset():
  calls = []

  def dataset_fn():
    calls.append(1)
    return _ds()

  fn = eval_fns.LazyMetricFn("retrieval", dataset_fn)
  assert not calls
  result = fn(["3", "5"], ["3", "99"])  # 99 is not a public id of a 10-item catalogue
  assert calls == [1]
  assert result["recall@5"] == 0.5
  assert result["invalid_rate"] == 0.5
  fn(["3"], ["3"])
  assert calls == [1]


def test_rating_metrics_use_the_dataset_scale():
  fn = eval_fns.LazyMetricFn("rating", _ds)
  result = fn([4.0, 2.0], [4.0, None])
  assert result["invalid_rate"] == 0.5
  assert result["mae"] == pytest.approx((0 + 3) / 2)  # invalid -> farthest end of (1, 5)


def test_eval_functions_per_task():
  assert eval_fns.eval_functions("mim", _ds) == (None, [])
  postprocess, fns = eval_fns.eval_functions("ranking", _ds)
  assert postprocess is eval_fns.postprocess_item_ids and fns[0].kind == "ranking"
  with pytest.raises(ValueError, match="LazyMetricFn kind 'mlm'"):
    eval_fns.LazyMetricFn("mlm", _ds)
