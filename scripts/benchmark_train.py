"""rec_t5x's train step vs Hugging Face PyTorch T5, side by side, on real ML-100K prompts.

One run measures both frameworks on the same machine, the same cores, the same model dimensions
(FLAN-T5 layout: gated GELU, untied output layer, vocabulary 32,128), the same batches and the same
optimizer (Adafactor with T5X's defaults, no momentum, constant learning rate 1e-3):

  1. Batches are built once from the same real examples of the `rec_t5x.ml100k.rec_all` mixture
     (train split, seed 0), tokenized with the dataset's vocabulary and trimmed to the lengths of
     each configuration as SeqIO trims them: "padded" = `seqio.EncDecFeatureConverter(pack=False)`,
     "packed" = `pack=True` at the same [batch, length]. They are written to one npz per config.
  2. Every measurement runs in a fresh process (scripts/benchmark_workers.py) pinned to the cores
     of this process; the frameworks alternate within each round and their order flips from round
     to round. JAX's persistent compilation cache keeps recompiles out of later rounds.
  3. Per round, each worker reports the median of its timed steps and its own matmul peak (2048^3
     float32). Step-time ratios are taken per round and their median reported, as in
     ../shared/reference/performance.md; only ratios are trustworthy on shared machines.

Reported per config: step time, examples/s and non-padding tokens/s (encoder + decoder target
tokens that are not padding) of rec_t5x padded, rec_t5x packed and HF padded, their ratios to HF,
and model FLOPs utilisation (scripts/benchmark_flops.py: matmuls counted exactly, training = 3 x
forward, padding included) against the machine's measured matmul peak.

  scripts/_venv.sh python scripts/benchmark_train.py --rounds 3 --json /tmp/bench.json
  (or .venv/bin/python scripts/benchmark_train.py ...)

HF T5 has no packing (segment ids), so it only runs padded batches: "packed vs HF" compares our
packed step with HF's padded step over the same examples, which is what a user switching gets.
"""
import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchmark_flops  # noqa: E402  (sibling module)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "benchmark_workers.py")
MIXTURE = "rec_t5x.ml100k.rec_all"
MAX_LENGTHS = {"inputs": 1024, "targets": 64}  # fetch once at the longest lengths, trim per config


@dataclasses.dataclass(frozen=True)
class BenchConfig:
  """One benchmarked setting.

  Attributes:
    name: key in results and tables.
    shape: a key of benchmark_flops.SHAPES.
    batch_size: rows per batch (padded and packed alike).
    inputs_length: encoder length.
    targets_length: decoder length.
    packed: also time rec_t5x on packed batches.
  """
  name: str
  shape: str
  batch_size: int
  inputs_length: int
  targets_length: int
  packed: bool

  def __post_init__(self):
    if self.shape not in benchmark_flops.SHAPES:
      raise ValueError(f"BenchConfig.shape={self.shape!r}: expected one of "
                       f"{sorted(benchmark_flops.SHAPES)}")
    for field in ("batch_size", "inputs_length", "targets_length"):
      value = getattr(self, field)
      if value < 1:
        raise ValueError(f"BenchConfig.{field}={value}: expected >= 1")
    if self.inputs_length > MAX_LENGTHS["inputs"] or self.targets_length > MAX_LENGTHS["targets"]:
      raise ValueError(f"BenchConfig {self.name}: lengths {self.inputs_length}/"
                       f"{self.targets_length} exceed {MAX_LENGTHS}")


# The anchor shape of ../shared/reference/performance.md (real prompts are longer than 128 tokens,
# so rows are nearly full and packing has nothing to add: padded only), and the project's training
# lengths (gin/experiments/ml100k_tiny_rec_all.gin: inputs 1024, targets 64), where packing matters.
CONFIGS = {
    c.name: c for c in (
        BenchConfig("tiny_b8_128_16", "tiny", 8, 128, 16, packed=False),
        BenchConfig("small_b8_128_16", "small", 8, 128, 16, packed=False),
        BenchConfig("tiny_b8_1024_64", "tiny", 8, 1024, 64, packed=True),
        BenchConfig("small_b2_1024_64", "small", 2, 1024, 64, packed=True),
    )
}


