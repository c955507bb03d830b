"""LightGCN (He et al., SIGIR 2020): BPR on embeddings smoothed over the user-item graph.

Graph: the bipartite graph of distinct training (user, item) pairs, nodes `0..U-1` for users and
`U..U+I-1` for items, with the symmetric normalisation A_hat = D^-1/2 A D^-1/2, i.e. edge weight
1 / sqrt(deg(u) deg(i)). Propagation E^(k+1) = A_hat E^(k) is a gather of source rows times the
edge weight followed by `jax.ops.segment_sum` into the destination rows (edges sorted by
destination), so no dense [N, N] matrix is built. The final table is the mean of E^(0..K).

Every training step propagates the whole graph (as in the paper), so an epoch costs
`steps * layers` sparse products; see docs/baselines.md for timings.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from rec_t5x.baselines import common
from rec_t5x.baselines import pairwise
from rec_t5x.baselines import sampling
from rec_t5x.data import dataset as dataset_lib


@dataclasses.dataclass(frozen=True)
class LightGCNConfig:
  """LightGCN hyper-parameters.

  Attributes:
    embedding_dim: size of the user and item vectors.
    num_layers: propagation layers K (1..4).
    l2: weight of the L2 penalty on the batch's ego (layer-0) embeddings.
  """
  embedding_dim: int = 64
  num_layers: int = 2
  l2: float = 1e-5

  def __post_init__(self):
    if not isinstance(self.embedding_dim, int) or self.embedding_dim < 1:
      raise ValueError(f"LightGCNConfig.embedding_dim = {self.embedding_dim!r}; expected an "
                       "integer >= 1")
    if not isinstance(self.num_layers, int) or not 1 <= self.num_layers <= 4:
      raise ValueError(f"LightGCNConfig.num_layers = {self.num_layers!r}; expected an integer in "
                       "[1, 4]")
    if not (math.isfinite(self.l2) and self.l2 >= 0):
      raise ValueError(f"LightGCNConfig.l2 = {self.l2!r}; expected a finite float >= 0")


def normalized_adjacency(inter: sampling.Interactions) -> dict[str, np.ndarray]:
  """Edges of A_hat in both directions, sorted by destination.

  Args:
    inter: training interactions (repeated pairs count once).

  Returns:
    {"src": int32 [2E], "dst": int32 [2E], "weight": float32 [2E]} over U + I nodes.
  """
  users = (inter.keys // inter.num_items).astype(np.int64)
  items = (inter.keys % inter.num_items).astype(np.int64)
  deg_user = np.bincount(users, minlength=inter.num_users)
  deg_item = np.bincount(items, minlength=inter.num_items)
  weight = (1.0 / np.sqrt(deg_user[users] * deg_item[items].astype(np.float64))).astype(np.float32)
  item_nodes = items + inter.num_users
  src = np.concatenate([users, item_nodes])
  dst = np.concatenate([item_nodes, users])
  order = np.argsort(dst, kind="stable")
  return {"src": src[order].astype(np.int32), "dst": dst[order].astype(np.int32),
          "weight": np.concatenate([weight, weight])[order]}


def propagate(ego: jax.Array, graph: dict[str, jax.Array], num_layers: int) -> jax.Array:
  """Mean of E^(0..K) with E^(k+1) = A_hat E^(k).

  Args:
    ego: float32 [num_nodes, dim] layer-0 embeddings.
    graph: see `normalized_adjacency`.
    num_layers: K.

  Returns:
    float32 [num_nodes, dim].
  """
  layer, total = ego, ego
  for _ in range(num_layers):
    messages = layer[graph["src"]] * graph["weight"][:, None]
    layer = jax.ops.segment_sum(messages, graph["dst"], num_segments=ego.shape[0],
                                indices_are_sorted=True)
    total = total + layer
  return total / (num_layers + 1)


def make_embed(num_layers: int) -> pairwise.EmbedFn:
  """`(params, graph) -> (user_table [U, dim], item_table [I, dim])` after propagation."""

  def embed(params: pairwise.Params, graph: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    num_users = params["user"].shape[0]
    nodes = propagate(jnp.concatenate([params["user"], params["item"]]), graph, num_layers)
    return nodes[:num_users], nodes[num_users:]

  return embed


def train(ds: dataset_lib.RecDataset, config: LightGCNConfig, train_config: common.TrainConfig,
          log: common.Log = print) -> common.TrainedModel:
  """Trains LightGCN on `ds` with early stopping (see `pairwise.train`)."""
  graph = {k: jnp.asarray(v) for k, v in
           normalized_adjacency(sampling.training_interactions(ds)).items()}
  params = pairwise.init_tables(jax.random.key(train_config.seed), ds.num_users, ds.num_items,
                                config.embedding_dim)
  return pairwise.train("lightgcn", ds, params, make_embed(config.num_layers), graph, config.l2,
                        train_config, log)
