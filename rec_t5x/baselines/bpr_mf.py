"""BPR-MF: matrix factorisation trained with the BPR pairwise loss (Rendle et al., UAI 2009).

score(u, i) = <user_u, item_i>; no biases. One uniformly sampled negative per training
interaction and epoch (see `pairwise`), Adam, early stopping on validation NDCG@10.
"""
from __future__ import annotations

import dataclasses
import math

import jax

from rec_t5x.baselines import common
from rec_t5x.baselines import pairwise
from rec_t5x.data import dataset as dataset_lib


@dataclasses.dataclass(frozen=True)
class BPRConfig:
  """BPR-MF hyper-parameters.

  Attributes:
    embedding_dim: size of the user and item vectors.
    l2: weight of the L2 penalty on the batch's embeddings (0 = none, RecBole's BPR default).
  """
  embedding_dim: int = 64
  l2: float = 0.0

  def __post_init__(self):
    if not isinstance(self.embedding_dim, int) or self.embedding_dim < 1:
      raise ValueError(f"BPRConfig.embedding_dim = {self.embedding_dim!r}; expected an integer "
                       ">= 1")
    if not (math.isfinite(self.l2) and self.l2 >= 0):
      raise ValueError(f"BPRConfig.l2 = {self.l2!r}; expected a finite float >= 0")


def embed(params: pairwise.Params, graph: None = None) -> tuple[jax.Array, jax.Array]:
  """The identity: the ([num_users, dim], [num_items, dim]) tables are the parameters."""
  return params["user"], params["item"]


def train(ds: dataset_lib.RecDataset, config: BPRConfig, train_config: common.TrainConfig,
          log: common.Log = print) -> common.TrainedModel:
  """Trains BPR-MF on `ds` with early stopping (see `pairwise.train`)."""
  params = pairwise.init_tables(jax.random.key(train_config.seed), ds.num_users, ds.num_items,
                                config.embedding_dim)
  return pairwise.train("bpr_mf", ds, params, embed, None, config.l2, train_config, log)
