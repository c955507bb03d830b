"""Tests for rec_t5x.beam_search against exhaustive search with a tiny random network.

The reference scores every sequence by teacher forcing through the network's full `__call__`
(encoder re-run, no cache), independently of the cached decoding the search uses.
"""
import functools
import itertools

import flax.linen as nn
from hypothesis import given, settings, strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rec_t5x import beam_search
from rec_t5x import decoding
from rec_t5x import item_trie
from rec_t5x import layers
from rec_t5x import network
from rec_t5x import partitioning

EOS = item_trie.EOS_ID
VOCAB = 12
CATALOGUE = [[5, 3, EOS], [5, 4, EOS], [6, EOS], [5, EOS], [7, 3, 3, EOS], [7, 3, EOS],
             [5, 4, 2, EOS], [8, 9, 10, EOS], [2, EOS], [9, EOS]]
ENCODER_INPUTS = np.array([[3, 4, 5, 6], [7, 8, 0, 0], [11, 2, 9, 0]], np.int32)
FAST_COMPILE = {"xla_backend_optimization_level": 0}


@functools.lru_cache(maxsize=None)
def _init_fn(module):
  ones = jnp.ones((1, 3), jnp.int32)
  return jax.jit(lambda rng: nn.unbox(module.init(rng, ones, ones, ones)["params"]),
                 compiler_options=FAST_COMPILE)


def _tiny_model(vocab_size: int, seed: int, logit_scale: float = 3.0):
  """A random 1+2-layer network; `logit_scale` sharpens its output distribution."""
  config = network.T5Config(vocab_size=vocab_size, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32,
                            num_encoder_layers=1, num_decoder_layers=2)
  module = network.Transformer(config)
  params = _init_fn(module)(jax.random.PRNGKey(seed))
  dense = params["decoder"]["logits_dense"]
  params["decoder"]["logits_dense"] = {"kernel": dense["kernel"] * logit_scale}
  return module, params


@functools.lru_cache(maxsize=None)
def _partitioner():
  return partitioning.Partitioner(devices=jax.devices()[:1], compiler_options=FAST_COMPILE)


@functools.lru_cache(maxsize=None)
def _compiled(module, config, with_exclusions=False):
  part = _partitioner()
  return beam_search.compile_beam_search(part, module, config, part.replicated,
                                         with_exclusions=with_exclusions)


@functools.partial(jax.jit, static_argnums=0, compiler_options=FAST_COMPILE)
def _teacher_forced(module, params, encoder_row, targets):
  """Log-likelihoods [num_sequences] of targets [num_sequences, length] (0-padded), one example."""
  rows = jnp.broadcast_to(encoder_row, (targets.shape[0], encoder_row.shape[0]))
  inputs = jnp.concatenate([jnp.zeros_like(targets[:, :1]), targets[:, :-1]], axis=1)
  logits = module.apply({"params": params}, rows, inputs, targets)
  token = jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], axis=-1)[..., 0]
  return jnp.sum(jnp.where(targets > 0, token, 0.0), axis=1)


def _table(sequences, length):
  table = np.zeros((len(sequences), length), np.int32)
  for i, seq in enumerate(sequences):
    table[i, :len(seq)] = seq
  return table


def _exhaustive(module, params, encoder_inputs, sequences, length, pad_to=0):
  """[batch, num_sequences] teacher-forced log-likelihoods of every sequence.

  `pad_to` adds dummy rows (scored, then dropped) so calls share one compilation.
  """
  table = _table(list(sequences) + [[EOS]] * max(0, pad_to - len(sequences)), length)
  return np.stack([np.asarray(_teacher_forced(module, params, jnp.asarray(row), table))
                   for row in encoder_inputs])[:, :len(sequences)]


@pytest.fixture(scope="module")
def model():
  return _tiny_model(VOCAB, seed=0)


@pytest.mark.parametrize("top_k, alpha", [(10, 0.0), (3, 0.0), (10, 0.8)])
def test_constrained_search_equals_exhaustive_search(model, top_k, alpha):
  module, params = model
  trie = item_trie.build_item_trie(CATALOGUE)
  config = beam_search.BeamSearchConfig(beam_size=10, top_k=top_k, alpha=alpha)
  out = _compiled(module, config)(params, jnp.asarray(ENCODER_INPUTS), trie.arrays(), None)
  log_likelihood = _exhaustive(module, params, ENCODER_INPUTS, CATALOGUE, trie.max_length)
  lengths = np.array([len(s) for s in CATALOGUE])
  expected_scores = log_likelihood / ((5.0 + lengths) / 6.0) ** alpha
  for b in range(len(ENCODER_INPUTS)):
    best = np.argsort(-expected_scores[b], kind="stable")[:top_k]
    np.testing.assert_array_equal(np.asarray(out.items[b]), best)
    np.testing.assert_allclose(np.asarray(out.log_probs[b]), log_likelihood[b, best], atol=1e-5,
                               rtol=0)
    np.testing.assert_allclose(np.asarray(out.scores[b]), expected_scores[b, best], atol=1e-5,
                               rtol=0)
    np.testing.assert_array_equal(np.asarray(out.sequences[b]), trie.item_tokens[best])
  assert np.all(np.asarray(out.valid))


