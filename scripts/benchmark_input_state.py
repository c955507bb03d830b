"""Input-iterator checkpoint size and memory: a full shuffle buffer against `permuted_keys`.

The training sources shuffle their sample keys (seqio_tasks/sources.py). This script measures,
side by side on the real training keys of a mixture's tasks, the two ways of doing it:

  buffer        `tf.data.Dataset.from_tensor_slices(keys).shuffle(len(keys))` (what the sources
                did before 2026-12-05)
  permutation   `sources.permuted_keys(keys, seed)` (stateless per-epoch permutation, used now)

For each way, one fresh process per task builds the dataset, reads `--advance` keys, writes a
`tf.train.Checkpoint(iterator=...)` (as the trainer does every CHECKPOINT_PERIOD) and reports
the seconds to the first key, the checkpoint's bytes and the process's peak resident memory.

  python scripts/benchmark_input_state.py --mixture rec_t5x.ml100k_atomic.rec_all
"""
import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
METHODS = ("buffer", "permutation")


def _task_keys(task_name: str):
  import seqio  # pylint: disable=import-outside-toplevel
  import seqio_tasks  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  return seqio.get_mixture_or_task(task_name).source._prompt_fn.keys("train")  # pylint: disable=protected-access


def _worker(task_name: str, method: str, advance: int, seed: int) -> dict:
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from seqio_tasks import sources  # pylint: disable=import-outside-toplevel
  keys = _task_keys(task_name)
  start = time.perf_counter()
  if method == "buffer":
    data = tf.data.Dataset.from_tensor_slices(tf.constant(keys, tf.int64)).shuffle(
        keys.size, seed=seed, reshuffle_each_iteration=True)
  else:
    data = sources.permuted_keys(keys, seed)
  iterator = iter(data.repeat())
  next(iterator)
  first_key_s = time.perf_counter() - start
  for _ in range(advance - 1):
    next(iterator)
  with tempfile.TemporaryDirectory() as tmp:
    start = time.perf_counter()
    tf.train.Checkpoint(iterator=iterator).write(os.path.join(tmp, "iterator"))
    write_s = time.perf_counter() - start
    size = sum(f.stat().st_size for f in pathlib.Path(tmp).iterdir())
  return {"task": task_name, "method": method, "keys": int(keys.size),
          "first_key_s": first_key_s, "checkpoint_bytes": size, "write_s": write_s,
          "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _run(task_name: str, method: str, advance: int, seed: int) -> dict:
  command = [sys.executable, __file__, "--worker", task_name, "--method", method,
             "--advance", str(advance), "--seed", str(seed)]
  done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
  lines = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")]
  if done.returncode != 0 or not lines:
    raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}")
  return json.loads(lines[-1][len("RESULT "):])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--mixture", default="rec_t5x.ml100k_atomic.rec_all")
  parser.add_argument("--advance", type=int, default=1000, help="keys read before the checkpoint")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  parser.add_argument("--method", choices=METHODS, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  sys.path.insert(0, str(REPO_ROOT))
  if args.worker:
    print("RESULT " + json.dumps(_worker(args.worker, args.method, args.advance, args.seed)))
    return 0
  import seqio  # pylint: disable=import-outside-toplevel
  import seqio_tasks  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  provider = seqio.get_mixture_or_task(args.mixture)
  tasks = [t.name for t in getattr(provider, "tasks", [provider])]
  print(f"| task | keys | method | first key (s) | checkpoint | write (s) | peak RSS |")
  print("|---|---|---|---|---|---|---|")
  for task in tasks:
    for method in METHODS:
      r = _run(task, method, args.advance, args.seed)
      print(f"| {task} | {r['keys']:,} | {method} | {r['first_key_s']:.2f} | "
            f"{r['checkpoint_bytes'] / 2**20:.2f} MiB | {r['write_s']:.2f} | "
            f"{r['peak_rss_mb']:.0f} MiB |", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
