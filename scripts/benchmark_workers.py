"""Worker processes of scripts/benchmark_train.py: one framework, one shape, one batch set each.

Each worker is started as a fresh process pinned to the cores of its parent, times `--steps`
training steps after `--warmup` untimed ones, and prints one line `RESULT {json}`: the seconds of
every timed step, peak resident memory, parameter count and the matmul peak of its own framework
(a 2048^3 float32 product, median of 5). Keeping every measurement in a fresh process keeps one
framework's thread pools and caches from slowing the other.

  python scripts/benchmark_workers.py --framework jax --shape small --batches /tmp/b.npz \
      --kind padded --warmup 2 --steps 5

`--phase` narrows what is timed, for profiling where a step loses:
  step      forward + backward + Adafactor update (the benchmark)
  grad      forward + backward, no update
  forward   the training loss only (no gradients; torch under `no_grad`)

The JAX side is rec_t5x itself: `network.Transformer` in `models.EncoderDecoderModel`, T5X-default
`optimizers.adafactor`, compiled by `trainer.Trainer` through a one-device `partitioning.Partitioner`
(donated state). The PyTorch side is Hugging Face `T5ForConditionalGeneration` with the same
dimensions and transformers' Adafactor set to T5X's defaults.
"""
import argparse
import json
import os
import resource
import sys
import time
from typing import Any, Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchmark_flops  # noqa: E402  (sibling module)

PEAK_N = 2048
PHASES = ("step", "grad", "forward")
LEARNING_RATE = 1e-3

# XLA options the benchmark compiles the JAX step with (see docs/benchmarks.md for what each does
# on our 2-core AVX2 machines). Names must exist in jaxlib's DebugOptions.
JAX_COMPILER_OPTIONS: dict[str, Any] = {}


def _peak_rss_gb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def _time_steps(step: Callable[[Any], None], batches: list[Any], warmup: int,
                steps: int) -> tuple[list[float], list[float]]:
  """Runs `warmup` untimed then `steps` timed calls of step(batch).

  Returns:
    (wall-clock seconds per step, process CPU seconds per step). On a machine shared with other
    jobs the CPU time of a single-threaded worker is a steadier measure of the work done.
  """
  times, cpu_times = [], []
  for i in range(warmup + steps):
    batch = batches[i % len(batches)]
    start, cpu_start = time.perf_counter(), time.process_time()
    step(batch)
    if i >= warmup:
      times.append(time.perf_counter() - start)
      cpu_times.append(time.process_time() - cpu_start)
  return times, cpu_times


def _median_seconds(fn: Callable[[], None], repeats: int = 5) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def load_batches(path: str, kind: str) -> list[dict[str, np.ndarray]]:
  """Batches `kind` ("padded" or "packed") of an npz written by benchmark_train.py.

  Returns:
    One dict per batch of EncDecFeatureConverter features, each [batch, length].
  """
  data = np.load(path)
  keys = sorted({k.split("/", 1)[1] for k in data.files if k.startswith(kind + "/")})
  if not keys:
    raise ValueError(f"{path} has no {kind!r} batches; it holds {sorted(data.files)}")
  count = data[f"{kind}/encoder_input_tokens"].shape[0]
  return [{k: data[f"{kind}/{k}"][i] for k in keys} for i in range(count)]


# ----------------------------------------------------------------------------- PyTorch / transformers


