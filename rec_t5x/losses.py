"""Token cross entropy with z-loss and label smoothing, normalised by the number of target tokens.

Per target token t with logits z (vocabulary V), log-partition log Z = logsumexp(z), smoothing s:

  q(v)          = 1 - s for v = t, s / (V - 1) otherwise            (soft target)
  cross_entropy = -sum_v q(v) log softmax(z)_v - H_min                (H_min: entropy of q, so a
                                                                      perfect prediction costs 0)
  z_loss        = z_loss_weight * (log Z)^2                           (keeps log Z near 0)
  loss          = cross_entropy + z_loss

Sums over tokens are weighted by `weights` (`decoder_loss_weights`, 0 at padding) and divided by
the normaliser, by default the number of real target tokens (sum of weights, T5X's
`loss_normalizing_factor="NUM_REAL_TARGET_TOKENS"`). The formula is written out (not
`optax.softmax_cross_entropy`) because the z-loss needs log Z and the smoothing needs the constant.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp


class LossOutput(NamedTuple):
  """Scalar results of `weighted_cross_entropy` (all divided by the same normaliser).

  Attributes:
    loss: cross_entropy + z_loss, the quantity to minimise.
    z_loss: the z-loss part.
    cross_entropy: the (smoothed) cross-entropy part.
    weight_sum: sum of the token weights (real target tokens), before normalising.
  """
  loss: jax.Array
  z_loss: jax.Array
  cross_entropy: jax.Array
  weight_sum: jax.Array


def token_losses(logits: jax.Array, targets: jax.Array, z_loss: float = 0.0,
                 label_smoothing: float = 0.0) -> tuple[jax.Array, jax.Array]:
  """Per-token cross entropy and z-loss.

  Args:
    logits: [batch, length, vocab] float.
    targets: [batch, length] int target ids.
    z_loss: weight of (log Z)^2.
    label_smoothing: s in [0, 1); probability mass spread over the other V - 1 ids.

  Returns:
    (cross_entropy, z_loss) each [batch, length] float32, unweighted.
  """
  if not 0.0 <= label_smoothing < 1.0:
    raise ValueError(f"label_smoothing={label_smoothing}: expected in [0, 1)")
  logits = logits.astype(jnp.float32)
  vocab = logits.shape[-1]
  log_z = jax.nn.logsumexp(logits, axis=-1)
  log_probs = logits - log_z[..., None]
  target_log_prob = jnp.take_along_axis(log_probs, targets[..., None].astype(jnp.int32),
                                        axis=-1)[..., 0]
  if label_smoothing > 0.0:
    confidence = 1.0 - label_smoothing
    low = label_smoothing / (vocab - 1)
    others = jnp.sum(log_probs, axis=-1) - target_log_prob
    min_entropy = -(confidence * jnp.log(confidence) + (vocab - 1) * low * jnp.log(low + 1e-20))
    cross_entropy = -(confidence * target_log_prob + low * others) - min_entropy
  else:
    cross_entropy = -target_log_prob
  return cross_entropy, z_loss * jnp.square(log_z)


def _safe_divide(total: jax.Array, normalizer: jax.Array) -> jax.Array:
  """total / normalizer, and 0 where the normaliser is 0 (a batch of only padding)."""
  return jnp.where(normalizer > 0, total / jnp.where(normalizer > 0, normalizer, 1.0), 0.0)


def weighted_cross_entropy(logits: jax.Array, targets: jax.Array, weights: jax.Array | None = None,
                           z_loss: float = 0.0, label_smoothing: float = 0.0,
                           normalizer: jax.Array | float | None = None) -> LossOutput:
  """Weighted, normalised token cross entropy with z-loss.

  Args:
    logits: [batch, length, vocab].
    targets: [batch, length] int ids (0 = padding).
    weights: [batch, length] float; default `targets > 0`.
    z_loss: z-loss weight (T5X uses 1e-4).
    label_smoothing: in [0, 1).
    normalizer: divide sums by this; default the sum of weights (number of real target tokens).
      Gradient accumulation passes the whole batch's count so microbatch losses add up exactly.

  Returns:
    LossOutput of scalars.
  """
  if weights is None:
    weights = (targets > 0).astype(jnp.float32)
  weights = weights.astype(jnp.float32)
  cross_entropy, z = token_losses(logits, targets, z_loss, label_smoothing)
  weight_sum = jnp.sum(weights)
  if normalizer is None:
    normalizer = weight_sum
  normalizer = jnp.asarray(normalizer, jnp.float32)
  ce = _safe_divide(jnp.sum(cross_entropy * weights), normalizer)
  zl = _safe_divide(jnp.sum(z * weights), normalizer)
  return LossOutput(loss=ce + zl, z_loss=zl, cross_entropy=ce, weight_sum=weight_sum)


def token_accuracy(logits: jax.Array, targets: jax.Array,
                   weights: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Weighted count of tokens whose argmax equals the target.

  Args:
    logits: [batch, length, vocab].
    targets: [batch, length] int ids.
    weights: [batch, length]; default `targets > 0`.

  Returns:
    (num_correct, weight_sum) scalars; accuracy = num_correct / weight_sum.
  """
  if weights is None:
    weights = (targets > 0).astype(jnp.float32)
  weights = weights.astype(jnp.float32)
  correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  return jnp.sum(correct * weights), jnp.sum(weights)
