"""The classical baselines next to the ablation: their test metrics, read back or (on request) run.

Results live in `<data_dir>/baselines/<dataset>/<model>/` (rec_t5x.baselines.outputs), written by
`python -m rec_t5x.baselines.run`. A missing result is reported as missing (None), never filled
in. `run_missing` trains the missing ones with a wall-clock cap, as docs/baselines.md does.
A dataset variant that only respells item IDs (`ml100k_atomic`, rec_t5x/item_ids.py) has the same
interactions and split as its base dataset, so it shares the base dataset's baselines.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
import os
import pathlib
import sys
from typing import Any

from rec_t5x import item_ids
from rec_t5x.baselines import outputs
from rec_t5x.experiments import runner

MODELS = ("pop", "bpr_mf", "sasrec", "lightgcn")
DISPLAY_NAMES = {"pop": "Pop", "bpr_mf": "BPR-MF", "sasrec": "SASRec", "lightgcn": "LightGCN"}
# docs/baselines.md's cap for ML-100K; ML-1M used 480 s (BPR-MF) and 900 s (SASRec).
DEFAULT_MAX_TRAIN_SECONDS = 420.0
Log = Callable[[str], None]


def default_root() -> pathlib.Path:
  """`<data_dir>/baselines` (data_dir: $REC_T5X_DATA_DIR or ~/.cache/rec_t5x)."""
  from rec_t5x.data import catalog  # pylint: disable=g-import-not-at-top
  return catalog.data_dir() / "baselines"


def read(root: str | os.PathLike, dataset: str, model: str) -> dict[str, Any] | None:
  """The test metrics and fit summary of one baseline, None when it has not been run.

  Returns:
    {"model", "name", "test": {metric: value}, "validation": {metric: value} (empty when not
    recorded), "stop_reason", "best_epoch", "epochs", "train_seconds", "date", "path"}, or None
    when `outputs.load` finds no complete output.
  """
  directory = pathlib.Path(root) / item_ids.split_variant(dataset)[0] / model
  try:
    metrics = outputs.load(directory)["metrics"]
  except FileNotFoundError:
    return None
  fit = metrics.get("fit", {})
  return {"model": model, "name": DISPLAY_NAMES.get(model, model), "test": metrics["test"],
          "validation": metrics.get("validation") or {},
          "stop_reason": fit.get("stop_reason"), "best_epoch": fit.get("best_epoch"),
          "epochs": fit.get("epochs"), "train_seconds": fit.get("train_seconds"),
          "date": metrics.get("date"), "path": os.fspath(directory)}


def read_all(root: str | os.PathLike, datasets: Sequence[str],
             models: Sequence[str] = MODELS) -> dict[str, dict[str, dict[str, Any] | None]]:
  """{dataset: {model: `read(...)` or None}} for every dataset and model."""
  return {dataset: {model: read(root, dataset, model) for model in models} for dataset in datasets}


def command(dataset: str, model: str, max_train_seconds: float, root: str | os.PathLike,
            python: str = sys.executable) -> list[str]:
  """`python -m rec_t5x.baselines.run` of one dataset and model, capped, into `root`."""
  if max_train_seconds <= 0:
    raise ValueError(f"max_train_seconds={max_train_seconds}: expected > 0")
  return [python, "-m", "rec_t5x.baselines.run", f"--dataset={dataset}", f"--model={model}",
          f"--max_train_seconds={max_train_seconds:g}", f"--output_dir={os.fspath(root)}"]


def run_missing(root: str | os.PathLike, datasets: Sequence[str], max_train_seconds: float,
                models: Sequence[str] = MODELS, executor: runner.Executor = runner.execute,
                log: Log = print) -> list[list[str]]:
  """Runs every baseline of `datasets` x `models` that has no result yet.

  Returns:
    The commands that were run.
  """
  ran = []
  for dataset in dict.fromkeys(item_ids.split_variant(d)[0] for d in datasets):
    for model in models:
      if read(root, dataset, model) is not None:
        continue
      argv = command(dataset, model, max_train_seconds, root)
      log(f"[experiment] baseline {model} on {dataset} (cap {max_train_seconds:g}s)")
      executor(argv, env=dict(os.environ),
               log_path=pathlib.Path(root) / dataset / f"{model}.experiment.log")
      ran.append(argv)
  return ran
