"""Tests for rec_t5x.baselines.lightgcn."""
import jax.numpy as jnp
import numpy as np
import pytest

from rec_t5x.baselines import common
from rec_t5x.baselines import evaluation
from rec_t5x.baselines import lightgcn
from rec_t5x.baselines import pop
from rec_t5x.baselines import sampling
from tests.baselines import synthetic


def test_propagation_equals_dense_normalised_adjacency():
  ds = synthetic.make_dataset([[0, 1, 2, 3, 4], [1, 2, 0, 3], [2, 4, 1]], num_items=5)
  inter = sampling.training_interactions(ds)
  graph = lightgcn.normalized_adjacency(inter)
  num_nodes = ds.num_users + ds.num_items
  # Independent dense construction of D^-1/2 A D^-1/2 over the bipartite graph.
  adjacency = np.zeros((num_nodes, num_nodes))
  for u, i in zip(inter.users, inter.items):
    adjacency[u, ds.num_users + i] = adjacency[ds.num_users + i, u] = 1.0
  degree = adjacency.sum(1)
  inv = np.where(degree > 0, 1 / np.sqrt(np.maximum(degree, 1)), 0.0)
  a_hat = inv[:, None] * adjacency * inv[None, :]
  ego = np.random.default_rng(0).normal(size=(num_nodes, 4))
  expected = (ego + a_hat @ ego + a_hat @ a_hat @ ego) / 3
  got = lightgcn.propagate(jnp.asarray(ego, jnp.float32),
                           {k: jnp.asarray(v) for k, v in graph.items()}, num_layers=2)
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)


def test_lightgcn_learns_clusters_and_beats_pop():
  ds = synthetic.cluster_dataset()
  config = common.TrainConfig(learning_rate=1e-2, batch_size=64, max_epochs=25, patience=25,
                              top_n=20)
  trained = lightgcn.train(ds, lightgcn.LightGCNConfig(embedding_dim=8, num_layers=2), config,
                           log=lambda _: None)
  history = trained.fit.history
  assert history[-1]["loss"] < 0.7 * history[0]["loss"]
  split = evaluation.make_split(ds, "test")
  ndcg = evaluation.evaluate(trained.make_scorer(split), split, ds.num_items,
                             top_n=20).metrics["ndcg@10"]
  popular = pop.train(ds, pop.PopConfig(), config, log=lambda _: None)
  pop_ndcg = evaluation.evaluate(popular.make_scorer(split), split, ds.num_items,
                                 top_n=20).metrics["ndcg@10"]
  assert ndcg > pop_ndcg + 0.15


def test_lightgcn_config_rejects_bad_layers():
  with pytest.raises(ValueError, match="LightGCNConfig.num_layers"):
    lightgcn.LightGCNConfig(num_layers=0)
