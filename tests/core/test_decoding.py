"""Tests for rec_t5x.decoding: greedy ids, cache vs teacher forcing, EOS, prompts, sampling."""
import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rec_t5x import checkpoint_import
from rec_t5x import decoding
from rec_t5x import network


@functools.lru_cache(maxsize=None)
def _generate(config, length, temperature=0.0, num_decodes=1):
  module = network.Transformer(config)
  return jax.jit(functools.partial(decoding.generate, module, max_decode_length=length, eos_id=1,
                                   temperature=temperature, num_decodes=num_decodes))


def _load(fixtures, fmt):
  if fmt == "hf":
    params, config = checkpoint_import.load_hf(fixtures / "hf_t5")
    return params, config, fixtures / "hf_reference"
  config = checkpoint_import.t5x_config_from_json(fixtures / "t5x_config.json")
  loader = {"t5x_legacy": checkpoint_import.load_t5x_legacy,
            "t5x_orbax": checkpoint_import.load_t5x_orbax}[fmt]
  return loader(fixtures / fmt / "checkpoint_0"), config, fixtures / "t5x_reference"


@pytest.fixture(scope="module")
def encoder_tokens(shared_fixtures):
  return np.load(shared_fixtures / "inputs" / "encoder_input_tokens.npy")


@pytest.mark.parametrize("fmt", ["t5x_legacy", "t5x_orbax", "hf"])
def test_greedy_ids_equal_the_reference(shared_fixtures, encoder_tokens, fmt):
  params, config, reference = _load(shared_fixtures, fmt)
  want = np.load(reference / "greedy_ids.npy")
  sequences, log_probs = _generate(config, want.shape[1])(params, encoder_tokens)
  assert sequences.shape == (want.shape[0], 1, want.shape[1])
  np.testing.assert_array_equal(np.asarray(sequences[:, 0]), want)
  summary = json.loads((reference / "summary.json").read_text())
  if "greedy_sum_log_prob" in summary:
    np.testing.assert_allclose(np.asarray(log_probs[:, 0]), summary["greedy_sum_log_prob"],
                               atol=1e-3)


def test_cached_greedy_equals_step_by_step_teacher_forced_argmax(shared_fixtures, encoder_tokens):
  params, config, reference = _load(shared_fixtures, "t5x_legacy")
  length = np.load(reference / "greedy_ids.npy").shape[1]  # reuses the compiled greedy decoder
  sequences, _ = _generate(config, length)(params, encoder_tokens)
  apply = jax.jit(network.Transformer(config).apply)
  batch = encoder_tokens.shape[0]
  decoder_inputs = np.zeros((batch, length), np.int32)
  ones = np.ones_like(decoder_inputs)  # all positions valid; causality hides the future ones
  expected = np.zeros((batch, length), np.int32)
  for i in range(length):
    logits = np.asarray(apply({"params": params}, encoder_tokens, decoder_inputs, ones))
    expected[:, i] = logits[:, i].argmax(-1)
    if i + 1 < length:
      decoder_inputs[:, i + 1] = expected[:, i]
  np.testing.assert_array_equal(np.asarray(sequences[:, 0]), expected)


def test_bfloat16_generation_runs(shared_fixtures, encoder_tokens):
  params, config, _ = _load(shared_fixtures, "t5x_legacy")
  config = dataclasses.replace(config, dtype="bfloat16")
  sequences, log_probs = _generate(config, 3)(params, encoder_tokens)
  assert sequences.shape == (encoder_tokens.shape[0], 1, 3)
  assert np.all((np.asarray(sequences) >= 0) & (np.asarray(sequences) < config.vocab_size))
  assert np.all(np.isfinite(np.asarray(log_probs)))


# --------------------------------------------------------------------------------------------------
# Search logic with scripted models (no network).


def _scripted_model(script, vocab=8):
  """TokensToLogits whose step-i logits favour `script[row][i]`; the cache records fed tokens."""
  script = jnp.asarray(script, jnp.int32)
  batch, steps = script.shape

  def tokens_to_logits(token_ids, cache):
    step = cache["step"]
    target = jax.lax.dynamic_index_in_dim(script, jnp.minimum(step, steps - 1), axis=1,
                                          keepdims=False)
    logits = jnp.where(jnp.arange(vocab)[None, :] == target[:, None], 2.0, 0.0)
    fed = jax.lax.dynamic_update_slice_in_dim(cache["fed"], token_ids, step, axis=1)
    return logits, {"step": step + 1, "fed": fed}

  cache = {"step": jnp.zeros((), jnp.int32), "fed": jnp.full((batch, steps), -1, jnp.int32)}
  return tokens_to_logits, cache


def _log_p_top(vocab=8):
  return float(2.0 - np.log(np.exp(2.0) + vocab - 1))


def test_rows_continue_with_zeros_after_eos_and_stop_scoring():
  tokens_to_logits, cache = _scripted_model([[5, 1, 6, 7, 7], [3, 1, 5, 6, 7], [2, 3, 4, 5, 6]])
  sequences, log_probs = decoding.temperature_sample(jnp.zeros((3, 5), jnp.int32), cache,
                                                     tokens_to_logits, eos_id=1, temperature=0.0)
  np.testing.assert_array_equal(np.asarray(sequences[:, 0]),
                                [[5, 1, 0, 0, 0], [3, 1, 0, 0, 0], [2, 3, 4, 5, 6]])
  np.testing.assert_allclose(np.asarray(log_probs[:, 0]), np.array([2, 2, 5]) * _log_p_top(),
                             rtol=1e-5)


