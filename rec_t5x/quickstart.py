"""The README's main job on real MovieLens-100K: data, every task and mixture, a tiny training run.

  python -m rec_t5x.quickstart [--dataset ml100k_atomic] [--model_dir runs/quickstart/<dataset>]
                               [--skip_train]

Steps: load (build on first run, reuse later) the processed dataset and print its statistics; render
one example of every registered task (each split) and every mixture of the dataset through SeqIO,
with token counts; then train the tiny T5 on the `rec_all` mixture with the gin experiment
`gin/experiments/<dataset>_tiny_rec_all.gin` via the `rec_t5x.train` binary, which writes an Orbax
checkpoint, TensorBoard summaries and the operative gin config to the model directory; finally
evaluate the trained model on the TEST split of retrieval / ranking / rating (every test user) with
`rec_t5x.eval` and `gin/experiments/<dataset>_tiny_eval.gin`, and print the metrics table.

The default dataset is `ml100k_atomic`: MovieLens-100K with one vocabulary piece per item ID, the
setting chosen on the validation split (docs/tuning.md); `--dataset ml100k` runs the digit IDs.
"""
import argparse
import json
import pathlib
import subprocess
import sys
import textwrap
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
FEATURE_LENGTHS = {"inputs": 1024, "targets": 128}
_WIDTH = 100


def _banner(title: str) -> None:
  print(f"\n{'=' * _WIDTH}\n{title}\n{'=' * _WIDTH}", flush=True)


def _show(label: str, example: dict) -> None:
  """Prints one tokenized SeqIO example: its text and its token counts."""
  inputs = example["inputs_pretokenized"].decode()
  targets = example["targets_pretokenized"].decode()
  print(f"\n--- {label}  ({len(example['inputs'])} input tokens, {len(example['targets'])} target tokens)")
  print(textwrap.fill(inputs, _WIDTH, initial_indent="  inputs : ", subsequent_indent="           "))
  print(textwrap.fill(targets, _WIDTH, initial_indent="  targets: ", subsequent_indent="           "))


def _first(provider, split: str, **kwargs) -> dict:
  dataset = provider.get_dataset(FEATURE_LENGTHS, split=split, shuffle=True, seed=0, use_cached=False, **kwargs)
  return next(iter(dataset.take(1).as_numpy_iterator()))


def show_data(dataset_name: str) -> None:
  """Statistics of the processed dataset and one example of every task and mixture."""
  from rec_t5x.data import catalog
  from rec_t5x.data import stats as stats_lib
  import seqio
  import seqio_tasks
  from seqio_tasks import registry

  _banner(f"1. Data: {dataset_name} (real interactions, exact chronological leave-one-out)")
  start = time.time()
  ds = registry.load_dataset(dataset_name)  # a catalogue dataset, or its `_atomic` variant
  print(stats_lib.format_table([stats_lib.compute(ds)]))
  print(f"(loaded in {time.time() - start:.1f}s; cache under {catalog.data_dir()})")

  _banner("2. Every registered task of this dataset (one example per split)")
  prefix = f"rec_t5x.{dataset_name}."
  for name in sorted(n for n in seqio.TaskRegistry.names() if n.startswith(prefix)):
    task = seqio.get_mixture_or_task(name)
    for split in task.splits:
      _show(f"{name} [{split}]", _first(task, split))

  _banner("3. Every mixture of this dataset (one sampled example each)")
  for name in sorted(n for n in seqio.MixtureRegistry.names() if n.startswith(prefix)):
    mixture = seqio.get_mixture_or_task(name)
    rates = ", ".join(f"{t.name.removeprefix(prefix)}={mixture.get_rate(t):g}" for t in mixture.tasks)
    _show(f"{name} (rates: {rates})", _first(mixture, "train", copy_pretokenized=True))
  del seqio_tasks  # Imported for its registrations.


def train(dataset_name: str, model_dir: pathlib.Path) -> None:
  """Trains the tiny model on the dataset's rec_all mixture through the gin binary."""
  gin_file = REPO_ROOT / "gin" / "experiments" / f"{dataset_name}_tiny_rec_all.gin"
  if not gin_file.is_file():
    raise SystemExit(f"no gin experiment for {dataset_name}: expected {gin_file}")
  _banner(f"4. Training the tiny T5 on rec_t5x.{dataset_name}.rec_all ({gin_file.relative_to(REPO_ROOT)})")
  command = [sys.executable, "-m", "rec_t5x.train", f"--gin_file={gin_file}",
             f"--gin.MODEL_DIR='{model_dir}'"]
  print("$ " + " ".join(command), flush=True)
  subprocess.run(command, check=True, cwd=REPO_ROOT)
  print(f"\nCheckpoints, TensorBoard summaries and config.gin are in {model_dir}")


def evaluate(dataset_name: str, model_dir: pathlib.Path) -> None:
  """TEST metrics of the trained model (rec_t5x.eval, decoding through seqio.Evaluator)."""
  gin_file = REPO_ROOT / "gin" / "experiments" / f"{dataset_name}_tiny_eval.gin"
  if not gin_file.is_file():
    raise SystemExit(f"no evaluation gin file for {dataset_name}: expected {gin_file}")
  output_dir = model_dir / "test_eval"
  _banner(f"5. TEST metrics of the trained tiny T5 ({gin_file.relative_to(REPO_ROOT)})")
  command = [sys.executable, "-m", "rec_t5x.eval", f"--gin_file={gin_file}",
             f"--gin.CHECKPOINT_PATH='{model_dir}'", f"--gin.EVAL_OUTPUT_DIR='{output_dir}'"]
  print("$ " + " ".join(command), flush=True)
  start = time.time()
  subprocess.run(command, check=True, cwd=REPO_ROOT)
  from rec_t5x import evaluation  # pylint: disable=g-import-not-at-top  (loads TensorFlow)
  results = json.loads((output_dir / "decode_metrics.json").read_text())["tasks"]
  print(f"\nTEST metrics ({time.time() - start:.0f}s; per-example predictions in "
        f"{output_dir / 'predictions'}):\n")
  print(evaluation.metrics_table(results))


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--dataset", default="ml100k_atomic")
  parser.add_argument("--model_dir", default=None,
                      help="default runs/quickstart/<dataset> in the repository")
  parser.add_argument("--skip_train", action="store_true", help="only show the data, tasks and mixtures")
  args = parser.parse_args(argv)
  model_dir = pathlib.Path(args.model_dir or REPO_ROOT / "runs" / "quickstart" / args.dataset)
  show_data(args.dataset)
  if not args.skip_train:
    train(args.dataset, model_dir.resolve())
    evaluate(args.dataset, model_dir.resolve())


if __name__ == "__main__":
  main()