def test_unconstrained_search_equals_exhaustive_search(model):
  module, params = model
  length = 3  # every sequence of <= 2 tokens from 2..VOCAB-1, then EOS: 1 + 10 + 100 sequences
  sequences = [list(body) + [EOS] for n in range(length)
               for body in itertools.product(range(2, VOCAB), repeat=n)]
  catalogue = item_trie.build_item_trie(sequences[::3])  # only names items; does not constrain
  config = beam_search.BeamSearchConfig(beam_size=len(sequences), top_k=len(sequences),
                                        max_decode_length=length, constrained=False)
  out = _compiled(module, config)(params, jnp.asarray(ENCODER_INPUTS), catalogue.arrays(), None)
  log_likelihood = _exhaustive(module, params, ENCODER_INPUTS, sequences, length)
  for b in range(len(ENCODER_INPUTS)):
    best = np.argsort(-log_likelihood[b], kind="stable")
    np.testing.assert_array_equal(np.asarray(out.sequences[b]), _table(sequences, length)[best])
    np.testing.assert_allclose(np.asarray(out.log_probs[b]), log_likelihood[b, best], atol=1e-5,
                               rtol=0)
    named = [catalogue.item_index(sequences[i]) for i in best]
    np.testing.assert_array_equal(np.asarray(out.items[b]), [-1 if n is None else n for n in named])


# Random catalogues of at most MAX_ITEMS items of at most 3 tokens + EOS, padded to one trie shape
# so every example shares one compiled search; beam_size >= MAX_ITEMS makes the search exhaustive.
MAX_ITEMS, MAX_LENGTH = 6, 4
PROPERTY_CONFIG = beam_search.BeamSearchConfig(beam_size=MAX_ITEMS, top_k=4)


def _padded_arrays(trie):
  return trie.arrays(num_nodes=1 + MAX_ITEMS * MAX_LENGTH, num_edges=MAX_ITEMS * MAX_LENGTH,
                     max_children=VOCAB, max_length=MAX_LENGTH, num_items=MAX_ITEMS)


def _run_with_exclusions(module, params, sequences, excluded):
  trie = item_trie.build_item_trie(sequences)
  rows = np.full((len(ENCODER_INPUTS[:2]), MAX_ITEMS), -1, np.int32)
  for b, items in enumerate(excluded):
    rows[b, :len(items)] = sorted(items)
  beam_search.check_inputs(ENCODER_INPUTS[:2], rows, trie)
  fn = _compiled(module, PROPERTY_CONFIG, with_exclusions=True)
  return trie, fn(params, jnp.asarray(ENCODER_INPUTS[:2]), _padded_arrays(trie), jnp.asarray(rows))


catalogues = st.lists(st.lists(st.integers(2, VOCAB - 1), min_size=1, max_size=MAX_LENGTH - 1),
                      min_size=1, max_size=MAX_ITEMS, unique_by=tuple)


@settings(max_examples=6, deadline=None, derandomize=True)
@given(bodies=catalogues, seed=st.integers(0, 2**16), scale=st.sampled_from([1.0, 5.0]),
       data=st.data())
