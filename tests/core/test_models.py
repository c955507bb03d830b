"""Tests for rec_t5x.models.EncoderDecoderModel (tiny network.Transformer, shared fixtures)."""
import functools
import json

import flax.linen as nn
import jax
import numpy as np
import pytest

from rec_t5x import checkpoint_import
from rec_t5x import models
from rec_t5x import network

TINY = network.T5Config(vocab_size=32, emb_dim=8, num_heads=2, head_dim=4, mlp_dim=16,
                        num_encoder_layers=1, num_decoder_layers=1, dropout_rate=0.3)
# Unoptimised XLA code compiles ~3x faster on CPU; these shapes are tiny, so run time is negligible.
fast_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _batch(rng, batch=3, enc_len=7, dec_len=5, vocab=32):
  targets = rng.randint(2, vocab, (batch, dec_len)).astype(np.int32)
  targets[1, 3:] = 0
  targets[2, 1:] = 0
  inputs = np.concatenate([np.zeros((batch, 1), np.int32), targets[:, :-1]], axis=1)
  return {"encoder_input_tokens": rng.randint(1, vocab, (batch, enc_len)).astype(np.int32),
          "decoder_input_tokens": inputs, "decoder_target_tokens": targets,
          "decoder_loss_weights": (targets > 0).astype(np.float32)}


@pytest.fixture(scope="module")
def tiny():
  model = models.EncoderDecoderModel(network.Transformer(TINY), z_loss=1e-3, label_smoothing=0.1)
  shapes = {"encoder_input_tokens": (2, 7), "decoder_input_tokens": (2, 5)}
  variables = fast_jit(lambda r: model.get_initial_variables(r, shapes))(jax.random.PRNGKey(0))
  return model, nn.unbox(variables)["params"], variables, _batch(np.random.RandomState(0))


def test_feature_converter_is_seqio_encdec():
  import seqio  # pylint: disable=g-import-not-at-top
  assert models.EncoderDecoderModel.FEATURE_CONVERTER_CLS is seqio.EncDecFeatureConverter


def test_initial_variables_carry_logical_axes(tiny):
  _, params, variables, _ = tiny
  kernel = variables["params"]["decoder"]["logits_dense"]["kernel"]
  assert isinstance(kernel, nn.LogicallyPartitioned)
  assert kernel.names == ("embed", "vocab")
  assert params["decoder"]["logits_dense"]["kernel"].shape == (8, 32)


def test_initial_variables_with_packing_features():
  model = models.EncoderDecoderModel(network.Transformer(TINY))
  shapes = {"encoder_input_tokens": (2, 7), "decoder_input_tokens": (2, 5),
            "encoder_segment_ids": (2, 7), "decoder_segment_ids": (2, 5),
            "encoder_positions": (2, 7), "decoder_positions": (2, 5)}
  abstract = jax.eval_shape(lambda r: model.get_initial_variables(r, shapes), jax.random.PRNGKey(0))
  assert "params" in abstract
  with pytest.raises(KeyError, match="input_shapes lacks 'decoder_input_tokens'"):
    model.get_initial_variables(jax.random.PRNGKey(0), {"encoder_input_tokens": (2, 7)})


def test_loss_fn_matches_numpy_from_logits(tiny):
  model, params, _, batch = tiny
  logits, (loss, metrics) = fast_jit(
      lambda p, b: (model.compute_logits(p, b), model.loss_fn(p, b, None)))(params, batch)
  logits = np.asarray(logits, np.float64)
  targets, weights = batch["decoder_target_tokens"], batch["decoder_loss_weights"]
  log_z = np.log(np.exp(logits).sum(-1))
  log_probs = logits - log_z[..., None]
  s, vocab = 0.1, TINY.vocab_size
  q = np.full(logits.shape, s / (vocab - 1))
  np.put_along_axis(q, targets[..., None], 1 - s, axis=-1)
  entropy = -(1 - s) * np.log(1 - s) - s * np.log(s / (vocab - 1))
  ce = -(q * log_probs).sum(-1) - entropy
  n = weights.sum()
  expected_ce = (ce * weights).sum() / n
  expected_z = (1e-3 * log_z ** 2 * weights).sum() / n
  np.testing.assert_allclose(float(metrics["cross_entropy"]), expected_ce, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["z_loss"]), expected_z, rtol=1e-5)
  np.testing.assert_allclose(float(loss), expected_ce + expected_z, rtol=1e-5)
  assert float(metrics["num_target_tokens"]) == n == 9
  correct = ((logits.argmax(-1) == targets) * weights).sum()
  assert float(metrics["num_correct_tokens"]) == correct


