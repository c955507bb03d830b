"""Training configuration and the early-stopping loop shared by the trainable baselines.

`fit` runs epochs of a model-supplied `epoch_fn`, evaluates validation NDCG@10 every
`eval_every` epochs, keeps a host copy of the best parameters, and stops on patience, on
`max_epochs` or on the wall-clock cap `max_train_seconds` (checked between epochs, so the epoch in
progress always finishes). It returns the best parameters, not the last ones.

Written here rather than taken from a library: clu / orbax provide periodic actions and
checkpoint managers, but not "keep the best by a validation metric and stop after N evaluations
without improvement", which is ten lines.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from rec_t5x.baselines import evaluation

EARLY_STOPPING_METRIC = "ndcg@10"
Log = Callable[[str], None]


def _require(condition: bool, cls_name: str, field: str, value: Any, allowed: str) -> None:
  if not condition:
    raise ValueError(f"{cls_name}.{field} = {value!r}; expected {allowed}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Optimisation, early stopping and evaluation settings shared by every baseline.

  Attributes:
    learning_rate: Adam learning rate (RecBole default 1e-3).
    batch_size: training examples per step (pairs for BPR/LightGCN, windows for SASRec).
    max_epochs: hard limit on epochs.
    patience: stop after this many evaluations without a better validation NDCG@10.
    eval_every: evaluate validation every this many epochs.
    max_train_seconds: wall-clock cap on training (None = no cap); the running epoch finishes.
    eval_batch_size: users scored at once ([eval_batch_size, num_items] floats).
    top_n: length of the saved per-user top lists.
    seed: seeds initialisation, shuffling, negative sampling and dropout.
  """
  learning_rate: float = 1e-3
  batch_size: int = 2048
  max_epochs: int = 300
  patience: int = 5
  eval_every: int = 1
  max_train_seconds: float | None = None
  eval_batch_size: int = 1024
  top_n: int = 100
  seed: int = 0

  def __post_init__(self):
    name = type(self).__name__
    _require(math.isfinite(self.learning_rate) and self.learning_rate > 0, name, "learning_rate",
             self.learning_rate, "a finite float > 0")
    for field in ("batch_size", "max_epochs", "patience", "eval_every", "eval_batch_size"):
      value = getattr(self, field)
      _require(isinstance(value, int) and value >= 1, name, field, value, "an integer >= 1")
    _require(self.max_train_seconds is None or self.max_train_seconds > 0, name,
             "max_train_seconds", self.max_train_seconds, "None or a number > 0")
    _require(isinstance(self.top_n, int) and self.top_n >= 20, name, "top_n", self.top_n,
             "an integer >= 20 (the largest reported cut-off)")
    _require(isinstance(self.seed, int), name, "seed", self.seed, "an integer")


@dataclasses.dataclass(frozen=True)
class FitResult:
  """What `fit` returns.

  Attributes:
    params: host (numpy) copy of the best parameters (by validation NDCG@10).
    best_epoch: 1-based epoch of the best parameters (0 = the initial parameters).
    best_metric: their validation NDCG@10.
    epochs: epochs run.
    stop_reason: "patience", "max_epochs", "wall_clock_cap" or "no_training".
    train_seconds: wall-clock seconds of the loop, validation included.
    history: one dict per evaluation: epoch, loss, seconds, and the validation metrics.
  """
  params: Any
  best_epoch: int
  best_metric: float
  epochs: int
  stop_reason: str
  train_seconds: float
  history: list[dict[str, float]]


def host_copy(tree: Any) -> Any:
  """A numpy copy of a pytree of arrays (a copy, so later buffer donation cannot alias it)."""
  return jax.tree.map(lambda x: np.array(x, copy=True), tree)


EpochFn = Callable[[Any, int], tuple[Any, float]]
ParamsFn = Callable[[Any], Any]
ValidateFn = Callable[[Any], dict[str, float]]


