"""EncoderDecoderModel: loss, metrics and scoring around a Flax encoder-decoder module.

The module is any Flax module with `network.Transformer`'s call signature. Batches are dicts with
the feature names of `seqio.EncDecFeatureConverter` (packed or not):

  encoder_input_tokens   [batch, enc_len] int32      decoder_target_tokens [batch, dec_len] int32
  decoder_input_tokens   [batch, dec_len] int32      decoder_loss_weights  [batch, dec_len] float
  encoder_segment_ids / decoder_segment_ids / encoder_positions / decoder_positions (packing only)

`loss_fn` returns metric *sums* that add up over microbatches (see `trainer.compute_grads`).
"""
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from rec_t5x import losses

Batch = Mapping[str, jax.Array]

REQUIRED_FEATURES = ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens")
PACKING_FEATURES = ("encoder_segment_ids", "decoder_segment_ids", "encoder_positions",
                    "decoder_positions")


class _LazySeqioFeatureConverter:
  """Class attribute that imports seqio on first access.

  `import seqio` loads TensorFlow (about 6 s and 1 GB); model code used only for scoring or tests
  should not pay that, so `EncoderDecoderModel.FEATURE_CONVERTER_CLS` resolves when read.
  """

  def __get__(self, instance, owner):
    import seqio  # pylint: disable=g-import-not-at-top
    return seqio.EncDecFeatureConverter


def _check_batch(batch: Batch) -> None:
  missing = [k for k in REQUIRED_FEATURES if k not in batch]
  if missing:
    raise KeyError(f"batch lacks features {missing}; has {sorted(batch)} (expected seqio "
                   "EncDecFeatureConverter names)")


class EncoderDecoderModel:
  """Loss and scoring for an encoder-decoder module (T5X's EncoderDecoderModel, lean).

  Args:
    module: Flax module with `network.Transformer`'s call signature.
    input_vocabulary / output_vocabulary: seqio vocabularies (kept for the binaries; the model
      itself only needs their sizes to match the module's, checked by the input pipeline).
    z_loss: z-loss weight (T5X default 1e-4).
    label_smoothing: in [0, 1).
  """

  FEATURE_CONVERTER_CLS = _LazySeqioFeatureConverter()

  def __init__(self, module: nn.Module, input_vocabulary: Any = None,
               output_vocabulary: Any = None, z_loss: float = 1e-4,
               label_smoothing: float = 0.0):
    if z_loss < 0:
      raise ValueError(f"EncoderDecoderModel.z_loss={z_loss}: expected >= 0")
    if not 0.0 <= label_smoothing < 1.0:
      raise ValueError(f"EncoderDecoderModel.label_smoothing={label_smoothing}: expected in [0, 1)")
    self.module = module
    self.input_vocabulary = input_vocabulary
    self.output_vocabulary = output_vocabulary
    self.z_loss = z_loss
    self.label_smoothing = label_smoothing

  def get_initial_variables(self, rng: jax.Array, input_shapes: Mapping[str, tuple[int, ...]],
                            input_types: Mapping[str, Any] | None = None) -> Any:
    """Freshly initialised variables (parameters boxed with their logical axis names).

    Args:
      rng: PRNG key.
      input_shapes: feature name -> shape, e.g. {"encoder_input_tokens": (8, 128),
        "decoder_input_tokens": (8, 16)}; `decoder_target_tokens` defaults to the decoder shape.
        Packing features are passed to the module when present.
      input_types: feature name -> dtype (default int32).

    Returns:
      The variables dict ({"params": ...}); use `flax.linen.unbox` / `partitioning.logical_specs`.
    """
    for name in ("encoder_input_tokens", "decoder_input_tokens"):
      if name not in input_shapes:
        raise KeyError(f"input_shapes lacks {name!r}; has {sorted(input_shapes)}")
    types = dict(input_types or {})
    shapes = dict(input_shapes)
    shapes.setdefault("decoder_target_tokens", shapes["decoder_input_tokens"])
    dummy = {k: jnp.ones(shapes[k], types.get(k, jnp.int32))
             for k in REQUIRED_FEATURES + PACKING_FEATURES if k in shapes}
    return self.module.init({"params": rng, "dropout": rng}, **dummy, enable_dropout=False)

  def compute_logits(self, params: Any, batch: Batch,
                     dropout_rng: jax.Array | None = None) -> jax.Array:
    """Teacher-forced decoder logits [batch, dec_len, vocab] float32; dropout iff a rng is given."""
    _check_batch(batch)
    features = {k: batch[k] for k in REQUIRED_FEATURES + PACKING_FEATURES if k in batch}
    rngs = {"dropout": dropout_rng} if dropout_rng is not None else None
    return self.module.apply({"params": params}, **features,
                             enable_dropout=dropout_rng is not None, rngs=rngs)

  def loss_fn(self, params: Any, batch: Batch, dropout_rng: jax.Array | None,
              normalizer: jax.Array | float | None = None
              ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Training loss and additive metric sums.

    Args:
      params: parameter tree.
      batch: EncDec features; `decoder_loss_weights` defaults to `decoder_target_tokens > 0`.
      dropout_rng: PRNG key for dropout, or None for deterministic.
      normalizer: divide losses by this instead of this batch's number of target tokens (the
        whole batch's count when this is one microbatch of it).

    Returns:
      (loss scalar, metrics) with metrics "loss", "z_loss", "cross_entropy" (normalised; add up
      over microbatches), "num_correct_tokens" and "num_target_tokens" (weighted counts).
    """
    logits = self.compute_logits(params, batch, dropout_rng)
    targets = batch["decoder_target_tokens"]
    weights = batch.get("decoder_loss_weights")
    out = losses.weighted_cross_entropy(logits, targets, weights, z_loss=self.z_loss,
                                        label_smoothing=self.label_smoothing, normalizer=normalizer)
    num_correct, num_tokens = losses.token_accuracy(logits, targets, weights)
    metrics = {"loss": out.loss, "z_loss": out.z_loss, "cross_entropy": out.cross_entropy,
               "num_correct_tokens": num_correct, "num_target_tokens": num_tokens}
    return out.loss, metrics

  def score_batch(self, params: Any, batch: Batch) -> jax.Array:
    """Sum of target-token log-likelihoods per example, [batch] float32 (no z-loss/smoothing)."""
    logits = self.compute_logits(params, batch)
    targets = batch["decoder_target_tokens"]
    weights = batch.get("decoder_loss_weights")
    if weights is None:
      weights = targets > 0
    cross_entropy, _ = losses.token_losses(logits, targets)
    return -jnp.sum(cross_entropy * weights.astype(jnp.float32), axis=-1)
