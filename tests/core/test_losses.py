"""Tests for rec_t5x.losses against numpy computations written from the definitions."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rec_t5x import losses

LOGITS = np.array([[[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 3.0, -2.0], [1.0, 1.0, 1.0, 1.0]],
                   [[-1.0, 4.0, 0.0, 0.5], [0.0, 0.0, 0.0, 5.0], [2.0, -3.0, 1.0, 0.0]]],
                  np.float32)
TARGETS = np.array([[1, 2, 3], [1, 3, 0]], np.int32)   # last token of row 1 is padding
WEIGHTS = (TARGETS > 0).astype(np.float32)


def _numpy_reference(logits, targets, weights, z_loss, smoothing):
  """Soft-target cross entropy with an explicit one-hot; returns (loss, z, ce) normalised."""
  logits = logits.astype(np.float64)
  vocab = logits.shape[-1]
  log_z = np.log(np.sum(np.exp(logits), axis=-1))
  log_probs = logits - log_z[..., None]
  q = np.full(logits.shape, smoothing / (vocab - 1))
  np.put_along_axis(q, targets[..., None], 1.0 - smoothing, axis=-1)
  entropy_q = -np.sum(np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0), axis=-1)
  ce = -np.sum(q * log_probs, axis=-1) - entropy_q
  z = z_loss * log_z ** 2
  n = weights.sum()
  return (np.sum((ce + z) * weights) / n, np.sum(z * weights) / n, np.sum(ce * weights) / n)


@pytest.mark.parametrize("z_loss,smoothing", [(0.0, 0.0), (1e-4, 0.0), (0.0, 0.1), (0.01, 0.2)])
def test_weighted_cross_entropy_matches_numpy(z_loss, smoothing):
  out = losses.weighted_cross_entropy(jnp.asarray(LOGITS), jnp.asarray(TARGETS),
                                      jnp.asarray(WEIGHTS), z_loss=z_loss,
                                      label_smoothing=smoothing)
  loss, z, ce = _numpy_reference(LOGITS, TARGETS, WEIGHTS, z_loss, smoothing)
  np.testing.assert_allclose([out.loss, out.z_loss, out.cross_entropy], [loss, z, ce], rtol=1e-5,
                             atol=1e-7)
  assert float(out.weight_sum) == 5.0


def test_plain_cross_entropy_by_hand():
  """Row 0, token 0: logits [2, .5, -1, 0], target 1: -log softmax = logsumexp - 0.5."""
  lse = np.log(np.exp(2.0) + np.exp(0.5) + np.exp(-1.0) + 1.0)
  ce, z = losses.token_losses(jnp.asarray(LOGITS), jnp.asarray(TARGETS), z_loss=1e-4)
  assert float(ce[0, 0]) == pytest.approx(lse - 0.5, rel=1e-6)
  assert float(z[0, 0]) == pytest.approx(1e-4 * lse ** 2, rel=1e-5)


def test_smoothing_constant_makes_perfect_prediction_cost_zero():
  # Logits whose softmax is exactly the smoothed target distribution: loss 0.
  s, vocab = 0.1, 4
  probs = np.full(vocab, s / (vocab - 1))
  probs[2] = 1 - s
  logits = jnp.asarray(np.log(probs)[None, None, :], jnp.float32)
  out = losses.weighted_cross_entropy(logits, jnp.asarray([[2]]), label_smoothing=s)
  assert abs(float(out.cross_entropy)) < 1e-6


def test_padding_is_ignored_and_normalizer_override():
  base = losses.weighted_cross_entropy(jnp.asarray(LOGITS), jnp.asarray(TARGETS))  # weights: t > 0
  changed = LOGITS.copy()
  changed[1, 2] = [9.0, -9.0, 3.0, 0.0]  # the padded position
  out = losses.weighted_cross_entropy(jnp.asarray(changed), jnp.asarray(TARGETS))
  assert float(out.loss) == pytest.approx(float(base.loss), rel=1e-7)
  doubled = losses.weighted_cross_entropy(jnp.asarray(LOGITS), jnp.asarray(TARGETS),
                                          normalizer=10.0)
  assert float(doubled.loss) == pytest.approx(float(base.loss) / 2, rel=1e-6)
  empty = losses.weighted_cross_entropy(jnp.asarray(LOGITS), jnp.zeros_like(jnp.asarray(TARGETS)))
  assert float(empty.loss) == 0.0 and float(empty.weight_sum) == 0.0


def test_z_loss_gradient_pushes_log_z_to_zero():
  logits = jnp.asarray(LOGITS) + 5.0  # log Z > 0
  grad_with = jax.grad(lambda l: losses.weighted_cross_entropy(l, TARGETS, z_loss=1.0).loss)(logits)
  grad_without = jax.grad(lambda l: losses.weighted_cross_entropy(l, TARGETS).loss)(logits)
  # Cross-entropy gradients sum to 0 over the vocabulary; the z-loss adds 2 z log Z * softmax.
  assert float(jnp.abs(grad_without.sum(-1)).max()) < 1e-6
  assert float(grad_with[0, 0].sum()) > 0


def test_token_accuracy_by_hand():
  # argmax: row 0 -> [0, 2, 0], row 1 -> [1, 3, 0]; targets [1, 2, 3], [1, 3, pad].
  correct, total = losses.token_accuracy(jnp.asarray(LOGITS), jnp.asarray(TARGETS))
  assert (float(correct), float(total)) == (3.0, 5.0)


def test_label_smoothing_range():
  with pytest.raises(ValueError, match="label_smoothing=1.0"):
    losses.token_losses(jnp.asarray(LOGITS), jnp.asarray(TARGETS), label_smoothing=1.0)