def fit(state: Any, epoch_fn: EpochFn, params_of: ParamsFn, validate: ValidateFn,
        config: TrainConfig, log: Log = print) -> FitResult:
  """Trains with early stopping on validation NDCG@10 and returns the best parameters.

  Args:
    state: initial training state (parameters and optimiser state, any pytree or object).
    epoch_fn: `(state, epoch) -> (state, mean_loss)` runs one epoch (epoch is 1-based).
    params_of: `state -> params`, the parameters `validate` needs.
    validate: `params -> metrics` on the validation split; must contain "ndcg@10".
    config: the `TrainConfig`.
    log: receives one line per evaluation.

  Returns:
    The `FitResult`; `params` is the best evaluated parameters (the initial ones when no epoch
    beat them).
  """
  start = time.perf_counter()
  best_params = host_copy(params_of(state))
  best_metric = validate(best_params)[EARLY_STOPPING_METRIC]
  best_epoch, bad_evals, stop_reason, epoch = 0, 0, "max_epochs", 0
  history: list[dict[str, float]] = []
  losses: list[float] = []
  log(f"epoch 0: validation {EARLY_STOPPING_METRIC} {best_metric:.4f} (initial parameters)")
  for epoch in range(1, config.max_epochs + 1):
    state, loss = epoch_fn(state, epoch)
    losses.append(float(loss))
    if not math.isfinite(losses[-1]):
      raise FloatingPointError(f"training loss became {losses[-1]} at epoch {epoch}; lower "
                               "TrainConfig.learning_rate")
    elapsed = time.perf_counter() - start
    capped = config.max_train_seconds is not None and elapsed >= config.max_train_seconds
    if epoch % config.eval_every == 0 or epoch == config.max_epochs or capped:
      params = params_of(state)
      metrics = validate(params)
      value = metrics[EARLY_STOPPING_METRIC]
      history.append({"epoch": float(epoch), "loss": float(np.mean(losses)),
                      "seconds": time.perf_counter() - start, **metrics})
      losses = []
      improved = value > best_metric
      if improved:
        best_params, best_metric, best_epoch, bad_evals = host_copy(params), value, epoch, 0
      else:
        bad_evals += 1
      log(f"epoch {epoch}: loss {history[-1]['loss']:.4f} validation {EARLY_STOPPING_METRIC} "
          f"{value:.4f} (best {best_metric:.4f} at epoch {best_epoch}) "
          f"{history[-1]['seconds']:.0f}s")
      if bad_evals >= config.patience:
        stop_reason = "patience"
        break
    if capped:
      stop_reason = "wall_clock_cap"
      break
  return FitResult(params=best_params, best_epoch=best_epoch, best_metric=float(best_metric),
                   epochs=epoch, stop_reason=stop_reason,
                   train_seconds=time.perf_counter() - start, history=history)


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  """A trained baseline, ready to evaluate and save.

  Attributes:
    name: model name ("pop", "bpr_mf", "sasrec", "lightgcn").
    make_scorer: `split -> Scorer` scoring the whole catalogue for that split's rows.
    fit: the training record.
    embeddings: arrays to save, e.g. "user_embeddings" float32 [num_users, dim] and
      "item_embeddings" float32 [num_items, dim] (Pop: "item_counts").
  """
  name: str
  make_scorer: Callable[[evaluation.EvalSplit], evaluation.Scorer]
  fit: FitResult
  embeddings: dict[str, np.ndarray]


def no_training_fit(seconds: float, validation_metric: float) -> FitResult:
  """The `FitResult` of a model without training epochs (Pop)."""
  return FitResult(params=None, best_epoch=0, best_metric=validation_metric, epochs=0,
                   stop_reason="no_training", train_seconds=seconds, history=[])


def shuffled_batches(num_examples: int, batch_size: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """A random order of all examples, padded to whole batches.

  Nothing is dropped: the last batch is padded with example 0 and a weight of 0.

  Args:
    num_examples: examples in the epoch (>= 1).
    batch_size: examples per step.
    rng: numpy generator.

  Returns:
    (indices int64 [steps, batch_size], weights float32 [steps, batch_size]).
  """
  steps = -(-num_examples // batch_size)
  order = rng.permutation(num_examples)
  pad = steps * batch_size - num_examples
  indices = np.concatenate([order, np.zeros(pad, dtype=order.dtype)]).reshape(steps, batch_size)
  weights = np.concatenate([np.ones(num_examples, np.float32), np.zeros(pad, np.float32)])
  return indices.astype(np.int64), weights.reshape(steps, batch_size)