# ----------------------------------------------------------------------------- batches


def real_examples(num_examples: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
  """The first `num_examples` tokenized train examples of the rec_all mixture.

  Returns:
    [{"inputs": int32 [n], "targets": int32 [m]}] with EOS, trimmed to MAX_LENGTHS.
  """
  import seqio  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, REPO)
  import seqio_tasks  # pylint: disable=g-import-not-at-top,unused-import  (registers the mixture)
  mixture = seqio.get_mixture_or_task(MIXTURE)
  ds = mixture.get_dataset(dict(MAX_LENGTHS), split="train", shuffle=True, seed=seed,
                           use_cached=False, num_epochs=None)
  return [{"inputs": ex["inputs"], "targets": ex["targets"]}
          for ex in ds.take(num_examples).as_numpy_iterator()]


def convert(examples: list[dict[str, np.ndarray]], config: BenchConfig,
            pack: bool) -> dict[str, np.ndarray]:
  """Runs `seqio.EncDecFeatureConverter(pack=pack)` and batches (drops the last partial batch).

  Examples are first trimmed to the config's lengths exactly as SeqIO's `trim_output_features`
  does (keep the first L tokens).

  Returns:
    feature -> [num_batches, batch, length] array.
  """
  import seqio  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  lengths = {"inputs": config.inputs_length, "targets": config.targets_length}

  def generate():
    for ex in examples:
      yield {k: ex[k][:lengths[k]] for k in lengths}

  spec = {k: tf.TensorSpec([None], tf.int32) for k in lengths}
  ds = tf.data.Dataset.from_generator(generate, output_signature=spec)
  ds = seqio.EncDecFeatureConverter(pack=pack)(ds, lengths)
  batches = list(ds.batch(config.batch_size, drop_remainder=True).as_numpy_iterator())
  if not batches:
    raise ValueError(f"{config.name}: {len(examples)} examples make no full batch (pack={pack})")
  return {k: np.stack([b[k] for b in batches]) for k in batches[0]}


def batch_stats(batches: dict[str, np.ndarray]) -> dict[str, float]:
  """Mean examples and non-padding tokens (encoder + decoder targets) per batch."""
  tokens = ((batches["encoder_input_tokens"] != 0).sum(axis=(1, 2))
            + (batches["decoder_target_tokens"] != 0).sum(axis=(1, 2)))
  if "encoder_segment_ids" in batches:
    examples = batches["encoder_segment_ids"].max(axis=2).sum(axis=1)
  else:
    examples = (batches["encoder_input_tokens"] != 0).any(axis=2).sum(axis=1)
  return {"num_batches": int(tokens.shape[0]), "examples_per_batch": float(examples.mean()),
          "tokens_per_batch": float(tokens.mean()),
          "encoder_fill": float((batches["encoder_input_tokens"] != 0).mean()),
          "decoder_fill": float((batches["decoder_target_tokens"] != 0).mean())}


def write_batches(examples, config: BenchConfig, path: str) -> dict[str, dict[str, float]]:
  """Writes the config's padded (and packed) batches to `path`; returns their batch_stats."""
  kinds = {"padded": convert(examples, config, pack=False)}
  if config.packed:
    kinds["packed"] = convert(examples, config, pack=True)
  np.savez(path, **{f"{kind}/{k}": v for kind, arrays in kinds.items() for k, v in arrays.items()})
  return {kind: batch_stats(arrays) for kind, arrays in kinds.items()}


# ----------------------------------------------------------------------------- workers


