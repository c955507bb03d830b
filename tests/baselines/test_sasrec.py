"""Tests for rec_t5x.baselines.sasrec: windowing, causality, training on planted sequences."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rec_t5x.baselines import common
from rec_t5x.baselines import evaluation
from rec_t5x.baselines import pop
from rec_t5x.baselines import sasrec
from tests.baselines import synthetic

TINY = sasrec.SASRecConfig(hidden_dim=16, num_blocks=1, num_heads=1, inner_dim=32, dropout=0.1,
                           attention_dropout=0.0, max_len=8)


@pytest.mark.parametrize("stride", [1, 3, 5])
def test_training_windows_train_every_target_once_with_enough_context(stride):
  max_len = 5
  sequences = [np.arange(100, 100 + n) for n in (1, 2, 6, 7, 13)]
  w = sasrec.training_windows(sequences, max_len, stride)
  trained = []
  for tokens, targets, mask in zip(w["tokens"], w["targets"], w["mask"]):
    n = int((tokens > 0).sum())
    assert np.all(tokens[n:] == 0) and np.all(mask[n:] == 0)
    # Inputs are consecutive items and each target is the next one.
    assert np.all(np.diff(tokens[:n]) == 1) and np.all(targets[:n] == tokens[:n])  # item+1 vs item
    for j in np.flatnonzero(mask):
      context = tokens[:j + 1] - 1
      target = int(targets[j])
      trained.append(target)
      # Context is the whole prefix near the start, else at least max_len - stride items.
      assert len(context) >= min(target - 100, max_len - stride + 1) or context[0] == 100
  expected = [100 + t for n in (1, 2, 6, 7, 13) for t in range(1, n)]
  assert sorted(trained) == sorted(expected)


@pytest.mark.slow  # Compiles init, apply and encode.
def test_hidden_states_are_causal_and_padding_is_ignored():
  model = sasrec.SASRec(TINY, num_items=20)
  params = jax.jit(model.init)(jax.random.key(0), jnp.ones((1, 8), jnp.int32))["params"]
  a = jnp.asarray([[3, 5, 7, 9, 11, 0, 0, 0]], jnp.int32)
  b = jnp.asarray([[3, 5, 7, 2, 4, 6, 0, 0]], jnp.int32)
  apply = jax.jit(lambda tokens: model.apply({"params": params}, tokens))
  ha, hb = apply(a), apply(b)
  np.testing.assert_allclose(ha[0, :3], hb[0, :3], rtol=1e-5, atol=1e-6)
  assert not np.allclose(ha[0, 3], hb[0, 3])
  encode = sasrec.make_encode_fn(model)
  tokens, lengths = sasrec.last_windows([np.asarray([2, 4, 6, 8, 10])], 8)
  np.testing.assert_allclose(encode(params, tokens, lengths)[0], ha[0, 4], rtol=1e-5, atol=1e-6)


def test_last_windows_keeps_the_most_recent_items():
  tokens, lengths = sasrec.last_windows([np.arange(10), np.asarray([4]), np.asarray([], int)], 4)
  assert tokens.tolist() == [[7, 8, 9, 10], [5, 0, 0, 0], [0, 0, 0, 0]]
  assert lengths.tolist() == [4, 1, 0]


@pytest.mark.slow  # About 10 s of CPU, mostly compiling the epoch.
def test_sasrec_learns_a_planted_chain_and_beats_pop():
  ds = synthetic.chain_dataset()
  train_config = common.TrainConfig(learning_rate=1e-2, batch_size=16, max_epochs=8,
                                    patience=8, top_n=20)
  trained = sasrec.train(ds, TINY, train_config, log=lambda _: None)
  history = trained.fit.history
  assert history[-1]["loss"] < 0.5 * history[0]["loss"]
  split = evaluation.make_split(ds, "test")
  model_metrics = evaluation.evaluate(trained.make_scorer(split), split, ds.num_items,
                                      top_n=20).metrics
  popular = pop.train(ds, pop.PopConfig(), train_config, log=lambda _: None)
  pop_metrics = evaluation.evaluate(popular.make_scorer(split), split, ds.num_items,
                                    top_n=20).metrics
  assert model_metrics["ndcg@10"] > pop_metrics["ndcg@10"] + 0.3
  assert trained.embeddings["user_embeddings"].shape == (ds.num_users, 16)
  assert trained.embeddings["item_embeddings"].shape == (ds.num_items, 16)


@pytest.mark.parametrize("field,value", [("num_heads", 3), ("dropout", 1.0), ("window_stride", 51),
                                         ("max_len", 0)])
def test_config_rejects_bad_values(field, value):
  with pytest.raises(ValueError, match=f"SASRecConfig.{field}"):
    sasrec.SASRecConfig(**{field: value})
