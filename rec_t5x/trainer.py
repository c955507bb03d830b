"""Train state, pure train / eval steps, and the Trainer that compiles them once.

The steps are plain functions of (model, optimizer, state, batch, rng), built from two pieces:

  compute_grads   gradients of the loss (optionally over microbatches, summed exactly)
  apply_grads     one optax update and step + 1

`train_step` adds the metrics and the non-finite guard: when the loss or the gradient norm is NaN
or infinite, the state is returned unchanged and `metrics["nonfinite"]` is True; the training loop
then stops (`raise_if_nonfinite`) and the last good checkpoint remains the latest one.

`Trainer` derives the state shardings from the model's logical axis names, initialises the state
sharded, and hands both steps to `Partitioner.partition` (the only `jax.jit`), donating the state.
"""
from typing import Any, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec
import optax

from rec_t5x import axes
from rec_t5x import models
from rec_t5x import optimizers
from rec_t5x import partitioning

Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
  """Everything a step changes.

  Attributes:
    step: int32 scalar, number of updates applied.
    params: parameter tree (unboxed arrays).
    opt_state: the optax state of `params`.
  """
  step: jax.Array
  params: Any
  opt_state: Any

  @classmethod
  def create(cls, params: Any, tx: optax.GradientTransformation) -> "TrainState":
    return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


class NonFiniteLossError(FloatingPointError):
  """The loss or gradient norm became NaN/inf; `step` is the step whose update was refused."""

  def __init__(self, step: int, metrics: Mapping[str, Any]):
    self.step = step
    super().__init__(f"non-finite loss or gradient at step {step} (loss={float(metrics['loss'])}, "
                     f"grad_norm={float(metrics['grad_norm'])}); the update was not applied, so "
                     "the last saved checkpoint is the last good state")


def raise_if_nonfinite(metrics: Mapping[str, Any], step: int) -> None:
  """Raises NonFiniteLossError when `train_step` flagged a NaN/inf (blocks on the flag)."""
  if bool(metrics["nonfinite"]):
    raise NonFiniteLossError(step, metrics)


def _target_weights(batch: Batch) -> jax.Array:
  weights = batch.get("decoder_loss_weights")
  if weights is None:
    return (batch["decoder_target_tokens"] > 0).astype(jnp.float32)
  return weights.astype(jnp.float32)


def _split_microbatches(batch: Batch, num_microbatches: int) -> dict[str, jax.Array]:
  """[batch, ...] -> [num_microbatches, batch / num_microbatches, ...] per feature.

  Microbatch i takes rows i, i + n, i + 2n, ... (interleaved, not contiguous): each device's
  contiguous block of the 'data'-sharded batch then contributes equally to every microbatch, so
  slicing one out needs no communication. The order of rows does not change the summed result.
  """
  out = {}
  for name, value in batch.items():
    if value.shape[0] % num_microbatches:
      raise ValueError(f"feature {name!r}: batch size {value.shape[0]} is not divisible by "
                       f"num_microbatches={num_microbatches}")
    split = value.reshape((-1, num_microbatches) + value.shape[1:])
    split = jnp.swapaxes(split, 0, 1)
    out[name] = nn.with_logical_constraint(split, (None, axes.BATCH) + (None,) * (value.ndim - 1))
  return out


def compute_grads(model: models.EncoderDecoderModel, params: Any, batch: Batch,
                  dropout_rng: jax.Array | None, num_microbatches: int = 1) -> tuple[Any, Metrics]:
  """Gradients of the batch loss and additive metric sums.

  With microbatches, each microbatch's loss is divided by the number of target tokens of the
  *whole* batch, so the summed gradients equal the full-batch gradient (up to float rounding).
  Microbatch i uses dropout key fold_in(dropout_rng, i).

  Args:
    model: supplies `loss_fn`.
    params: parameter tree.
    batch: EncDec features, leading dim = batch.
    dropout_rng: PRNG key, or None for no dropout.
    num_microbatches: >= 1, must divide the batch size.

  Returns:
    (grads with the structure of params, metric sums of `model.loss_fn`).
  """
  normalizer = jnp.sum(_target_weights(batch))
  grad_fn = jax.value_and_grad(model.loss_fn, has_aux=True)
  if num_microbatches == 1:
    (_, metrics), grads = grad_fn(params, batch, dropout_rng, normalizer)
    return grads, metrics

  micro = _split_microbatches(batch, num_microbatches)

  def body(carry, inputs):
    index, microbatch = inputs
    rng = None if dropout_rng is None else jax.random.fold_in(dropout_rng, index)
    (_, metrics), grads = grad_fn(params, microbatch, rng, normalizer)
    return jax.tree.map(jnp.add, carry, (grads, metrics)), None

  zero_grads = jax.tree.map(jnp.zeros_like, params)
  _, metric_shapes = jax.eval_shape(
      grad_fn, params, jax.tree.map(lambda x: x[0], micro), dropout_rng, normalizer)[0]
  zero_metrics = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metric_shapes)
  (grads, metrics), _ = jax.lax.scan(body, (zero_grads, zero_metrics),
                                     (jnp.arange(num_microbatches), micro))
  return grads, metrics