def torch_worker(shape: benchmark_flops.Shape, batches, warmup: int, steps: int,
                 phase: str = "step") -> dict:
  """Hugging Face T5ForConditionalGeneration (FLAN-T5 layout, output layer untied by hand) + Adafactor.

  Packing features are ignored: HF T5 has no segment ids, so it is only given padded batches.
  """
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from transformers.optimization import Adafactor  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(len(os.sched_getaffinity(0)))
  torch.manual_seed(0)
  config = transformers.T5Config(
      vocab_size=shape.vocab_size, d_model=shape.d_model, d_kv=shape.head_dim, d_ff=shape.d_ff,
      num_layers=shape.num_encoder_layers, num_decoder_layers=shape.num_decoder_layers,
      num_heads=shape.num_heads, feed_forward_proj="gated-gelu", dropout_rate=0.0,
      tie_word_embeddings=False, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
  model = transformers.T5ForConditionalGeneration(config)
  # transformers 5.x ties lm_head to the shared embedding regardless of the flag: untie it as FLAN-T5 is.
  model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
  model.train()
  # T5X's Adafactor defaults: factored second moments, decay exponent 0.8, update clipping 1.0, no
  # momentum, parameter-scale multiplication; a constant learning rate on both sides.
  optimizer = Adafactor(model.parameters(), lr=LEARNING_RATE, scale_parameter=True,
                        relative_step=False, warmup_init=False, decay_rate=-0.8,
                        clip_threshold=1.0, beta1=None)
  torch_batches = []
  for b in batches:
    labels = torch.from_numpy(b["decoder_target_tokens"].astype(np.int64))
    torch_batches.append(dict(
        input_ids=torch.from_numpy(b["encoder_input_tokens"].astype(np.int64)),
        attention_mask=torch.from_numpy((b["encoder_input_tokens"] != 0).astype(np.int64)),
        decoder_input_ids=torch.from_numpy(b["decoder_input_tokens"].astype(np.int64)),
        labels=torch.where(labels == 0, torch.full_like(labels, -100), labels)))

  def step(batch):
    if phase == "forward":
      with torch.no_grad():
        return float(model(**batch).loss)
    optimizer.zero_grad(set_to_none=True)
    loss = model(**batch).loss
    loss.backward()
    if phase == "step":
      optimizer.step()
    return float(loss)

  times, cpu_times = _time_steps(step, torch_batches, warmup, steps)
  a = torch.randn(PEAK_N, PEAK_N)
  torch.mm(a, a)
  peak = 2 * PEAK_N**3 / _median_seconds(lambda: torch.mm(a, a))
  return {"step_times": times, "cpu_times": cpu_times, "peak_flops": peak, "peak_rss_gb": _peak_rss_gb(),
          "params": sum(p.numel() for p in model.parameters())}


# ----------------------------------------------------------------------------- JAX / rec_t5x


def t5_config(shape: benchmark_flops.Shape):
  """rec_t5x network config of a benchmark shape (FLAN-T5 layout: gated GELU, untied logits)."""
  from rec_t5x import network  # pylint: disable=g-import-not-at-top
  return network.T5Config(vocab_size=shape.vocab_size, emb_dim=shape.d_model,
                          num_heads=shape.num_heads, head_dim=shape.head_dim, mlp_dim=shape.d_ff,
                          num_encoder_layers=shape.num_encoder_layers,
                          num_decoder_layers=shape.num_decoder_layers,
                          mlp_activations=("gelu", "linear"), logits_via_embedding=False)


def build_jax_step(shape: benchmark_flops.Shape, example_batch: dict[str, np.ndarray],
                   phase: str = "step", compiler_options: dict[str, Any] | None = None):
  """rec_t5x's compiled train step on the first CPU device.

  Args:
    shape: network dimensions.
    example_batch: one batch; its feature names and shapes fix the compiled signature.
    phase: one of PHASES (what the returned function computes).
    compiler_options: XLA options for the Partitioner (default JAX_COMPILER_OPTIONS).

  Returns:
    (run(batch) -> a scalar jax.Array to block on, number of parameters). For "step" the train
    state is carried (and donated) from call to call, as in training.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from rec_t5x import models  # pylint: disable=g-import-not-at-top
  from rec_t5x import network  # pylint: disable=g-import-not-at-top
  from rec_t5x import optimizers  # pylint: disable=g-import-not-at-top
  from rec_t5x import partitioning  # pylint: disable=g-import-not-at-top
  from rec_t5x import trainer as trainer_lib  # pylint: disable=g-import-not-at-top

  options = JAX_COMPILER_OPTIONS if compiler_options is None else compiler_options
  model = models.EncoderDecoderModel(network.Transformer(t5_config(shape)), z_loss=1e-4)
  optimizer = optimizers.adafactor(optimizers.LearningRateConfig("constant", LEARNING_RATE),
                                   optimizers.AdafactorConfig())
  partitioner = partitioning.Partitioner(devices=jax.devices()[:1], compiler_options=options)
  input_shapes = {k: v.shape for k, v in example_batch.items() if k in
                  models.REQUIRED_FEATURES + models.PACKING_FEATURES}
  trainer = trainer_lib.Trainer(model, optimizer, partitioner, input_shapes)
  state = trainer.init_state(jax.random.PRNGKey(0))
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
  if phase == "step":
    holder = {"state": state}

    def run(batch):
      holder["state"], metrics = trainer.train_step(holder["state"], batch)
      return metrics["loss"]
    return run, num_params

  params = state.params
  if phase == "grad":
    fn = lambda p, b: trainer_lib.compute_grads(model, p, b, None)
  elif phase == "forward":
    fn = lambda p, b: model.loss_fn(p, b, None)[0]
  else:
    raise ValueError(f"phase={phase!r}: expected one of {PHASES}")
  compiled = partitioner.partition(
      fn, in_shardings=(trainer.state_shardings.params, partitioner.batch_sharding),
      out_shardings=partitioner.replicated)
  return (lambda batch: jax.tree.leaves(compiled(params, batch))[0]), num_params


def jax_worker(shape: benchmark_flops.Shape, batches, warmup: int, steps: int,
               phase: str = "step", compiler_options: dict[str, Any] | None = None) -> dict:
  """Times rec_t5x's compiled step (see `build_jax_step`) on one CPU device."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  start = time.perf_counter()
  run, num_params = build_jax_step(shape, batches[0], phase, compiler_options)
  device_batches = [jax.device_put(b) for b in batches]  # no host->device copy inside the loop
  jax.block_until_ready(run(device_batches[0]))  # compile outside the timed loop
  compile_s = time.perf_counter() - start
  times, cpu_times = _time_steps(lambda b: jax.block_until_ready(run(b)), device_batches, warmup,
                                 steps)
  a = jnp.asarray(np.random.default_rng(0).standard_normal((PEAK_N, PEAK_N), dtype=np.float32))
  matmul = jax.jit(jnp.dot)
  jax.block_until_ready(matmul(a, a))
  peak = 2 * PEAK_N**3 / _median_seconds(lambda: jax.block_until_ready(matmul(a, a)))
  return {"step_times": times, "cpu_times": cpu_times, "peak_flops": peak, "peak_rss_gb": _peak_rss_gb(),
          "params": num_params, "compile_s": compile_s}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--framework", choices=["jax", "torch"], required=True)
  parser.add_argument("--shape", choices=sorted(benchmark_flops.SHAPES), required=True)
  parser.add_argument("--batches", required=True, help="npz written by benchmark_train.py")
  parser.add_argument("--kind", choices=["padded", "packed"], required=True)
  parser.add_argument("--phase", choices=PHASES, default="step")
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--compiler_options", default=None,
                      help="JSON dict of XLA options for the JAX step (default: the benchmark's)")
  args = parser.parse_args()
  if args.framework == "torch" and args.kind == "packed":
    parser.error("--kind packed needs --framework jax: HF T5 has no segment ids")
  shape = benchmark_flops.SHAPES[args.shape]
  batches = load_batches(args.batches, args.kind)
  if args.framework == "torch":
    result = torch_worker(shape, batches, args.warmup, args.steps, args.phase)
  else:
    options = None if args.compiler_options is None else json.loads(args.compiler_options)
    result = jax_worker(shape, batches, args.warmup, args.steps, args.phase, options)
  print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
  main()
