"""Tests for rec_t5x.scoring: candidate ranking by teacher forcing and expected ratings."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rec_t5x import item_trie
from rec_t5x import network
from rec_t5x import partitioning
from rec_t5x import scoring

EOS = item_trie.EOS_ID
VOCAB = 12
CATALOGUE = [[5, 3, EOS], [5, 4, EOS], [6, EOS], [5, EOS], [7, 3, 3, EOS], [7, 3, EOS],
             [5, 4, 2, EOS], [8, 9, 10, EOS], [2, EOS], [9, EOS]]
ENCODER_INPUTS = np.array([[3, 4, 5, 6], [7, 8, 0, 0], [11, 2, 9, 0]], np.int32)
CANDIDATES = np.array([[4, 0, 9, 2, 7, 1, 3], [5, 8, 6, -1, -1, 0, -1], [9, 8, 7, 6, 5, 4, 3]],
                      np.int32)
FAST_COMPILE = {"xla_backend_optimization_level": 0}
# A fake vocabulary: a word-start piece (2), digits d -> 3 + d, "." -> 11.
PREFIX_PIECE, DOT = 2, 11


def _encode(text: str) -> list[int]:
  return [PREFIX_PIECE] + [DOT if c == "." else 3 + int(c) for c in text]


@pytest.fixture(scope="module")
def model():
  config = network.T5Config(vocab_size=VOCAB, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32,
                            num_encoder_layers=1, num_decoder_layers=2)
  module = network.Transformer(config)
  ones = jnp.ones((1, 3), jnp.int32)
  init = jax.jit(lambda rng: nn.unbox(module.init(rng, ones, ones, ones)["params"]),
                 compiler_options=FAST_COMPILE)
  params = init(jax.random.PRNGKey(3))
  params["decoder"]["logits_dense"] = {"kernel": params["decoder"]["logits_dense"]["kernel"] * 3}
  return module, params


@functools.lru_cache(maxsize=None)
def _partitioner():
  return partitioning.Partitioner(devices=jax.devices()[:1], compiler_options=FAST_COMPILE)


@functools.partial(jax.jit, static_argnums=0, compiler_options=FAST_COMPILE)
def _full_call_log_likelihood(module, params, encoder_inputs, targets):
  """[rows] log-likelihood through the network's `__call__` (encoder re-run for every row)."""
  inputs = jnp.concatenate([jnp.zeros_like(targets[:, :1]), targets[:, :-1]], axis=1)
  logits = module.apply({"params": params}, encoder_inputs, inputs, targets)
  token = jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], axis=-1)[..., 0]
  return jnp.sum(jnp.where(targets > 0, token, 0.0), axis=1)


def _reference_scores(module, params, trie):
  rows = np.repeat(ENCODER_INPUTS, CANDIDATES.shape[1], axis=0)
  targets = trie.item_tokens[np.maximum(CANDIDATES, 0)].reshape(rows.shape[0], -1)
  scores = np.asarray(_full_call_log_likelihood(module, params, jnp.asarray(rows),
                                                jnp.asarray(targets))).reshape(CANDIDATES.shape)
  return np.where(CANDIDATES >= 0, scores, -np.inf)


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_candidate_scores_equal_teacher_forced_log_likelihood(model, chunk_size):
  module, params = model
  trie = item_trie.build_item_trie(CATALOGUE)
  scoring.check_candidates(CANDIDATES, trie.num_items)
  part = _partitioner()
  fn = scoring.compile_score_candidates(part, module, part.replicated, chunk_size=chunk_size)
  out = fn(params, jnp.asarray(ENCODER_INPUTS), jnp.asarray(CANDIDATES),
           jnp.asarray(trie.item_tokens))
  want = _reference_scores(module, params, trie)
  np.testing.assert_allclose(np.asarray(out.scores), want, atol=1e-5, rtol=0)
  for b in range(len(CANDIDATES)):
    order = np.argsort(-want[b], kind="stable")
    np.testing.assert_array_equal(np.asarray(out.ranked_items[b]), CANDIDATES[b, order])
    np.testing.assert_allclose(np.asarray(out.ranked_scores[b]), want[b, order], atol=1e-5, rtol=0)
  # Padding candidates rank last with -inf.
  assert np.asarray(out.ranked_items[1, -3:]).tolist() == [-1, -1, -1]
  assert np.all(np.isneginf(np.asarray(out.ranked_scores[1, -3:])))


def test_rating_tokens_find_the_shared_prefix_and_the_deciding_token():
  rating = scoring.rating_tokens(_encode, [1, 2, 3, 4, 5])
  assert rating.prefix == (PREFIX_PIECE,)
  assert rating.first_tokens == (4, 5, 6, 7, 8)
  assert rating.sequences[3] == (PREFIX_PIECE, 7, EOS)
  halves = scoring.rating_tokens(_encode, [3, 3.5, 4])
  assert halves.first_tokens is None and halves.prefix == (PREFIX_PIECE,)
  assert halves.sequences[1] == (PREFIX_PIECE, 6, DOT, 8, EOS)


