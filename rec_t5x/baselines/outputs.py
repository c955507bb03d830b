"""On-disk outputs of a baseline run, for reports and as signal sources (RecRanker hints, BDLM).

One directory per (dataset, model), written by `save` and read back by `load`:

  metrics.json    {"dataset", "model", "model_config", "train_config", "fit": {best_epoch,
                  epochs, stop_reason, train_seconds, best_validation_ndcg@10, history},
                  "validation": {...}, "test": {...}, "protocol": {...}, ...}
                  (see `rec_t5x.baselines.run`).
  topk.npz        users int64 [rows] (the dataset's eval_users()), and for split in
                  (validation, test): {split}_targets int64 [rows] (item index),
                  {split}_items int64 [rows, top_n] (item indices, best first, input-prefix items
                  excluded), {split}_public_ids int64 [rows, top_n] (the same items as public ids),
                  {split}_scores float32 [rows, top_n], {split}_full_ranks int64 [rows].
  embeddings.npz  the model's arrays: user_embeddings float32 [num_users, dim] and
                  item_embeddings float32 [num_items, dim] (SASRec adds user_embeddings_validation;
                  Pop has item_counts int64 [num_items] only), plus item_public_ids int64
                  [num_items] so rows can be matched to the ids prompts show.

Arrays are plain `np.savez` archives (no pickles), so `np.load(path)` reads them anywhere.
"""
from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import numpy as np

from rec_t5x.baselines import evaluation
from rec_t5x.data import dataset as dataset_lib

METRICS_FILE = "metrics.json"
TOPK_FILE = "topk.npz"
EMBEDDINGS_FILE = "embeddings.npz"


def topk_arrays(ds: dataset_lib.RecDataset, splits: dict[str, evaluation.EvalSplit],
                results: dict[str, evaluation.EvalResult]) -> dict[str, np.ndarray]:
  """The arrays of topk.npz (see the module docstring) from per-split results."""
  arrays: dict[str, np.ndarray] = {"users": splits["validation"].users}
  for name, split in splits.items():
    result = results[name]
    if not np.array_equal(split.users, arrays["users"]):
      raise ValueError(f"split {name!r} scores other users than the validation split")
    arrays[f"{name}_targets"] = split.targets
    arrays[f"{name}_items"] = result.top_items
    arrays[f"{name}_public_ids"] = ds.item_public_ids[result.top_items]
    arrays[f"{name}_scores"] = result.top_scores
    arrays[f"{name}_full_ranks"] = result.full_ranks
  return arrays


def save(directory: str | os.PathLike, metrics: dict[str, Any], topk: dict[str, np.ndarray],
         embeddings: dict[str, np.ndarray]) -> pathlib.Path:
  """Writes metrics.json, topk.npz and embeddings.npz into `directory` (created if needed).

  Returns:
    The directory.
  """
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  (directory / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=False) + "\n")
  np.savez(directory / TOPK_FILE, **topk)
  np.savez(directory / EMBEDDINGS_FILE, **embeddings)
  return directory


def load(directory: str | os.PathLike) -> dict[str, Any]:
  """Reads a directory written by `save`.

  Returns:
    {"metrics": dict, "topk": dict[str, np.ndarray], "embeddings": dict[str, np.ndarray]}.

  Raises:
    FileNotFoundError: naming the missing file.
  """
  directory = pathlib.Path(directory)
  for name in (METRICS_FILE, TOPK_FILE, EMBEDDINGS_FILE):
    if not (directory / name).is_file():
      raise FileNotFoundError(f"{directory / name} not found: expected the output of "
                              "`python -m rec_t5x.baselines.run`")
  with np.load(directory / TOPK_FILE, allow_pickle=False) as f:
    topk = {k: f[k] for k in f.files}
  with np.load(directory / EMBEDDINGS_FILE, allow_pickle=False) as f:
    embeddings = {k: f[k] for k in f.files}
  return {"metrics": json.loads((directory / METRICS_FILE).read_text()), "topk": topk,
          "embeddings": embeddings}
