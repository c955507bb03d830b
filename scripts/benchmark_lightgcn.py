"""LightGCN training steps: autodiff's transposed propagation vs a symmetric custom VJP.

  python scripts/benchmark_lightgcn.py --dataset ml1m --steps 20 --rounds 3

Measures whether a hand-written gradient for the graph propagation would speed up LightGCN's
training on CPU (docs/benchmarks.md, "LightGCN propagation"). Both variants run the training
epoch function that `rec_t5x.baselines.pairwise.train` compiles (`make_epoch_fn`: BPR loss + L2,
Adam, one `lax.scan` over `--steps` batches of the gin file's batch size 2048) on the real
training graph of `--dataset`, from the same parameters and the same batches. They differ only in
how the gradient passes through A_hat:

  autodiff   `lightgcn.make_embed`, what training uses: JAX transposes the gather of source
             rows into a scatter-add over the unsorted source indices;
  symmetric  a candidate defined here: a `jax.custom_vjp` whose cotangent goes through the same
             sorted gather + segment_sum as the forward pass, valid because A_hat is symmetric
             (`lightgcn.normalized_adjacency` lists every edge in both directions).

The two alternate for `--rounds` rounds after one compile-and-warm-up call each, so that machine
noise hits both; the script prints the seconds per step of every round, the medians, their ratio
and the largest difference between the two variants' parameters after one scan.
"""
import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rec_t5x.baselines import lightgcn
from rec_t5x.baselines import pairwise
from rec_t5x.baselines import sampling
from rec_t5x.data import catalog

BATCH_SIZE = 2048  # gin/baselines/lightgcn.gin
LEARNING_RATE = 1e-3
L2 = 1e-5


def _adjacency_product(x, src, dst, weight):
  """A_hat @ x as `lightgcn.propagate` computes one layer."""
  return jax.ops.segment_sum(x[src] * weight[:, None], dst, num_segments=x.shape[0],
                             indices_are_sorted=True)


@jax.custom_vjp
def _symmetric_product(x, src, dst, weight):
  return _adjacency_product(x, src, dst, weight)


def _symmetric_product_fwd(x, src, dst, weight):
  return _adjacency_product(x, src, dst, weight), (src, dst, weight)


def _symmetric_product_bwd(residuals, cotangent):
  src, dst, weight = residuals  # A_hat^T = A_hat; the graph arrays get no gradient
  return _adjacency_product(cotangent, src, dst, weight), None, None, None


_symmetric_product.defvjp(_symmetric_product_fwd, _symmetric_product_bwd)


def symmetric_embed(num_layers: int) -> pairwise.EmbedFn:
  """`lightgcn.make_embed` with the custom-VJP product."""

  def embed(params, graph):
    num_users = params["user"].shape[0]
    ego = jnp.concatenate([params["user"], params["item"]])
    layer, total = ego, ego
    for _ in range(num_layers):
      layer = _symmetric_product(layer, graph["src"], graph["dst"], graph["weight"])
      total = total + layer
    nodes = total / (num_layers + 1)
    return nodes[:num_users], nodes[num_users:]

  return embed


def make_batches(inter: sampling.Interactions, steps: int, seed: int) -> dict[str, jax.Array]:
  rng = np.random.default_rng(seed)
  index = rng.integers(0, inter.num_pairs, size=(steps, BATCH_SIZE))
  users = inter.users[index]
  negatives, _ = sampling.sample_negatives(inter, users.reshape(-1), rng)
  return {"users": jnp.asarray(users), "pos": jnp.asarray(inter.items[index]),
          "neg": jnp.asarray(negatives.reshape(users.shape)),
          "weights": jnp.ones((steps, BATCH_SIZE), jnp.float32)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--dataset", default="ml1m", help="catalog dataset (rec_t5x.data.catalog)")
  parser.add_argument("--steps", type=int, default=20, help="training steps per timed scan")
  parser.add_argument("--rounds", type=int, default=3, help="timed scans per variant")
  parser.add_argument("--num_layers", type=int, default=2)
  args = parser.parse_args()
  if args.steps < 1 or args.rounds < 1:
    parser.error(f"--steps {args.steps} and --rounds {args.rounds} must both be >= 1")

  ds = catalog.load(args.dataset)
  inter = sampling.training_interactions(ds)
  graph = {k: jnp.asarray(v) for k, v in lightgcn.normalized_adjacency(inter).items()}
  print(f"{args.dataset}: {ds.num_users} users, {ds.num_items} items, "
        f"{graph['src'].shape[0]} directed edges, {args.num_layers} layers, batch {BATCH_SIZE}, "
        f"{args.steps} steps per scan, jax {jax.__version__} on {jax.devices()[0].platform}")
  optimizer = optax.adam(LEARNING_RATE)
  variants = {"autodiff": lightgcn.make_embed(args.num_layers),
              "symmetric": symmetric_embed(args.num_layers)}
  epoch_fns = {name: pairwise.make_epoch_fn(embed, optimizer, L2) for name, embed in variants.items()}
  batches = make_batches(inter, args.steps, seed=0)

  def fresh_state():
    params = pairwise.init_tables(jax.random.key(0), ds.num_users, ds.num_items, 64)
    return params, optimizer.init(params)

  after_one_scan = {}
  for name, epoch_fn in epoch_fns.items():  # compile + warm up; keep the result for the check
    params, _, loss = epoch_fn(*fresh_state(), graph, batches)
    after_one_scan[name] = jax.device_get(params)
    print(f"{name}: first scan mean loss {float(loss):.6f}")
  diff = max(float(np.max(np.abs(after_one_scan["autodiff"][k] - after_one_scan["symmetric"][k])))
             for k in ("user", "item"))
  print(f"largest |autodiff - symmetric| parameter difference after one scan: {diff:.2e}")

  per_step = {name: [] for name in epoch_fns}
  for round_index in range(args.rounds):
    for name, epoch_fn in epoch_fns.items():
      state = fresh_state()
      jax.block_until_ready(state)
      start = time.perf_counter()
      params, _, loss = epoch_fn(*state, graph, batches)
      jax.block_until_ready((params, loss))
      per_step[name].append((time.perf_counter() - start) / args.steps)
      print(f"round {round_index + 1} {name}: {per_step[name][-1]:.4f} s/step")
  medians = {name: statistics.median(v) for name, v in per_step.items()}
  steps_per_epoch = -(-inter.num_pairs // BATCH_SIZE)
  for name, median in medians.items():
    print(f"{name}: median {median:.4f} s/step, ~{median * steps_per_epoch:.0f} s per epoch of "
          f"{steps_per_epoch} steps")
  print(f"speed-up symmetric / autodiff: {medians['autodiff'] / medians['symmetric']:.2f}x")


if __name__ == "__main__":
  main()