def test_constrained_outputs_are_distinct_allowed_items(model, bodies, seed, scale, data):
  module, _ = model
  _, params = _tiny_model(VOCAB, seed=seed, logit_scale=scale)
  sequences = [b + [EOS] for b in bodies]
  items = st.sets(st.integers(0, len(sequences) - 1))
  excluded = [data.draw(items, label=f"excluded[{b}]") for b in range(2)]
  trie, out = _run_with_exclusions(module, params, sequences, excluded)
  log_likelihood = _exhaustive(module, params, ENCODER_INPUTS[:2], sequences, MAX_LENGTH,
                               pad_to=MAX_ITEMS)
  for b in range(2):
    valid = np.asarray(out.valid[b])
    got = np.asarray(out.items[b])[valid].tolist()
    allowed = [i for i in range(len(sequences)) if i not in excluded[b]]
    assert len(got) == len(set(got)) == min(PROPERTY_CONFIG.top_k, len(allowed))
    assert not set(got) & excluded[b]
    for slot, item in enumerate(got):  # each output spells the item it claims to be
      seq = np.asarray(out.sequences[b, slot])
      assert trie.item_index(seq[seq > 0].tolist()) == item
    best = sorted(allowed, key=lambda i: -log_likelihood[b, i])[:len(got)]
    assert got == best
    # float32: a log-probability near -30 carries ~4e-6 of rounding, hence rtol on top of 1e-5.
    np.testing.assert_allclose(np.asarray(out.log_probs[b])[valid], log_likelihood[b, best],
                               atol=1e-5, rtol=1e-6)
    assert np.all(np.isneginf(np.asarray(out.log_probs[b])[~valid]))
    assert np.all(np.asarray(out.items[b])[~valid] == -1)


def test_excluding_every_item_leaves_only_invalid_slots(model):
  module, params = model
  sequences = [[3, EOS], [3, 4, EOS], [5, EOS]]
  _, out = _run_with_exclusions(module, params, sequences, [{0, 1, 2}, {1}])
  assert not np.any(np.asarray(out.valid[0]))
  assert np.all(np.asarray(out.items[0]) == -1) and np.all(np.asarray(out.sequences[0]) == 0)
  assert sorted(np.asarray(out.items[1])[np.asarray(out.valid[1])].tolist()) == [0, 2]


def test_excluded_favourites_do_not_take_the_beam_slots(model):
  """One token per item (atomic IDs), a narrow beam, and the model's favourites excluded.

  Exclusion applied only at EOS would let the excluded favourites fill both beams after the first
  token and return nothing valid; pruning blocked branches returns the best allowed items.
  """
  module, params = model
  sequences = [[t, EOS] for t in range(2, VOCAB)]
  config = beam_search.BeamSearchConfig(beam_size=2, top_k=2)
  likelihood = _exhaustive(module, params, ENCODER_INPUTS[:2], sequences, 2)
  trie = item_trie.build_item_trie(sequences)
  rows = np.full((2, 4), -1, np.int32)
  rows[:, :3] = np.argsort(-likelihood, axis=1)[:, :3]  # each example's three favourites
  rows[1, 3] = rows[1, 0]  # a repeated history item counts once
  fn = _compiled(module, config, with_exclusions=True)
  out = fn(params, jnp.asarray(ENCODER_INPUTS[:2]), trie.arrays(), jnp.asarray(rows))
  first_token = _exhaustive(module, params, ENCODER_INPUTS[:2], [[t] for t in range(2, VOCAB)], 1)
  for b in range(2):
    assert np.all(np.asarray(out.valid[b]))
    # Beam 2 keeps the two best allowed first tokens, then orders them by full likelihood.
    allowed = [i for i in np.argsort(-first_token[b]).tolist() if i not in rows[b]]
    expected = sorted(allowed[:2], key=lambda i: -likelihood[b, i])
    assert np.asarray(out.items[b]).tolist() == expected


def test_sharded_search_equals_exhaustive_search(model):
  """Batch over 'data', heads / MLP / vocabulary over 'model' (2 x 2 devices), as in training."""
  module, params = model
  trie = item_trie.build_item_trie(CATALOGUE)
  config = beam_search.BeamSearchConfig(beam_size=10, top_k=3)
  part = partitioning.Partitioner(partitioning.MeshConfig(mesh_shape=(2, 2)),
                                  devices=jax.devices()[:4], compiler_options=FAST_COMPILE)
  ones = jnp.ones((1, 3), jnp.int32)
  boxed = jax.eval_shape(module.init, jax.random.PRNGKey(0), ones, ones, ones)["params"]
  shardings = part.shardings(partitioning.logical_specs(boxed))
  inputs = np.concatenate([ENCODER_INPUTS, ENCODER_INPUTS[::-1]])[:4]
  out = beam_search.compile_beam_search(part, module, config, shardings)(
      jax.device_put(params, shardings), inputs, trie.arrays(), None)
  assert out.items.sharding.spec[0] == partitioning.DATA_AXIS
  log_likelihood = _exhaustive(module, params, inputs, CATALOGUE, trie.max_length)
  for b in range(len(inputs)):
    best = np.argsort(-log_likelihood[b], kind="stable")[:3]
    np.testing.assert_array_equal(np.asarray(out.items[b]), best)
    np.testing.assert_allclose(np.asarray(out.log_probs[b]), log_likelihood[b, best], atol=1e-5,
                               rtol=0)


