"""Tests for rec_t5x.baselines.common: TrainConfig validation and the early-stopping loop."""
import numpy as np
import pytest

from rec_t5x.baselines import common


def _scripted(metric_by_epoch):
  """An epoch_fn whose state is the epoch number and a validate() reading the script."""
  calls = []

  def epoch_fn(state, epoch):
    calls.append(epoch)
    return {"w": np.asarray([float(epoch)])}, 1.0 / epoch

  def validate(params):
    return {"ndcg@10": metric_by_epoch[int(params["w"][0])]}

  return epoch_fn, validate, calls


def test_fit_restores_the_best_epoch_and_stops_on_patience():
  script = {0: 0.0, 1: 0.1, 2: 0.3, 3: 0.2, 4: 0.25, 5: 0.29, 6: 0.5}
  epoch_fn, validate, calls = _scripted(script)
  config = common.TrainConfig(max_epochs=6, patience=3)
  result = common.fit({"w": np.asarray([0.0])}, epoch_fn, lambda s: s, validate, config,
                      log=lambda _: None)
  assert calls == [1, 2, 3, 4, 5]  # Epochs 3, 4, 5 do not beat epoch 2: patience 3 stops.
  assert result.stop_reason == "patience"
  assert result.best_epoch == 2 and result.best_metric == pytest.approx(0.3)
  assert result.params["w"].tolist() == [2.0]
  assert [h["epoch"] for h in result.history] == [1, 2, 3, 4, 5]
  assert result.history[0]["loss"] == pytest.approx(1.0)


def test_fit_keeps_initial_params_when_nothing_improves_and_honours_eval_every():
  script = {0: 0.5, 1: 0.1, 2: 0.1, 3: 0.1, 4: 0.1}
  epoch_fn, validate, _ = _scripted(script)
  config = common.TrainConfig(max_epochs=4, patience=10, eval_every=2)
  result = common.fit({"w": np.asarray([0.0])}, epoch_fn, lambda s: s, validate, config,
                      log=lambda _: None)
  assert result.stop_reason == "max_epochs" and result.epochs == 4
  assert result.best_epoch == 0 and result.params["w"].tolist() == [0.0]
  assert [h["epoch"] for h in result.history] == [2, 4]
  assert result.history[0]["loss"] == pytest.approx((1.0 + 0.5) / 2)  # Mean over epochs 1-2.


def test_fit_stops_at_the_wall_clock_cap_after_evaluating():
  script = {e: e / 10 for e in range(100)}
  epoch_fn, validate, calls = _scripted(script)
  config = common.TrainConfig(max_epochs=99, eval_every=50, max_train_seconds=1e-9)
  result = common.fit({"w": np.asarray([0.0])}, epoch_fn, lambda s: s, validate, config,
                      log=lambda _: None)
  assert calls == [1] and result.stop_reason == "wall_clock_cap"
  assert result.best_epoch == 1  # The capped epoch is still evaluated.


def test_fit_raises_on_non_finite_loss():
  def epoch_fn(state, epoch):
    return state, float("nan")

  with pytest.raises(FloatingPointError, match="epoch 1"):
    common.fit({}, epoch_fn, lambda s: s, lambda p: {"ndcg@10": 0.0}, common.TrainConfig(),
               log=lambda _: None)


@pytest.mark.parametrize("field,value", [("learning_rate", 0.0), ("batch_size", 0),
                                         ("patience", 0), ("max_train_seconds", -1.0),
                                         ("top_n", 10)])
def test_train_config_rejects_bad_values(field, value):
  with pytest.raises(ValueError, match=f"TrainConfig.{field}"):
    common.TrainConfig(**{field: value})


def test_shuffled_batches_covers_every_example_once():
  index, weights = common.shuffled_batches(10, 4, np.random.default_rng(0))
  assert index.shape == (3, 4) and weights.shape == (3, 4)
  assert sorted(index[weights > 0].tolist()) == list(range(10))
  assert weights.sum() == 10