def apply_grads(optimizer: optimizers.Optimizer, state: TrainState, grads: Any) -> TrainState:
  """One optax update; step + 1."""
  updates, opt_state = optimizer.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state)


def summarize_metrics(sums: Mapping[str, jax.Array]) -> Metrics:
  """Adds token accuracy to `loss_fn`'s metric sums."""
  metrics = dict(sums)
  total = sums["num_target_tokens"]
  metrics["accuracy"] = jnp.where(total > 0, sums["num_correct_tokens"] / jnp.maximum(total, 1e-9),
                                  0.0)
  return metrics


def train_step(model: models.EncoderDecoderModel, optimizer: optimizers.Optimizer,
               state: TrainState, batch: Batch, dropout_rng: jax.Array | None,
               num_microbatches: int = 1) -> tuple[TrainState, Metrics]:
  """One training step (pure; `Trainer` jits it).

  Returns:
    (new state, metrics) with metrics loss, z_loss, cross_entropy, accuracy, num_target_tokens
    (non-padding target tokens), num_correct_tokens, learning_rate (used for this update),
    grad_norm (global L2 norm before clipping) and nonfinite (bool; True means the state was
    returned unchanged).
  """
  grads, sums = compute_grads(model, state.params, batch, dropout_rng, num_microbatches)
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(sums["loss"]) & jnp.isfinite(grad_norm)
  updated = apply_grads(optimizer, state, grads)
  new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, state)
  metrics = summarize_metrics(sums)
  metrics.update(learning_rate=jnp.asarray(optimizer.learning_rate_fn(state.step), jnp.float32),
                 grad_norm=grad_norm, nonfinite=jnp.logical_not(finite))
  return new_state, metrics


def eval_step(model: models.EncoderDecoderModel, params: Any, batch: Batch) -> Metrics:
  """Loss and accuracy without dropout (pure)."""
  _, sums = model.loss_fn(params, batch, None)
  return summarize_metrics(sums)


def _with_shardings(abstract: Any, shardings: Any) -> Any:
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract, shardings)