def run_worker(framework: str, config: BenchConfig, kind: str, batches_path: str, warmup: int,
               steps: int, cache_dir: str, phase: str = "step") -> dict:
  """One fresh worker process; returns its RESULT dict (raises with its output on failure)."""
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)  # one CPU device, the machine's threads
  env.update(TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu",
             JAX_COMPILATION_CACHE_DIR=cache_dir,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
             PYTHONPATH=os.pathsep.join([REPO, env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
  cmd = [sys.executable, WORKERS, "--framework", framework, "--shape", config.shape,
         "--batches", batches_path, "--kind", kind, "--phase", phase, "--warmup", str(warmup),
         "--steps", str(steps)]
  start = time.perf_counter()
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
  if proc.returncode or not lines:
    raise RuntimeError(f"worker {' '.join(cmd)} failed (exit {proc.returncode}):\n"
                       f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
  result = json.loads(lines[-1][len("RESULT "):])
  result["wall_s"] = time.perf_counter() - start
  return result


def runs_of(config: BenchConfig) -> list[tuple[str, str]]:
  """(framework, kind) pairs timed for a config."""
  runs = [("jax", "padded"), ("torch", "padded")]
  if config.packed:
    runs.insert(1, ("jax", "packed"))
  return runs


# ----------------------------------------------------------------------------- summary


def summarize(config: BenchConfig, stats: dict, rounds: list[dict]) -> dict:
  """Per-config numbers from per-round worker results.

  Args:
    config: the setting.
    stats: batch_stats per kind.
    rounds: per round, {"jax/padded": result, ...}.

  Returns:
    dict with, per run, median step seconds, examples/s, tokens/s, MFU; ratios to HF (median of
    per-round ratios); peaks.
  """
  shape = benchmark_flops.SHAPES[config.shape]
  flops = benchmark_flops.train_step_flops(shape, config.batch_size, config.inputs_length,
                                           config.targets_length)
  peaks = {fw: statistics.median(r[k]["peak_flops"] for r in rounds for k in r
                                 if k.startswith(fw + "/"))
           for fw in ("jax", "torch")}
  machine_peak = max(peaks.values())
  out = {"config": dataclasses.asdict(config), "train_step_gflop": flops / 1e9,
         "peak_gflops": {k: v / 1e9 for k, v in peaks.items()}, "batches": stats, "runs": {}}
  hf = [statistics.median(r["torch/padded"]["step_times"]) for r in rounds]
  for framework, kind in runs_of(config):
    key = f"{framework}/{kind}"
    per_round = [statistics.median(r[key]["step_times"]) for r in rounds]
    step = statistics.median(per_round)
    s = stats[kind]
    entry = {"step_s": step, "step_s_per_round": per_round,
             "examples_per_s": s["examples_per_batch"] / step,
             "tokens_per_s": s["tokens_per_batch"] / step,
             "mfu": flops / step / machine_peak,
             "peak_rss_gb": max(r[key]["peak_rss_gb"] for r in rounds),
             "params": rounds[0][key]["params"]}
    ratios = [h / o for h, o in zip(hf, per_round)]
    entry["step_speedup_vs_hf"] = statistics.median(ratios)
    entry["step_speedup_vs_hf_per_round"] = ratios
    hf_tokens = stats["padded"]["tokens_per_batch"]
    entry["tokens_per_s_vs_hf"] = statistics.median(
        s["tokens_per_batch"] / o / (hf_tokens / h) for h, o in zip(hf, per_round))
    entry["examples_per_s_vs_hf"] = statistics.median(
        s["examples_per_batch"] / o / (stats["padded"]["examples_per_batch"] / h)
        for h, o in zip(hf, per_round))
    out["runs"][key] = entry
  return out


def markdown_table(summaries: list[dict]) -> str:
  """The results table of docs/benchmarks.md."""
  rows = ["| config | run | step (s) | vs HF step | examples/s | non-pad tokens/s | tokens/s vs HF "
          "| MFU | peak RSS (GB) |",
          "|---|---|---|---|---|---|---|---|---|"]
  names = {"jax/padded": "rec_t5x padded", "jax/packed": "rec_t5x packed",
           "torch/padded": "HF PyTorch padded"}
  for s in summaries:
    for key, e in s["runs"].items():
      rows.append(f"| {s['config']['name']} | {names[key]} | {e['step_s']:.3f} | "
                  f"{e['step_speedup_vs_hf']:.2f}x | {e['examples_per_s']:.1f} | "
                  f"{e['tokens_per_s']:.0f} | {e['tokens_per_s_vs_hf']:.2f}x | {e['mfu']:.0%} | "
                  f"{e['peak_rss_gb']:.2f} |")
  return "\n".join(rows)


def machine_info() -> dict:
  """nproc, CPU model, memory, load, date, library versions."""
  model = "unknown"
  with open("/proc/cpuinfo") as f:
    for line in f:
      if line.startswith("model name"):
        model = line.split(":", 1)[1].strip()
        break
  with open("/proc/meminfo") as f:
    mem_kb = int(f.readline().split()[1])
  return {"nproc": os.cpu_count(), "affinity": sorted(os.sched_getaffinity(0)), "cpu": model,
          "memory_gb": round(mem_kb / 1e6, 1), "loadavg": list(os.getloadavg()),
          "date": datetime.datetime.now().isoformat(timespec="seconds"),
          "python": platform.python_version()}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--configs", default=",".join(CONFIGS),
                      help=f"comma-separated subset of {list(CONFIGS)}")
  parser.add_argument("--rounds", type=int, default=3, help="0 only writes the batches")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--num_examples", type=int, default=64,
                      help="real examples the batches are built from")
  parser.add_argument("--workdir", default=None, help="batches and JAX compile cache (default tmp)")
  parser.add_argument("--json", default=None, help="write all results here")
  args = parser.parse_args()
  names = [n for n in args.configs.split(",") if n]
  unknown = [n for n in names if n not in CONFIGS]
  if unknown:
    parser.error(f"--configs: unknown {unknown}; known {list(CONFIGS)}")
  configs = [CONFIGS[n] for n in names]
  workdir = args.workdir or tempfile.mkdtemp(prefix="rec_t5x_bench_")
  cache_dir = os.path.join(workdir, "jax_cache")
  info_before = machine_info()
  print(f"machine: {info_before}", flush=True)

  examples = real_examples(args.num_examples)
  stats, paths = {}, {}
  for config in configs:
    paths[config.name] = os.path.join(workdir, f"{config.name}.npz")
    stats[config.name] = write_batches(examples, config, paths[config.name])
    print(f"{config.name}: {stats[config.name]}", flush=True)

  results = {c.name: [] for c in configs}
  for r in range(args.rounds):
    for config in configs:
      runs = runs_of(config)
      order = runs if r % 2 == 0 else runs[::-1]
      round_results = {}
      for framework, kind in order:
        res = run_worker(framework, config, kind, paths[config.name], args.warmup, args.steps,
                         cache_dir)
        round_results[f"{framework}/{kind}"] = res
        print(f"round {r} {config.name} {framework}/{kind}: median "
              f"{statistics.median(res['step_times']):.4f}s ({res['wall_s']:.0f}s wall)",
              flush=True)
      results[config.name].append(round_results)

  if not args.rounds:
    print(f"batches written to {workdir} (--rounds 0: nothing timed)")
    return
  summaries = [summarize(c, stats[c.name], results[c.name]) for c in configs]
  info_after = machine_info()
  print("\n" + markdown_table(summaries))
  print(f"\nload average before {info_before['loadavg']}, after {info_after['loadavg']}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"command": " ".join(sys.argv), "machine_before": info_before,
                 "machine_after": info_after, "mixture": MIXTURE,
                 "num_examples": args.num_examples, "rounds": args.rounds,
                 "warmup": args.warmup, "steps": args.steps, "summaries": summaries,
                 "raw": results}, f, indent=1)


if __name__ == "__main__":
  main()
