"""BPR training shared by BPR-MF and LightGCN: loss, a jitted epoch, scoring and the fit loop.

Both models keep `params = {"user": [num_users, dim], "item": [num_items, dim]}` (the "ego"
embeddings) and differ only in `embed_fn(params, graph) -> (user_table, item_table)`: the
identity for matrix factorisation, graph propagation for LightGCN. `graph` is a pytree of
constant arrays passed to every jitted call as an argument (never closed over, so it is not
baked into the compiled program).

One epoch is one pass over every training interaction, each paired with a freshly sampled
negative item the user has not trained on (`sampling.sample_negatives`). The epoch runs as one
jitted `lax.scan` over its steps, so Python dispatch costs nothing per step.

Loss per batch (w = 1 for real examples, 0 for the padding of the last batch):
  L = -sum_b w_b log sigmoid(<u_b, p_b> - <u_b, n_b>) / sum_b w_b
      + l2 * sum_b w_b (|e_u|^2 + |e_p|^2 + |e_n|^2) / sum_b w_b
where u, p, n come from the propagated tables and e_* are the ego embeddings.

`jax.jit` is applied here rather than through `rec_t5x.partitioning`: these models run on one
device and have no sharded state.
"""
from __future__ import annotations

from collections.abc import Callable
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rec_t5x.baselines import common
from rec_t5x.baselines import evaluation
from rec_t5x.baselines import sampling
from rec_t5x.data import dataset as dataset_lib

Params = dict[str, jax.Array]
EmbedFn = Callable[[Params, Any], tuple[jax.Array, jax.Array]]


def init_tables(key: jax.Array, num_users: int, num_items: int, dim: int) -> Params:
  """Glorot-normal user and item tables: {"user": [num_users, dim], "item": [num_items, dim]}."""
  init = jax.nn.initializers.glorot_normal()
  user_key, item_key = jax.random.split(key)
  return {"user": init(user_key, (num_users, dim), jnp.float32),
          "item": init(item_key, (num_items, dim), jnp.float32)}


def bpr_loss(user: jax.Array, pos: jax.Array, neg: jax.Array, weights: jax.Array) -> jax.Array:
  """Weighted mean of -log sigmoid(<user, pos> - <user, neg>).

  Args:
    user, pos, neg: float32 [batch, dim].
    weights: float32 [batch].

  Returns:
    Scalar loss.
  """
  margin = jnp.sum(user * (pos - neg), axis=-1)
  return -jnp.sum(weights * jax.nn.log_sigmoid(margin)) / jnp.maximum(jnp.sum(weights), 1.0)


def batch_loss(params: Params, graph: Any, batch: dict[str, jax.Array], embed_fn: EmbedFn,
               l2: float) -> jax.Array:
  """BPR loss plus the L2 penalty on the batch's ego embeddings (see the module docstring)."""
  users, items = embed_fn(params, graph)
  u, p, n, w = batch["users"], batch["pos"], batch["neg"], batch["weights"]
  loss = bpr_loss(users[u], items[p], items[n], w)
  if l2:
    sq = (jnp.sum(params["user"][u] ** 2, -1) + jnp.sum(params["item"][p] ** 2, -1)
          + jnp.sum(params["item"][n] ** 2, -1))
    loss = loss + l2 * jnp.sum(w * sq) / jnp.maximum(jnp.sum(w), 1.0)
  return loss


def make_epoch_fn(embed_fn: EmbedFn, optimizer: optax.GradientTransformation,
                  l2: float) -> Callable[..., tuple[Params, Any, jax.Array]]:
  """A jitted `(params, opt_state, graph, batches) -> (params, opt_state, mean_loss)`.

  `batches` holds "users", "pos", "neg" int32 [steps, batch] and "weights" float32
  [steps, batch]; the steps run in order inside one `lax.scan`.
  """
  loss_and_grad = jax.value_and_grad(functools.partial(batch_loss, embed_fn=embed_fn, l2=l2))

  def epoch(params, opt_state, graph, batches):

    def step(carry, batch):
      params, opt_state = carry
      loss, grads = loss_and_grad(params, graph, batch)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), loss

    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), batches)
    return params, opt_state, jnp.mean(losses)

  return jax.jit(epoch, donate_argnums=(0, 1))


@jax.jit
def _dot_scores(user_vectors: jax.Array, item_table: jax.Array) -> jax.Array:
  return user_vectors @ item_table.T


def table_scorer(split: evaluation.EvalSplit, user_table: np.ndarray,
                 item_table: np.ndarray) -> evaluation.Scorer:
  """Scores rows of `split` as <user vector, item vector> ([chunk, num_items] float32)."""
  items = jnp.asarray(item_table)

  def scorer(rows: np.ndarray) -> np.ndarray:
    return np.asarray(_dot_scores(jnp.asarray(user_table[split.users[rows]]), items))

  return scorer


def train(name: str, ds: dataset_lib.RecDataset, params: Params, embed_fn: EmbedFn, graph: Any,
          l2: float, train_config: common.TrainConfig,
          log: common.Log = print) -> common.TrainedModel:
  """Trains a BPR model with early stopping and returns it with its propagated tables.

  Args:
    name: model name for logs and outputs.
    ds: the dataset.
    params: initial {"user": [num_users, dim], "item": [num_items, dim]}.
    embed_fn: `(params, graph) -> (user_table, item_table)`, jittable.
    graph: constant arrays `embed_fn` needs (None for matrix factorisation).
    l2: weight of the L2 penalty on ego embeddings.
    train_config: optimisation and stopping settings.
    log: progress lines.

  Returns:
    The `TrainedModel` with "user_embeddings" [num_users, dim] and "item_embeddings"
    [num_items, dim] (the tables the scores are computed from).
  """
  inter = sampling.training_interactions(ds)
  rng = np.random.default_rng(train_config.seed)
  optimizer = optax.adam(train_config.learning_rate)
  epoch_fn = make_epoch_fn(embed_fn, optimizer, l2)
  tables_fn = jax.jit(embed_fn)
  validation = evaluation.make_split(ds, "validation")
  log(f"{name}: {inter.num_pairs} training pairs, {ds.num_users} users, {ds.num_items} items")

  def run_epoch(state, epoch):
    del epoch
    params, opt_state = state
    index, weights = common.shuffled_batches(inter.num_pairs, train_config.batch_size, rng)
    users = inter.users[index]
    negatives, collisions = sampling.sample_negatives(inter, users.reshape(-1), rng)
    if collisions:
      log(f"{name}: {collisions} sampled negatives are training positives (user saw ~all items)")
    batches = {"users": jnp.asarray(users), "pos": jnp.asarray(inter.items[index]),
               "neg": jnp.asarray(negatives.reshape(users.shape)),
               "weights": jnp.asarray(weights)}
    params, opt_state, loss = epoch_fn(params, opt_state, graph, batches)
    return (params, opt_state), float(loss)

  def validate(params):
    users, items = jax.device_get(tables_fn(params, graph))
    scorer = table_scorer(validation, users, items)
    return evaluation.evaluate(scorer, validation, ds.num_items, train_config.eval_batch_size,
                               train_config.top_n).metrics

  state = (params, optimizer.init(params))
  fit = common.fit(state, run_epoch, lambda s: s[0], validate, train_config, log)
  users, items = (np.asarray(t, np.float32) for t in jax.device_get(tables_fn(fit.params, graph)))
  return common.TrainedModel(
      name=name, make_scorer=lambda split: table_scorer(split, users, items), fit=fit,
      embeddings={"user_embeddings": users, "item_embeddings": items})