@pytest.mark.parametrize("kwargs, message", [
    ({"beam_size": 4, "top_k": 5}, r"BeamSearchConfig.top_k=5: expected an integer in \[1, 4\]"),
    ({"beam_size": 0}, r"BeamSearchConfig.beam_size=0: expected an integer >= 1"),
    ({"alpha": -1.0}, r"BeamSearchConfig.alpha=-1.0: expected a finite float >= 0"),
    ({"max_decode_length": 0}, r"max_decode_length=0: expected an integer >= 1"),
    ({"eos_id": 0}, r"eos_id=0: must differ from pad_id"),
])
def test_config_rejects_bad_values(kwargs, message):
  with pytest.raises(ValueError, match=message):
    beam_search.BeamSearchConfig(**kwargs)


def test_search_setup_errors_are_explicit(model):
  module, params = model
  trie = item_trie.build_item_trie(CATALOGUE)
  inputs = jnp.asarray(ENCODER_INPUTS)
  with pytest.raises(ValueError, match="constrained=True needs the item trie"):
    beam_search.beam_search_network(module, params, inputs, beam_search.BeamSearchConfig())
  with pytest.raises(ValueError, match=r"max_decode_length=3 is shorter than the longest catalogue "
                     r"item \(4 tokens"):
    beam_search.beam_search_network(module, params, inputs,
                                    beam_search.BeamSearchConfig(max_decode_length=3),
                                    trie.arrays())
  with pytest.raises(ValueError, match="max_decode_length is required when constrained=False"):
    beam_search.beam_search_network(module, params, inputs,
                                    beam_search.BeamSearchConfig(constrained=False))
  with pytest.raises(ValueError, match="excluded_items needs constrained decoding"):
    beam_search.beam_search_network(
        module, params, inputs, beam_search.BeamSearchConfig(constrained=False,
                                                             max_decode_length=3),
        excluded_items=jnp.zeros((3, 1), jnp.int32))


def test_input_checks_name_the_problem():
  trie = item_trie.build_item_trie(CATALOGUE)
  with pytest.raises(ValueError, match=r"rows \[1\] are all padding \(no history or prompt\)"):
    beam_search.check_inputs(np.array([[3, 4], [0, 0]]))
  with pytest.raises(ValueError, match=r"encoder_input_tokens\[0, 1\] = 12: expected ids in "
                     r"\[0, 12\)"):
    beam_search.check_inputs(np.array([[3, 12], [4, 0]]), vocab_size=12)
  with pytest.raises(ValueError, match=r"expected int \[batch, enc_length\]"):
    beam_search.check_inputs(np.array([3, 4]))
  with pytest.raises(ValueError, match=r"excluded_items\[1, 0\] = 10: expected an item index in "
                     r"\[0, 10\)"):
    beam_search.check_inputs(np.array([[3], [4]]), np.array([[1], [10]]), trie)
  with pytest.raises(ValueError, match="excluded_items has 1 rows for 2 examples"):
    beam_search.check_inputs(np.array([[3], [4]]), np.array([[1]]), trie)
  with pytest.raises(ValueError, match="excluded_items given without the item trie"):
    beam_search.check_inputs(np.array([[3], [4]]), np.array([[1], [2]]))


def test_shared_cross_attention_cache_equals_a_tiled_cache(model):
  """Beams attending to one copy of the encoder keys/values give the tiled cache's search."""
  module, params = model
  trie = item_trie.build_item_trie(CATALOGUE)
  config = beam_search.BeamSearchConfig(beam_size=6, top_k=4)
  inputs = jnp.asarray(ENCODER_INPUTS)

  def search(invariant_keys):
    encoded = module.apply({"params": params}, inputs, method="encode")
    cache = decoding.init_decoder_cache(module, params, encoded, inputs, trie.max_length)
    step = decoding.network_tokens_to_logits(module, params, trie.max_length)
    return beam_search.beam_search(step, cache, inputs.shape[0], config, trie.arrays(),
                                   beam_invariant_cache_keys=invariant_keys)

  shared, tiled = search(beam_search.BEAM_INVARIANT_CACHE_KEYS), search(())
  np.testing.assert_array_equal(np.asarray(shared.items), np.asarray(tiled.items))
  np.testing.assert_allclose(np.asarray(shared.log_probs), np.asarray(tiled.log_probs), atol=1e-5)


def test_cross_attention_rejects_query_rows_that_are_not_a_multiple_of_the_cache():
  with pytest.raises(ValueError, match="5 query rows are not a multiple of the 2 cached"):
    layers._query_group(5, 2)  # pylint: disable=protected-access