def test_outputs_are_fed_back_and_the_loop_stops_when_all_rows_ended():
  tokens_to_logits, cache = _scripted_model([[1, 6, 6, 6, 6], [2, 1, 6, 6, 6]])
  fed = []

  def recording(token_ids, c):
    jax.debug.callback(lambda t: fed.append(np.asarray(t)[:, 0]), token_ids, ordered=True)
    return tokens_to_logits(token_ids, c)

  sequences, _ = decoding.temperature_sample(jnp.zeros((2, 5), jnp.int32), cache, recording,
                                             eos_id=1, temperature=0.0)
  jax.effects_barrier()
  np.testing.assert_array_equal(np.asarray(sequences[:, 0]), [[1, 0, 0, 0, 0], [2, 1, 0, 0, 0]])
  # Each output is fed back: step 0 feeds the start ids, step 1 the outputs of step 0 (row 0's
  # EOS, row 1's 2). Then both rows have ended and the loop stops: no third call, and the
  # remaining positions stay 0.
  np.testing.assert_array_equal(np.stack(fed), [[0, 0], [1, 2]])


def test_forced_prompt_tokens_are_kept_and_not_scored():
  tokens_to_logits, cache = _scripted_model([[5, 5, 5, 5], [6, 6, 6, 6]])
  prompt = jnp.array([[0, 3, 4, 0], [0, 0, 0, 0]], jnp.int32)
  sequences, log_probs = decoding.temperature_sample(prompt, cache, tokens_to_logits, eos_id=1,
                                                     temperature=0.0)
  np.testing.assert_array_equal(np.asarray(sequences[:, 0]), [[3, 4, 5, 5], [6, 6, 6, 6]])
  np.testing.assert_allclose(np.asarray(log_probs[:, 0]), [2 * _log_p_top(), 4 * _log_p_top()],
                             rtol=1e-5)


def test_sampling_follows_the_softmax_of_tempered_logits():
  logits = jnp.log(jnp.array([0.1, 0.2, 0.3, 0.4]))
  rows = 4000

  def tokens_to_logits(token_ids, cache):
    return jnp.broadcast_to(logits, (token_ids.shape[0], 4)), cache

  sample = jax.jit(functools.partial(decoding.temperature_sample, tokens_to_logits=tokens_to_logits,
                                     eos_id=7), static_argnames=("temperature", "topk", "topp"))
  inputs = jnp.zeros((rows, 1), jnp.int32)
  seqs, _ = sample(inputs, {}, rng=jax.random.PRNGKey(0), temperature=1.0)
  freq = np.bincount(np.asarray(seqs).ravel(), minlength=4) / rows
  np.testing.assert_allclose(freq, [0.1, 0.2, 0.3, 0.4], atol=0.03)
  # Temperature 0.5 squares the probabilities; top-k 3 then drops token 0: p ~ [0, 4, 9, 16] / 29.
  hot, _ = sample(inputs, {}, rng=jax.random.PRNGKey(1), temperature=0.5, topk=3)
  freq_hot = np.bincount(np.asarray(hot).ravel(), minlength=4) / rows
  assert freq_hot[0] == 0.0
  np.testing.assert_allclose(freq_hot, np.array([0, 4, 9, 16]) / 29, atol=0.03)


def test_num_decodes_repeats_the_cache_and_samples_independently():
  vocab = 50

  def tokens_to_logits(token_ids, cache):
    logits = jnp.zeros((token_ids.shape[0], vocab)) + cache["row_bias"]
    return logits, cache

  row_bias = np.zeros((2, vocab), np.float32)
  row_bias[1, 7] = 100.0
  sample = jax.jit(functools.partial(decoding.temperature_sample, tokens_to_logits=tokens_to_logits,
                                     eos_id=99, temperature=1.0, num_decodes=3))
  inputs = np.zeros((2, 6), np.int32)
  seqs, log_probs = sample(inputs, {"row_bias": row_bias}, rng=jax.random.PRNGKey(0))
  assert seqs.shape == (2, 3, 6) and log_probs.shape == (2, 3)
  assert len({tuple(s) for s in np.asarray(seqs[0])}) == 3  # uniform row: distinct samples
  np.testing.assert_array_equal(np.asarray(seqs[1]), 7)  # the cache row was repeated per sample
  again, _ = sample(inputs, {"row_bias": row_bias}, rng=jax.random.PRNGKey(0))
  np.testing.assert_array_equal(np.asarray(again), np.asarray(seqs))


def test_filter_logits_and_argument_errors():
  logits = jnp.array([[1.0, 4.0, 2.0, 3.0]])
  kept = np.asarray(decoding.filter_logits(logits, topk=2)) > decoding.NEG_INF
  np.testing.assert_array_equal(kept, [[False, True, False, True]])
  probs = jnp.log(jnp.array([[0.1, 0.2, 0.3, 0.4]]))
  for topp, want in ((0.65, [False, False, True, True]), (0.4, [False, False, False, True]),
                     (0.71, [False, True, True, True])):  # smallest set with mass >= topp
    kept = np.asarray(decoding.filter_logits(probs, topp=topp)) > decoding.NEG_INF
    np.testing.assert_array_equal(kept[0], want, err_msg=str(topp))
  tokens_to_logits, cache = _scripted_model([[2]])
  with pytest.raises(ValueError, match="rng"):
    decoding.temperature_sample(jnp.zeros((1, 1), jnp.int32), cache, tokens_to_logits, eos_id=1,
                                temperature=1.0)
  with pytest.raises(ValueError, match="temperature=-1"):
    decoding.temperature_sample(jnp.zeros((1, 1), jnp.int32), cache, tokens_to_logits, eos_id=1,
                                temperature=-1.0)
