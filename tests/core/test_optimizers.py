"""Tests for rec_t5x.optimizers: schedules by hand, Adafactor updates against numpy formulas."""
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rec_t5x import optimizers


def _values(schedule, steps):
  return [float(schedule(jnp.asarray(s))) for s in steps]


def test_rsqrt_schedule_by_hand():
  config = optimizers.LearningRateConfig("rsqrt", base_learning_rate=1.0, warmup_steps=4)
  schedule = optimizers.make_schedule(config)
  # 1/sqrt(max(step, 4)): flat 0.5 during warm-up, then 1/sqrt(step).
  np.testing.assert_allclose(_values(schedule, [0, 1, 3, 4, 16, 100]),
                             [0.5, 0.5, 0.5, 0.5, 0.25, 0.1], rtol=1e-6)


def test_constant_and_linear_decay_by_hand():
  constant = optimizers.make_schedule(optimizers.LearningRateConfig("constant", 1e-3))
  np.testing.assert_allclose(_values(constant, [0, 10, 10**6]), [1e-3] * 3, rtol=1e-6)
  linear = optimizers.make_schedule(optimizers.LearningRateConfig(
      "linear_decay", base_learning_rate=1.0, warmup_steps=2, decay_steps=4, end_learning_rate=0.0))
  np.testing.assert_allclose(_values(linear, [0, 1, 2, 3, 4, 6, 10]),
                             [0.0, 0.5, 1.0, 0.75, 0.5, 0.0, 0.0], atol=1e-7)
  no_warmup = optimizers.make_schedule(optimizers.LearningRateConfig(
      "linear_decay", base_learning_rate=2.0, decay_steps=4, end_learning_rate=1.0))
  np.testing.assert_allclose(_values(no_warmup, [0, 2, 4, 8]), [2.0, 1.5, 1.0, 1.0], rtol=1e-6)


@pytest.mark.parametrize("kwargs,message", [
    ({"schedule": "cosine"}, "schedule='cosine'"),
    ({"base_learning_rate": 0.0}, "base_learning_rate=0.0"),
    ({"schedule": "rsqrt", "warmup_steps": 0}, "warmup_steps=0: the rsqrt schedule needs >= 1"),
    ({"schedule": "linear_decay"}, "decay_steps=0: the linear_decay schedule"),
    ({"warmup_steps": -1}, "warmup_steps=-1"),
])
def test_learning_rate_config_validation(kwargs, message):
  with pytest.raises(ValueError, match=f"LearningRateConfig.{message}"):
    optimizers.LearningRateConfig(**kwargs)


@pytest.mark.parametrize("kwargs,message", [
    ({"decay_rate": 0.0}, "decay_rate=0.0"),
    ({"clipping_threshold": 0.0}, "clipping_threshold=0.0"),
    ({"momentum": 1.0}, "momentum=1.0"),
    ({"min_dim_size_to_factor": 0}, "min_dim_size_to_factor=0"),
])
def test_adafactor_config_validation(kwargs, message):
  with pytest.raises(ValueError, match=f"AdafactorConfig.{message}"):
    optimizers.AdafactorConfig(**kwargs)


def _t5x_reference_update(param, grad, lr, step=0, decay_rate=0.8, eps=1e-30, factored=False):
  """Adafactor's first-principles update (Shazeer & Stern 2018 / T5X defaults) in numpy."""
  beta2 = 1.0 - (step + 1.0) ** -decay_rate
  g2 = grad.astype(np.float64) ** 2 + eps
  if factored:
    row = (1 - beta2) * g2.mean(axis=1)      # [rows]
    col = (1 - beta2) * g2.mean(axis=0)      # [cols]
    v = np.outer(row, col) / row.mean()
  else:
    v = (1 - beta2) * g2
  u = grad / np.sqrt(v)
  u = u / max(1.0, np.sqrt(np.mean(u ** 2)) / 1.0)            # clipping_threshold 1.0
  scale = max(np.sqrt(np.mean(param.astype(np.float64) ** 2)), 1e-3)  # parameter scale
  return param - lr * scale * u


@pytest.mark.parametrize("shape,factored", [((3, 5), False), ((128, 160), True)])
def test_adafactor_first_update_matches_formula(shape, factored):
  rng = np.random.RandomState(0)
  param = rng.normal(size=shape).astype(np.float32)
  grad = rng.normal(size=shape).astype(np.float32) * np.linspace(0.1, 2, shape[1])
  opt = optimizers.adafactor(0.01)
  state = opt.tx.init({"w": jnp.asarray(param)})
  assert (state[0].v_row["w"].shape == (128,)) == factored  # T5X factors only dims >= 128
  updates, _ = opt.tx.update({"w": jnp.asarray(grad)}, state, {"w": jnp.asarray(param)})
  new = np.asarray(optax.apply_updates({"w": jnp.asarray(param)}, updates)["w"])
  expected = _t5x_reference_update(param, grad, 0.01, factored=factored)
  np.testing.assert_allclose(new, expected, rtol=1e-5, atol=1e-6)


def test_adafactor_second_step_decay_and_schedule():
  """Second step: beta2 = 1 - 2^-0.8 mixes the old estimate; lr from the rsqrt schedule."""
  param = np.array([[1.0, -2.0], [0.5, 3.0]], np.float32)
  g1 = np.array([[0.1, 0.2], [-0.3, 0.4]], np.float32)
  g2 = np.array([[0.5, -0.1], [0.2, 0.1]], np.float32)
  opt = optimizers.adafactor(optimizers.LearningRateConfig("rsqrt", 1.0, warmup_steps=4))
  state = opt.tx.init(jnp.asarray(param))
  u1, state = opt.tx.update(jnp.asarray(g1), state, jnp.asarray(param))
  p1 = np.asarray(optax.apply_updates(jnp.asarray(param), u1))
  u2, state = opt.tx.update(jnp.asarray(g2), state, jnp.asarray(p1))
  p2 = np.asarray(optax.apply_updates(jnp.asarray(p1), u2))

  v1 = g1.astype(np.float64) ** 2 + 1e-30
  beta2 = 1.0 - 2.0 ** -0.8
  v2 = beta2 * v1 + (1 - beta2) * (g2.astype(np.float64) ** 2 + 1e-30)
  u = g2 / np.sqrt(v2)
  u = u / max(1.0, np.sqrt(np.mean(u ** 2)))
  lr = 1.0 / np.sqrt(4.0)  # step 1 < warmup 4
  expected = p1 - lr * max(np.sqrt(np.mean(p1.astype(np.float64) ** 2)), 1e-3) * u
  np.testing.assert_allclose(p2, expected, rtol=1e-5)
  assert float(opt.learning_rate_fn(1)) == pytest.approx(0.5)