def _uniform_model(model):
  """The model with the final decoder norm zeroed: every decoder logit is 0 (uniform outputs)."""
  module, params = model
  params = jax.tree.map(lambda x: x, params)
  params["decoder"]["decoder_norm"] = {
      "scale": jnp.zeros_like(params["decoder"]["decoder_norm"]["scale"])}
  return module, params


def _expected_rating(module, params, rating):
  part = _partitioner()
  fn = scoring.compile_expected_rating(part, module, part.replicated, rating)
  return fn(params, jnp.asarray(ENCODER_INPUTS))


def test_expected_rating_of_a_uniform_model_is_computed_by_hand(model):
  module, params = _uniform_model(model)
  single = _expected_rating(module, params, scoring.rating_tokens(_encode, [1, 2, 3, 4, 5]))
  np.testing.assert_allclose(np.asarray(single.probs), np.full((3, 5), 0.2), atol=1e-6)
  np.testing.assert_allclose(np.asarray(single.expected), [3.0] * 3, atol=1e-5)
  np.testing.assert_allclose(np.asarray(single.mass), [5 / VOCAB] * 3, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(single.argmax), [1.0] * 3)  # ties: the first rating
  # Whole sequences: "3" has 3 tokens with EOS, "3.5" has 5, so p("3.5") / p("3") = VOCAB ** -2.
  halves = _expected_rating(module, params, scoring.rating_tokens(_encode, [3, 3.5, 4]))
  weights = np.array([1.0, VOCAB ** -2.0, 1.0])
  probs = weights / weights.sum()
  np.testing.assert_allclose(np.asarray(halves.probs), np.tile(probs, (3, 1)), atol=1e-6)
  np.testing.assert_allclose(np.asarray(halves.expected), [probs @ [3, 3.5, 4]] * 3, atol=1e-5)
  np.testing.assert_allclose(np.asarray(halves.mass), [(2 + VOCAB ** -2.0) * VOCAB ** -3.0] * 3,
                             rtol=1e-5)


def test_expected_rating_reads_the_first_step_distribution(model):
  module, params = model
  rating = scoring.rating_tokens(_encode, [1, 2, 3, 4, 5])
  out = _expected_rating(module, params, rating)
  # Reference: the full-vocabulary distribution after the forced prefix piece, by hand.
  logits = jax.jit(module.apply, compiler_options=FAST_COMPILE)(
      {"params": params}, jnp.asarray(ENCODER_INPUTS), jnp.asarray([[0, PREFIX_PIECE]] * 3),
      jnp.asarray([[PREFIX_PIECE, 4]] * 3))
  full = np.asarray(jax.nn.softmax(logits[:, 1, :]))
  on_ratings = full[:, list(rating.first_tokens)]
  probs = on_ratings / on_ratings.sum(axis=1, keepdims=True)
  np.testing.assert_allclose(np.asarray(out.probs), probs, atol=1e-6)
  np.testing.assert_allclose(np.asarray(out.expected), probs @ np.arange(1, 6), atol=1e-5)
  np.testing.assert_allclose(np.asarray(out.mass), on_ratings.sum(axis=1), atol=1e-6)
  np.testing.assert_array_equal(np.asarray(out.argmax), 1 + np.argmax(probs, axis=1))
  assert len(set(np.round(probs[:, 0], 6))) == 3  # the examples really differ


def test_candidate_checks_name_the_bad_entry():
  with pytest.raises(ValueError, match=r"candidate_items\[1, 2\] = 10 is not an item of the "
                     r"catalogue \(item indices 0..9"):
    scoring.check_candidates(np.array([[0, 1, 2], [3, 4, 10]]), num_items=10)
  with pytest.raises(ValueError,
                     match=r"candidate_items row 0 repeats item 4 at positions \[0, 2\]"):
    scoring.check_candidates(np.array([[4, 1, 4]]), num_items=10)
  with pytest.raises(ValueError, match=r"candidate_items rows \[1\] have no candidate"):
    scoring.check_candidates(np.array([[4, 1], [-1, -1]]), num_items=10)
  with pytest.raises(ValueError, match=r"expected int \[batch, num_candidates\]"):
    scoring.check_candidates(np.array([4, 1]), num_items=10)


def test_candidates_from_tokens_reject_unknown_sequences():
  trie = item_trie.build_item_trie(CATALOGUE)
  got = scoring.candidate_items_from_tokens(trie, [[[6, EOS], [5, 3, EOS]], [[9, EOS]]])
  np.testing.assert_array_equal(got, [[2, 0], [9, -1]])
  with pytest.raises(KeyError, match=r"candidate \[1\]\[0\] \[5, 6, 1\] is not an item"):
    scoring.candidate_items_from_tokens(trie, [[[6, EOS]], [[5, 6, EOS]]])


def test_rating_tokens_reject_ambiguous_ratings():
  with pytest.raises(ValueError, match=r"ratings '4' and 'four' both encode to \[2, 7, 1\]"):
    scoring.rating_tokens(lambda t: _encode("4"), [4, 5], texts=["4", "four"])
  with pytest.raises(ValueError, match="expected distinct finite numbers"):
    scoring.rating_tokens(_encode, [4, 4])
  with pytest.raises(ValueError, match="at least 2 ratings"):
    scoring.rating_tokens(_encode, [4])
