"""Tests for rec_t5x.baselines.bpr_mf (and the shared BPR machinery in pairwise)."""
import jax.numpy as jnp
import numpy as np
import pytest

from rec_t5x.baselines import bpr_mf
from rec_t5x.baselines import common
from rec_t5x.baselines import evaluation
from rec_t5x.baselines import pairwise
from rec_t5x.baselines import pop
from tests.baselines import synthetic

FAST = common.TrainConfig(learning_rate=1e-2, batch_size=64, max_epochs=25, patience=25, top_n=20)


def _test_ndcg(ds, trained):
  split = evaluation.make_split(ds, "test")
  return evaluation.evaluate(trained.make_scorer(split), split, ds.num_items,
                             top_n=20).metrics["ndcg@10"]


def test_bpr_loss_matches_formula():
  u = jnp.asarray([[1.0, 0.0], [0.0, 2.0]])
  p = jnp.asarray([[2.0, 0.0], [0.0, 1.0]])
  n = jnp.asarray([[0.0, 1.0], [0.0, 0.5]])
  w = jnp.asarray([1.0, 0.0])
  expected = -np.log(1 / (1 + np.exp(-(2.0 - 0.0))))
  assert float(pairwise.bpr_loss(u, p, n, w)) == pytest.approx(expected, rel=1e-5)


def test_bpr_mf_learns_clusters_and_beats_pop():
  ds = synthetic.cluster_dataset()
  trained = bpr_mf.train(ds, bpr_mf.BPRConfig(embedding_dim=8), FAST, log=lambda _: None)
  history = trained.fit.history
  assert history[-1]["loss"] < 0.7 * history[0]["loss"]
  popular = pop.train(ds, pop.PopConfig(), FAST, log=lambda _: None)
  assert _test_ndcg(ds, trained) > _test_ndcg(ds, popular) + 0.15
  assert trained.embeddings["user_embeddings"].shape == (ds.num_users, 8)
  assert trained.embeddings["item_embeddings"].shape == (ds.num_items, 8)


def test_bpr_config_rejects_bad_values():
  with pytest.raises(ValueError, match="BPRConfig.embedding_dim"):
    bpr_mf.BPRConfig(embedding_dim=0)
  with pytest.raises(ValueError, match="BPRConfig.l2"):
    bpr_mf.BPRConfig(l2=-1.0)