def test_loss_fn_normalizer_and_dropout(tiny):
  model, params, _, batch = tiny
  rng = jax.random.PRNGKey(1)

  @fast_jit
  def losses(p, b):
    return [model.loss_fn(p, b, r, n)[0] for r, n in [(None, None), (None, 18.0), (rng, None),
                                                        (rng, None)]]

  base, halved, dropped_a, dropped_b = losses(params, batch)  # 18 = twice the 9 target tokens
  assert float(halved) == pytest.approx(float(base) / 2, rel=1e-6)
  assert float(dropped_a) == float(dropped_b)  # same key, same mask
  assert float(dropped_a) != pytest.approx(float(base), rel=1e-4)  # dropout_rate 0.3 is active


def test_score_batch_sums_target_log_likelihood(tiny):
  model, params, _, batch = tiny
  scores, logits = fast_jit(
      lambda p, b: (model.score_batch(p, b), model.compute_logits(p, b)))(params, batch)
  scores, logits = np.asarray(scores), np.asarray(logits, np.float64)
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  token_ll = np.take_along_axis(log_probs, batch["decoder_target_tokens"][..., None], -1)[..., 0]
  expected = (token_ll * batch["decoder_loss_weights"]).sum(-1)
  assert scores.shape == (3,)
  np.testing.assert_allclose(scores, expected, rtol=1e-5)


def test_missing_feature_is_named(tiny):
  model, params, _, batch = tiny
  bad = {k: v for k, v in batch.items() if k != "decoder_input_tokens"}
  with pytest.raises(KeyError, match="batch lacks features \\['decoder_input_tokens'\\]"):
    model.compute_logits(params, bad)


@pytest.mark.parametrize("kwargs,message", [({"z_loss": -1.0}, "z_loss=-1.0"),
                                            ({"label_smoothing": 1.0}, "label_smoothing=1.0")])
def test_constructor_validation(kwargs, message):
  with pytest.raises(ValueError, match=f"EncoderDecoderModel.{message}"):
    models.EncoderDecoderModel(network.Transformer(TINY), **kwargs)


@pytest.mark.parametrize("checkpoint,reference", [("t5x_legacy/checkpoint_0", "t5x_reference"),
                                                  ("hf_t5", "hf_reference")])
def test_score_batch_reproduces_library_references(shared_fixtures, checkpoint, reference):
  """score_batch on the shared T5X / HF checkpoints equals the scores those libraries computed."""
  params, config = checkpoint_import.detect_and_load(shared_fixtures / checkpoint)
  if config is None:
    fields = json.loads((shared_fixtures / "t5x_config.json").read_text())["T5Config"]
    config = network.T5Config(**{k: (tuple(v) if isinstance(v, list) else v)
                                 for k, v in fields.items() if k != "float32_attention_logits"})
  model = models.EncoderDecoderModel(network.Transformer(config))
  inputs = shared_fixtures / "inputs"
  batch = {name: np.load(inputs / f"{name}.npy") for name in (
      "encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens",
      "decoder_loss_weights")}
  scores = np.asarray(fast_jit(model.score_batch)(params, batch))
  expected = np.load(shared_fixtures / reference / "sum_log_likelihood.npy")
  np.testing.assert_allclose(scores, expected, atol=1e-3)
