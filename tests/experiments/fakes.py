"""Fake run.json records, finished-run folders and baseline outputs for the experiment tests."""
from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np

from rec_t5x.baselines import outputs
from rec_t5x.experiments import grid as grid_lib
from rec_t5x.experiments import runner


def spec(mixture: str = "rec_only", seed: int = 0, **overrides: Any) -> grid_lib.RunSpec:
  """A tiny ML-100K spec (4 steps x batch 2, 4 test users) with `overrides` applied."""
  fields = dict(dataset="ml100k", model="tiny", mixture=mixture, seed=seed, train_steps=4,
                batch_size=2, decode_max_examples=4)
  fields.update(overrides)
  return grid_lib.RunSpec(**fields)


def metrics(recall10: float, *, dataset: str = "ml100k", users: int = 4) -> dict[str, Any]:
  """eval_metrics.json "tasks" with test Recall@10 = recall10 and fixed other metrics."""
  return {
      f"rec_t5x.{dataset}.retrieval": {"recall@5": recall10 / 2, "recall@10": recall10,
                                       "ndcg@10": recall10 / 3, "num_examples": users,
                                       "loss": 3.0},
      f"rec_t5x.{dataset}.ranking": {"likelihood/hr@1": 0.05, "likelihood/hr@5": 0.25,
                                     "num_examples": users},
      f"rec_t5x.{dataset}.rating": {"rmse": 1.5, "expected/rmse": 1.1, "num_examples": users},
  }


def record(run_spec: grid_lib.RunSpec, recall10: float,
           losses: tuple[float, ...] = (4.0, 3.0)) -> dict[str, Any]:
  """A complete run.json record of `run_spec`."""
  steps = list(range(2, 2 * len(losses) + 1, 2))
  return {"spec": run_spec.to_dict(), "key": run_spec.key(), "status": "complete",
          "metrics": metrics(recall10, dataset=run_spec.dataset), "eval_step": run_spec.train_steps,
          "train_seconds": 65.0, "eval_seconds": 7.0,
          "train_curve": {"step": steps, "loss": list(losses)},
          "commands": {"train": "python -m rec_t5x.train ...",
                       "eval": "python -m rec_t5x.eval ..."},
          "num_embeddings": 2432, "date": "2026-11-26T10:00:00+00:00",
          "machine": {"nproc": 2, "cpu": "Test CPU", "platform": "Linux-test",
                      "load_average": [1.0, 1.0, 1.0]}}


def write_run(runs_dir: pathlib.Path, run_spec: grid_lib.RunSpec, recall10: float,
              **kwargs: Any) -> pathlib.Path:
  """Writes a finished run's run.json under `runs_dir`; returns the run directory."""
  run_dir = run_spec.run_dir(runs_dir)
  runner.write_json(run_dir / runner.record_file(run_spec.eval_split),
                    record(run_spec, recall10, **kwargs))
  return run_dir


def write_baseline(root: pathlib.Path, dataset: str, model: str, recall10: float) -> pathlib.Path:
  """A minimal rec_t5x.baselines output folder (metrics.json, topk.npz, embeddings.npz)."""
  test = {"recall@5": recall10 / 2, "recall@10": recall10, "ndcg@10": recall10 / 2}
  validation = {key: value + 0.01 for key, value in test.items()}
  report = {"dataset": dataset, "model": model, "test": test, "validation": validation,
            "fit": {"stop_reason": "patience", "best_epoch": 3, "epochs": 8, "train_seconds": 1.0},
            "date": "2026-11-25T12:00:00+00:00"}
  # Top-2 lists of users 0-2 over a 4-item catalogue (public IDs 10-13); Pop ranks by item_counts.
  lists = np.array([[10, 11], [10, 12], [11, 13]])
  # 1-based full-catalogue ranks of the held-out item: users 0 and 2 hit at K = 10, user 1 does not.
  ranks = np.array([1, 12, 3])
  topk = {"users": np.arange(3), "test_public_ids": lists, "validation_public_ids": lists,
          "test_full_ranks": ranks, "validation_full_ranks": ranks}
  return outputs.save(root / dataset / model, report, topk,
                      {"item_public_ids": np.arange(10, 14), "item_counts": np.array([9, 5, 2, 1])})


def read(path: pathlib.Path) -> Any:
  return json.loads(path.read_text())
