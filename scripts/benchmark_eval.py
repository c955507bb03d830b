"""Benchmark of the decoding evaluation on ML-1M with the tiny T5 (random initialisation).

  .venv/bin/python scripts/benchmark_eval.py [--max_users N] [--beam 20] [--batch 32]

Measures, on the test split of `rec_t5x.ml1m.retrieval` (one example per user, 6,040 users):
  * whole-catalogue constrained beam search (beam = top-K = 20, history excluded): seconds and
    users/s, extrapolated to all users when `--max_users` limits the run (said so in the output);
  * the share of time in encoder / decoder / trie + beam bookkeeping, estimated by timing three
    compiled functions on the same batches: the encoder alone; greedy decoding of `beam` copies
    of each example for the trie's length (encoder + the same cached decoder steps on batch * beam
    rows, no search); and the constrained search. decoder = greedy - encoder; trie + beam =
    search - greedy (trie gathers, leaf exclusion, top-k, cache reordering);
  * ranking throughput in candidates/s (`rec_t5x.ml1m.ranking`, likelihood scoring of each
    example's candidates, encoder once per example).
Compilation is excluded (one warm-up batch per function). Prints `uptime` with the result: the
machine is shared.
"""
import argparse
import os
import platform
import subprocess
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import seqio

from rec_t5x import decoding
from rec_t5x import evaluation
from rec_t5x import evaluation_fns
from rec_t5x import network
from rec_t5x import partitioning

TINY = dict(emb_dim=128, num_heads=4, head_dim=32, mlp_dim=512, num_encoder_layers=2,
            num_decoder_layers=2)
LENGTHS = {"inputs": 1024, "targets": 64}


def _batches(task: str, split: str, batch: int, limit: int | None):
  """(encoder tokens [batch, L] padded, keys) of the first `limit` examples."""
  ds = seqio.get_mixture_or_task(task).get_dataset(LENGTHS, split=split, shuffle=False,
                                                   use_cached=False)
  conv = evaluation.KeyedEncDecFeatureConverter()(ds, LENGTHS)
  if limit is not None:
    conv = conv.take(limit)
  return list(evaluation_fns._fixed_batches(conv.enumerate(), batch))  # pylint: disable=protected-access


def _time(fn, batches) -> float:
  fn(batches[0])  # compile
  start = time.perf_counter()
  for b in batches:
    jax.block_until_ready(fn(b))
  return time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--max_users", type=int, default=None)
  parser.add_argument("--beam", type=int, default=20)
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--ranking_examples", type=int, default=256)
  args = parser.parse_args()
  import seqio_tasks  # pylint: disable=unused-import,g-import-not-at-top
  spec = evaluation.task_spec("rec_t5x.ml1m.retrieval", "test")
  vocab_rows = -(-spec.vocabulary.vocab_size // 128) * 128
  module = network.Transformer(network.T5Config(vocab_size=vocab_rows, **TINY))
  ones = jnp.ones((1, 4), jnp.int32)
  params = jax.jit(lambda r: nn.unbox(module.init(r, ones, ones, ones)["params"]))(
      jax.random.PRNGKey(0))
  p = partitioning.Partitioner(devices=jax.devices()[:1])
  shard = jax.tree_util.tree_map(lambda _: p.replicated, params)
  config = evaluation.EvalConfig(beam_size=args.beam, top_k=args.beam, batch_size=args.batch)
  fns = evaluation_fns.TaskFns(spec, module, params, p, shard, config)
  users = len(spec.dataset.eval_users())
  batches = _batches(spec.name, "test", fns.batch_size, args.max_users)
  n = sum(b[3] for b in batches)
  mean_len = np.mean([b[1].shape[1] for b in batches])
  print(f"ML-1M: {spec.dataset.num_items} items, trie {fns.trie.num_nodes} nodes, "
        f"{users} test users, timing {n}; beam {args.beam}, batch {fns.batch_size}, "
        f"mean bucketed encoder length {mean_len:.0f}")

  constrained = _time(lambda b: fns.search(b[1], b[2]).items, batches)
  encode = p.partition(lambda prm, t: module.apply({"params": prm}, t, method="encode"),
                       in_shardings=(shard, p.batch_sharding), out_shardings=p.batch_sharding)
  t_enc = _time(lambda b: encode(params, fns._device(t=b[1])["t"]), batches)  # pylint: disable=protected-access
  length, width = fns.trie.max_length, args.beam
  greedy = p.partition(
      lambda prm, t: decoding.generate(module, prm, t, length, num_decodes=width)[0],
      in_shardings=(shard, p.batch_sharding), out_shardings=p.batch_sharding)
  t_free = _time(lambda b: greedy(params, fns._device(t=b[1])["t"]), batches)  # pylint: disable=protected-access
  per_user = constrained / n
  print(f"decoder: {fns.trie.max_length} steps max; retrieval: {constrained:.1f}s for {n} users ({n / constrained:.1f} users/s); "
        f"all {users} users: {per_user * users / 60:.1f} min"
        + (" (EXTRAPOLATED from the subset)" if n < users else ""))
  print(f"  encoder {t_enc:.1f}s ({100 * t_enc / constrained:.0f}%), decoder+beam "
        f"{t_free - t_enc:.1f}s ({100 * (t_free - t_enc) / constrained:.0f}%), trie+beam "
        f"{constrained - t_free:.1f}s ({100 * (constrained - t_free) / constrained:.0f}%)")

  rspec = evaluation.task_spec("rec_t5x.ml1m.ranking", "test")
  rfns = evaluation_fns.TaskFns(rspec, module, params, p, shard, config)
  rbatches = _batches(rspec.name, "test", rfns.batch_size, args.ranking_examples)
  cands = [[evaluation_fns.ranking_candidates(rspec, k, rspec.sample_config.seed) for k in b[2]]
           for b in rbatches]
  pairs = list(zip(rbatches, cands))
  t_rank = _time(lambda bc: rfns.score(bc[0][1], bc[1]).scores, pairs)
  num = sum(len(c) * len(c[0]) for c in cands)
  print(f"ranking: {num} candidates in {t_rank:.1f}s = {num / t_rank:.0f} candidates/s "
        f"({rspec.sample_config.num_candidates} per example)")
  print(f"machine: {platform.node()} {os.cpu_count()} cpus, jax {jax.__version__}, "
        f"{jax.devices()[0].platform}; uptime: "
        + subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
  main()
