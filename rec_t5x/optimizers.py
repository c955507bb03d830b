"""Adafactor with T5X's defaults, and learning-rate schedules.

The optimizer is optax's `adafactor`; this module only fixes T5X's defaults (decay rate 0.8,
factored second moments for matrices whose two largest dims are >= 128, update clipping at RMS 1.0,
updates scaled by the parameter's RMS (at least 1e-3), no momentum, epsilon 1e-30) and bundles the
transformation with the schedule it uses, so the trainer can report the learning rate.

Schedules (all functions of the integer step counted from 0, as T5X's):
  constant:      lr = base
  rsqrt:         lr = base / sqrt(max(step, warmup_steps))        (T5X's "constant * rsqrt_decay")
  linear_decay:  linear warm-up from 0 to base over warmup_steps, then linear decay to
                 end_learning_rate at step warmup_steps + decay_steps, constant afterwards.

Gradient accumulation is not done with `optax.MultiSteps`: `trainer.train_step` splits a batch into
microbatches and sums their gradients of the loss normalised by the whole batch's token count,
which equals the full-batch gradient exactly (MultiSteps averages per-microbatch normalised
gradients, which differs when microbatches hold different numbers of target tokens).
"""
import dataclasses
from typing import Callable

import jax.numpy as jnp
import optax

Schedule = Callable[[jnp.ndarray], jnp.ndarray]
SCHEDULES = ("constant", "rsqrt", "linear_decay")


@dataclasses.dataclass(frozen=True)
class LearningRateConfig:
  """Learning-rate schedule.

  Attributes:
    schedule: one of SCHEDULES.
    base_learning_rate: peak learning rate (> 0). T5X fine-tuning uses constant 1e-3;
      pre-training uses rsqrt with base 1.0 and 10,000 warm-up steps.
    warmup_steps: rsqrt: the flat start (lr = base / sqrt(warmup_steps) until then), >= 1;
      linear_decay: steps of linear warm-up (>= 0). Ignored for constant.
    decay_steps: linear_decay: steps from the peak to end_learning_rate (>= 1).
    end_learning_rate: linear_decay: final value (>= 0).
  """
  schedule: str = "constant"
  base_learning_rate: float = 1e-3
  warmup_steps: int = 0
  decay_steps: int = 0
  end_learning_rate: float = 0.0

  def __post_init__(self):
    if self.schedule not in SCHEDULES:
      raise ValueError(f"LearningRateConfig.schedule={self.schedule!r}: expected one of "
                       f"{SCHEDULES}")
    if not self.base_learning_rate > 0:
      raise ValueError(f"LearningRateConfig.base_learning_rate={self.base_learning_rate}: "
                       "expected > 0")
    if self.warmup_steps < 0:
      raise ValueError(f"LearningRateConfig.warmup_steps={self.warmup_steps}: expected >= 0")
    if self.schedule == "rsqrt" and self.warmup_steps < 1:
      raise ValueError(f"LearningRateConfig.warmup_steps={self.warmup_steps}: the rsqrt schedule "
                       "needs >= 1 (lr = base / sqrt(max(step, warmup_steps)))")
    if self.schedule == "linear_decay" and self.decay_steps < 1:
      raise ValueError(f"LearningRateConfig.decay_steps={self.decay_steps}: the linear_decay "
                       "schedule needs >= 1")
    if self.end_learning_rate < 0:
      raise ValueError(f"LearningRateConfig.end_learning_rate={self.end_learning_rate}: "
                       "expected >= 0")


def rsqrt_schedule(base_learning_rate: float, warmup_steps: int) -> Schedule:
  """lr(step) = base / sqrt(max(step, warmup_steps)); flat during warm-up, as T5X."""
  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    return base_learning_rate / jnp.sqrt(jnp.maximum(step, float(warmup_steps)))
  return schedule


def make_schedule(config: LearningRateConfig) -> Schedule:
  """The schedule function of `config` (step int -> float32 learning rate)."""
  base = config.base_learning_rate
  if config.schedule == "constant":
    return optax.constant_schedule(base)
  if config.schedule == "rsqrt":
    return rsqrt_schedule(base, config.warmup_steps)
  decay = optax.linear_schedule(base, config.end_learning_rate, config.decay_steps)
  if config.warmup_steps == 0:
    return decay
  warmup = optax.linear_schedule(0.0, base, config.warmup_steps)
  return optax.join_schedules([warmup, decay], [config.warmup_steps])


