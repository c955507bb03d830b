"""Benchmark of the decoding evaluation on ML-1M with the tiny T5 (random initialisation).

  .venv/bin/python scripts/benchmark_eval.py [--max_users N] [--beam 20] [--batch 32]

Measures, on the test split of `rec_t5x.ml1m.retrieval` (one example per user, 6,040 users):
  * whole-catalogue constrained beam search (beam = top-K = 20, history excluded): seconds and
    users/s, extrapolated to all users when `--max_users` limits the run (said so in the output);
  * the share of time in encoder / decoder / trie + beam bookkeeping, estimated on the first
    `--share_users` users by timing three compiled functions on the same batches: the encoder
    alone; the encoder plus the search's decoder steps without any search (the trie's length in
    steps on batch * beam rows, with the same cache layout as the search: self-attention cache
    tiled per beam, encoder keys / values shared by the beams of an example); and the constrained
    search. decoder = steps - encoder; trie + beam = search - steps (trie gathers, leaf exclusion,
    top-k, cache reordering);
  * ranking throughput in candidates/s (`rec_t5x.ml1m.ranking`, likelihood scoring of each
    example's candidates, encoder once per example).
The retrieval time is the wall-clock of the whole run, compilation of every length bucket included
(batches are formed longest prompt first, as in evaluation). Share and ranking timings exclude
compilation (one warm-up batch per function). Prints `uptime` with the result: the machine is
shared.
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

from rec_t5x import beam_search
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


def _time(fn, batches, warm_up: bool = True) -> float:
  if warm_up:
    jax.block_until_ready(fn(batches[0]))  # compile
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
  parser.add_argument("--share_users", type=int, default=256,
                      help="users (first batches) the encoder / decoder / trie shares are timed on")
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

  constrained = _time(lambda b: fns.search(b[1], b[2]).items, batches, warm_up=False)
  per_user = constrained / n
  print(f"retrieval (compilation included): {constrained:.1f}s for {n} users "
        f"({n / constrained:.1f} users/s); all {users} users: {per_user * users / 60:.1f} min"
        + (" (EXTRAPOLATED from the subset)" if n < users else " (MEASURED)"), flush=True)

  share_batches = batches[:max(1, -(-args.share_users // fns.batch_size))]
  encode = p.partition(lambda prm, t: module.apply({"params": prm}, t, method="encode"),
                       in_shardings=(shard, p.batch_sharding), out_shardings=p.batch_sharding)
  length, width = fns.trie.max_length, args.beam

  def decoder_steps(prm, tokens):
    encoded = module.apply({"params": prm}, tokens, method="encode")
    cache = decoding.init_decoder_cache(module, prm, encoded, tokens, length)
    cache = beam_search._tile_cache(cache, width, beam_search.BEAM_INVARIANT_CACHE_KEYS)  # pylint: disable=protected-access
    step = decoding.network_tokens_to_logits(module, prm, length)
    ids = jnp.zeros((tokens.shape[0] * width, 1), jnp.int32)

    def body(_, carry):
      logits, cache = step(ids, carry[1])
      return carry[0] + logits[:, 0], cache
    return jax.lax.fori_loop(0, length, body, (jnp.zeros((ids.shape[0],)), cache))[0]

  steps_fn = p.partition(decoder_steps, in_shardings=(shard, p.batch_sharding),
                         out_shardings=p.batch_sharding)
  dev = lambda b: fns._device(t=b[1])["t"]  # pylint: disable=protected-access
  t_search = _time(lambda b: fns.search(b[1], b[2]).items, share_batches)
  t_enc = _time(lambda b: encode(params, dev(b)), share_batches)
  t_steps = _time(lambda b: steps_fn(params, dev(b)), share_batches)
  n_share = sum(b[3] for b in share_batches)
  print(f"shares on {n_share} users ({t_search:.1f}s without compilation; decoder: {length} steps "
        f"of {fns.batch_size} x {width} rows): encoder {t_enc:.1f}s ({100 * t_enc / t_search:.0f}%), "
        f"decoder steps {t_steps - t_enc:.1f}s ({100 * (t_steps - t_enc) / t_search:.0f}%), "
        f"trie+beam {t_search - t_steps:.1f}s ({100 * (t_search - t_steps) / t_search:.0f}%)",
        flush=True)

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