class Trainer:
  """Compiled, sharded train / eval steps for one model, optimizer and mesh.

  Args:
    model: the EncoderDecoderModel.
    optimizer: `optimizers.adafactor(...)`.
    partitioner: mesh and rules; the steps are compiled through it.
    input_shapes: feature -> shape of one global batch (as `model.get_initial_variables`).
    num_microbatches: gradient accumulation inside one step; batch / num_microbatches must be
      divisible by the 'data' mesh axis.
    dropout_seed: dropout key of step s is fold_in(PRNGKey(dropout_seed), s): resumable.

  Raises:
    ValueError: before compiling, when the mesh does not divide heads / MLP / vocabulary / batch
      (for modules with a `config` carrying those fields) or any parameter dimension.
  """

  def __init__(self, model: models.EncoderDecoderModel, optimizer: optimizers.Optimizer,
               partitioner: partitioning.Partitioner, input_shapes: Mapping[str, tuple[int, ...]],
               num_microbatches: int = 1, dropout_seed: int = 0):
    if num_microbatches < 1:
      raise ValueError(f"Trainer.num_microbatches={num_microbatches}: expected >= 1")
    self.model = model
    self.optimizer = optimizer
    self.partitioner = partitioner
    self.input_shapes = dict(input_shapes)
    self.num_microbatches = num_microbatches
    self._dropout_rng = jax.random.PRNGKey(dropout_seed)
    global_batch = self.input_shapes["encoder_input_tokens"][0]
    self._check_model_config(global_batch)
    if global_batch % (num_microbatches * partitioner.data_size):
      raise ValueError(f"global batch size {global_batch} is not divisible by num_microbatches="
                       f"{num_microbatches} times the 'data' mesh axis size "
                       f"{partitioner.data_size}")

    boxed = jax.eval_shape(lambda rng: model.get_initial_variables(rng, self.input_shapes),
                           jax.random.PRNGKey(0))
    self.param_specs = partitioning.logical_specs(boxed)["params"]
    abstract_params = nn.unbox(boxed)["params"]
    partitioner.check_params_divisible(abstract_params, self.param_specs)
    abstract_opt = jax.eval_shape(optimizer.tx.init, abstract_params)
    self.state_specs = TrainState(
        step=PartitionSpec(), params=self.param_specs,
        opt_state=partitioning.optimizer_state_logical_specs(abstract_opt, abstract_params,
                                                             self.param_specs))
    self.state_shardings = partitioner.shardings(self.state_specs)
    self.abstract_state = _with_shardings(
        TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=abstract_params,
                   opt_state=abstract_opt), self.state_shardings)
    self._build_steps()

  def _check_model_config(self, global_batch: int) -> None:
    config = getattr(self.model.module, "config", None)
    fields = ("num_heads", "mlp_dim", "vocab_size")
    if config is not None and all(hasattr(config, f) for f in fields):
      self.partitioner.check_model_dims(num_heads=config.num_heads, mlp_dim=config.mlp_dim,
                                        vocab_size=config.vocab_size,
                                        global_batch_size=global_batch)
    else:
      self.partitioner.check_divisible({"batch": global_batch})

  def _build_steps(self) -> None:
    p = self.partitioner
    batch_sharding = p.batch_sharding

    def init_fn(rng):
      variables = nn.unbox(self.model.get_initial_variables(rng, self.input_shapes))
      return TrainState.create(variables["params"], self.optimizer.tx)

    def train_fn(state, batch, base_rng):
      rng = jax.random.fold_in(base_rng, state.step)
      return train_step(self.model, self.optimizer, state, batch, rng, self.num_microbatches)

    def eval_fn(params, batch):
      return eval_step(self.model, params, batch)

    def score_fn(params, batch):
      return self.model.score_batch(params, batch)

    self._init = p.partition(init_fn, in_shardings=p.replicated, out_shardings=self.state_shardings)
    self._from_params = p.partition(
        lambda params: TrainState.create(params, self.optimizer.tx),
        in_shardings=(self.state_shardings.params,), out_shardings=self.state_shardings)
    self._train = p.partition(
        train_fn, in_shardings=(self.state_shardings, batch_sharding, p.replicated),
        out_shardings=(self.state_shardings, p.replicated), donate_argnums=(0,))
    self._eval = p.partition(eval_fn, in_shardings=(self.state_shardings.params, batch_sharding),
                             out_shardings=p.replicated)
    self._score = p.partition(score_fn, in_shardings=(self.state_shardings.params, batch_sharding),
                              out_shardings=batch_sharding)

  @property
  def num_train_compilations(self) -> int:
    """Times the train step was traced; 1 after any number of same-shaped batches."""
    return self._train.num_traces

  def init_state(self, rng: jax.Array) -> TrainState:
    """A freshly initialised state, created directly in its shardings."""
    return self._init(rng)

  def state_from_params(self, params: Any) -> TrainState:
    """A step-0 state around given parameters (e.g. from `checkpoints.restore_initial`)."""
    params = jax.device_put(params, self.state_shardings.params)
    return self._from_params(params)

  def train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    """One compiled step; `state` is donated (do not reuse it).

    Args:
      state: TrainState on `state_shardings`.
      batch: global jax.Arrays on `partitioner.batch_sharding` (`Partitioner.shard_batch`, needed
        with several processes) or, with one process, numpy arrays.

    Returns:
      (new state, metrics of `train_step`, replicated scalars).
    """
    return self._train(state, batch, self._dropout_rng)

  def eval_step(self, params: Any, batch: Batch) -> Metrics:
    return self._eval(params, batch)

  def score_batch(self, params: Any, batch: Batch) -> jax.Array:
    """[batch] sum of target log-likelihoods."""
    return self._score(params, batch)