@dataclasses.dataclass(frozen=True)
class AdafactorConfig:
  """optax.adafactor arguments with T5X's defaults.

  Attributes:
    decay_rate: exponent of the second-moment decay 1 - (step + 1)^-decay_rate (T5X: 0.8).
    step_offset: subtracted from the step in that decay (T5X fine-tuning may set it).
    factored: factor second moments of matrices into row and column statistics.
    min_dim_size_to_factor: factor only if the two largest dims are both >= this (T5X: 128).
    clipping_threshold: clip each update to this RMS (T5X: 1.0); None disables.
    multiply_by_parameter_scale: scale updates by max(RMS(param), 1e-3) (T5X: True).
    momentum: first-moment decay; None (T5X default) keeps no momentum.
    epsilon: added to squared gradients (T5X's epsilon1: 1e-30).
    weight_decay_rate: decoupled weight decay; None disables (T5X default).
  """
  decay_rate: float = 0.8
  step_offset: int = 0
  factored: bool = True
  min_dim_size_to_factor: int = 128
  clipping_threshold: float | None = 1.0
  multiply_by_parameter_scale: bool = True
  momentum: float | None = None
  epsilon: float = 1e-30
  weight_decay_rate: float | None = None

  def __post_init__(self):
    if not 0.0 < self.decay_rate <= 1.0:
      raise ValueError(f"AdafactorConfig.decay_rate={self.decay_rate}: expected in (0, 1]")
    if self.min_dim_size_to_factor < 1:
      raise ValueError(f"AdafactorConfig.min_dim_size_to_factor={self.min_dim_size_to_factor}: "
                       "expected >= 1")
    if self.clipping_threshold is not None and not self.clipping_threshold > 0:
      raise ValueError(f"AdafactorConfig.clipping_threshold={self.clipping_threshold}: "
                       "expected > 0 or None")
    if self.momentum is not None and not 0.0 <= self.momentum < 1.0:
      raise ValueError(f"AdafactorConfig.momentum={self.momentum}: expected in [0, 1) or None")
    if not self.epsilon > 0:
      raise ValueError(f"AdafactorConfig.epsilon={self.epsilon}: expected > 0")
    if self.weight_decay_rate is not None and self.weight_decay_rate < 0:
      raise ValueError(f"AdafactorConfig.weight_decay_rate={self.weight_decay_rate}: "
                       "expected >= 0 or None")


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """An optax transformation and the learning-rate schedule inside it.

  Attributes:
    tx: the gradient transformation (its state counts steps like `TrainState.step`).
    learning_rate_fn: step -> learning rate, for metrics.
  """
  tx: optax.GradientTransformation
  learning_rate_fn: Schedule


def adafactor(learning_rate: LearningRateConfig | Schedule | float = LearningRateConfig(),
              config: AdafactorConfig = AdafactorConfig()) -> Optimizer:
  """Adafactor with T5X's defaults.

  Args:
    learning_rate: a LearningRateConfig, a schedule function, or a constant.
    config: Adafactor options.

  Returns:
    Optimizer(tx, learning_rate_fn).
  """
  if isinstance(learning_rate, LearningRateConfig):
    schedule = make_schedule(learning_rate)
  elif callable(learning_rate):
    schedule = learning_rate
  else:
    schedule = optax.constant_schedule(float(learning_rate))
  tx = optax.adafactor(
      learning_rate=schedule,
      min_dim_size_to_factor=config.min_dim_size_to_factor,
      decay_rate=config.decay_rate,
      decay_offset=config.step_offset,
      multiply_by_parameter_scale=config.multiply_by_parameter_scale,
      clipping_threshold=config.clipping_threshold,
      momentum=config.momentum,
      weight_decay_rate=config.weight_decay_rate,
      eps=config.epsilon,
      factored=config.factored)
  return Optimizer(tx=tx, learning_rate_fn=schedule)
