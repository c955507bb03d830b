r"""Trains, evaluates and saves the classical baselines: one command per dataset.

  python -m rec_t5x.baselines.run --dataset ml100k --model sasrec \
      [--gin_file baselines/ml1m.gin] [--gin.common.TrainConfig.patience=10] \
      [--max_train_seconds 900] [--output_dir DIR]
  python -m rec_t5x.baselines.run --dataset ml100k --model all

For each model the gin file `gin/baselines/<model>.gin` is parsed first, then every `--gin_file`
and `--gin_bindings` (later ones win); with `--model all` the extra files and bindings are applied
to each model in turn, so they must only bind what every model file imports (`common.TrainConfig`).
The configs are the frozen dataclasses `common.TrainConfig` and `<model>.<Model>Config`, bound
through gin's dynamic registration. Outputs go to `<output_dir>/<dataset>/<model>/`
(`rec_t5x.baselines.outputs`), plus the operative `config.gin`; `--model all` also writes
`<output_dir>/<dataset>/summary.json`. The default output_dir is `<data_dir>/baselines`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses
import datetime
import json
import os
import pathlib
import platform
import time
from typing import Any

from absl import flags
import gin
import jax

from rec_t5x import gin_utils
from rec_t5x.baselines import bpr_mf
from rec_t5x.baselines import common
from rec_t5x.baselines import evaluation
from rec_t5x.baselines import lightgcn
from rec_t5x.baselines import outputs
from rec_t5x.baselines import pop
from rec_t5x.baselines import sasrec
from rec_t5x.data import catalog
from rec_t5x.data import dataset as dataset_lib

TrainFn = Callable[[dataset_lib.RecDataset, Any, common.TrainConfig, common.Log],
                   common.TrainedModel]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """How to configure and train one baseline."""
  config_class: type
  train: TrainFn
  gin_file: str


MODELS: dict[str, ModelSpec] = {
    "pop": ModelSpec(pop.PopConfig, pop.train, "baselines/pop.gin"),
    "bpr_mf": ModelSpec(bpr_mf.BPRConfig, bpr_mf.train, "baselines/bpr_mf.gin"),
    "sasrec": ModelSpec(sasrec.SASRecConfig, sasrec.train, "baselines/sasrec.gin"),
    "lightgcn": ModelSpec(lightgcn.LightGCNConfig, lightgcn.train, "baselines/lightgcn.gin"),
}

PROTOCOL = {
    "split": "leave-one-out: validation predicts the second-last item from train_sequence(u); "
             "test predicts the last item from train_sequence(u) + validation item",
    "ranking": "full ranking over all items (no sampled negatives)",
    "masking": "items in the user's input prefix are masked for every model",
    "ties": "equal scores are ordered by item index (lower first)",
    "early_stopping": f"validation {common.EARLY_STOPPING_METRIC}, best epoch restored",
    "metrics": "rec_t5x.metrics (recall_at_k, ndcg_at_k, mrr)",
}

flags.DEFINE_string("dataset", None, "Catalog dataset name (rec_t5x.data.catalog), e.g. ml100k.")
flags.DEFINE_enum("model", None, [*MODELS, "all"], "Baseline to run, or 'all'.")
flags.DEFINE_string("output_dir", None, "Root of the outputs (default <data_dir>/baselines).")
flags.DEFINE_string("data_dir", None,
                    "Data directory (default $REC_T5X_DATA_DIR or ~/.cache/rec_t5x).")
flags.DEFINE_float("max_train_seconds", None,
                   "Wall-clock cap on training; overrides common.TrainConfig.max_train_seconds.")
FLAGS = flags.FLAGS


def configurable(cls: type) -> Any:
  """An instance of `cls` with the parsed gin bindings applied (defaults when none name it)."""
  try:
    return gin.get_configurable(cls)()
  except ValueError:  # Not registered: no parsed file imports or binds it.
    return cls()


def parse_model_config(model: str, gin_files: Sequence[str] = (),
                       gin_bindings: Sequence[str] = (),
                       search_paths: Sequence[str] | None = None) -> tuple[Any, common.TrainConfig]:
  """Parses `gin/baselines/<model>.gin`, then the extra files and bindings, into configs.

  Args:
    model: a key of MODELS.
    gin_files: extra gin files, parsed after the model's own.
    gin_bindings: extra bindings, applied last.
    search_paths: gin search paths (default `gin_utils.default_search_paths()`).

  Returns:
    (model_config, train_config).

  Raises:
    gin_utils.ConfigError: for an unknown model or a gin mistake.
  """
  if model not in MODELS:
    raise gin_utils.ConfigError(f"--model={model!r}: expected one of {[*MODELS, 'all']}")
  spec = MODELS[model]
  gin.clear_config()
  gin_utils.parse_gin([spec.gin_file, *gin_files], gin_bindings, search_paths)
  gin_utils.check_required()
  return configurable(spec.config_class), configurable(common.TrainConfig)


def _machine() -> dict[str, Any]:
  return {"platform": platform.platform(), "processor": platform.processor(),
          "cpu_count": os.cpu_count(), "jax_backend": jax.default_backend(),
          "jax_devices": [str(d) for d in jax.local_devices()], "jax_version": jax.__version__}


def train_and_evaluate(ds: dataset_lib.RecDataset, model: str, model_config: Any,
                       train_config: common.TrainConfig, output_dir: str | os.PathLike | None,
                       log: common.Log = print) -> dict[str, Any]:
  """Trains one baseline, evaluates validation and test, and saves the outputs.

  Args:
    ds: the dataset.
    model: a key of MODELS.
    model_config: that model's config dataclass.
    train_config: shared training settings.
    output_dir: directory for metrics.json, topk.npz and embeddings.npz (None = do not save).
    log: progress lines.

  Returns:
    The metrics.json content: validation and test metrics, the fit record, configs, timings.
  """
  start = time.perf_counter()
  trained = MODELS[model].train(ds, model_config, train_config, log)
  eval_start = time.perf_counter()
  splits = {name: evaluation.make_split(ds, name) for name in evaluation.SPLITS}
  results = {name: evaluation.evaluate(trained.make_scorer(split), split, ds.num_items,
                                       train_config.eval_batch_size, train_config.top_n)
             for name, split in splits.items()}
  fit = trained.fit
  report = {
      "dataset": ds.name, "model": model,
      "num_users": ds.num_users, "num_items": ds.num_items,
      "num_interactions": ds.num_interactions,
      "model_config": dataclasses.asdict(model_config),
      "train_config": dataclasses.asdict(train_config),
      "fit": {"best_epoch": fit.best_epoch, "epochs": fit.epochs, "stop_reason": fit.stop_reason,
              "train_seconds": fit.train_seconds,
              f"best_validation_{common.EARLY_STOPPING_METRIC}": fit.best_metric,
              "history": fit.history},
      "validation": results["validation"].metrics,
      "test": results["test"].metrics,
      "eval_seconds": time.perf_counter() - eval_start,
      "wall_seconds": time.perf_counter() - start,
      "protocol": PROTOCOL,
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "machine": _machine(),
  }
  if output_dir is not None:
    outputs.save(output_dir, report, outputs.topk_arrays(ds, splits, results), {
        **trained.embeddings, "item_public_ids": ds.item_public_ids})
  test = results["test"].metrics
  log(f"{model} on {ds.name}: test recall@10 {test['recall@10']:.4f} ndcg@10 "
      f"{test['ndcg@10']:.4f} mrr@10 {test['mrr@10']:.4f} ({fit.stop_reason}, best epoch "
      f"{fit.best_epoch}/{fit.epochs}, {report['wall_seconds']:.0f}s)")
  return report


SUMMARY_COLUMNS = ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr@10",
                   "mrr")


def summary_table(reports: Sequence[dict[str, Any]]) -> str:
  """A Markdown table of the test metrics of several reports."""
  head = "| model | " + " | ".join(SUMMARY_COLUMNS) + " | stop | epochs | seconds |"
  rows = [head, "|" + "---|" * (len(SUMMARY_COLUMNS) + 4)]
  for r in reports:
    values = " | ".join(f"{r['test'][c]:.4f}" for c in SUMMARY_COLUMNS)
    rows.append(f"| {r['model']} | {values} | {r['fit']['stop_reason']} | "
                f"{r['fit']['best_epoch']}/{r['fit']['epochs']} | {r['wall_seconds']:.0f} |")
  return "\n".join(rows)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise gin_utils.ConfigError(f"unexpected arguments {list(argv[1:])}")
  if FLAGS.dataset is None or FLAGS.model is None:
    raise gin_utils.ConfigError("--dataset and --model are required, e.g. --dataset ml100k "
                                "--model sasrec")
  if FLAGS.max_train_seconds is not None and FLAGS.max_train_seconds <= 0:
    raise gin_utils.ConfigError(f"--max_train_seconds={FLAGS.max_train_seconds}: expected > 0")
  ds = catalog.load(FLAGS.dataset, FLAGS.data_dir)
  data_root = pathlib.Path(FLAGS.data_dir) if FLAGS.data_dir else catalog.data_dir()
  root = pathlib.Path(FLAGS.output_dir or data_root / "baselines").expanduser()
  names = list(MODELS) if FLAGS.model == "all" else [FLAGS.model]
  reports = []
  for name in names:
    model_config, train_config = parse_model_config(name, FLAGS.gin_file, FLAGS.gin_bindings,
                                                    FLAGS.gin_search_paths)
    if FLAGS.max_train_seconds is not None:
      train_config = dataclasses.replace(train_config, max_train_seconds=FLAGS.max_train_seconds)
    out = root / ds.name / name
    print(f"== {name} on {ds.name}: {model_config} {train_config} -> {out}", flush=True)
    reports.append(train_and_evaluate(ds, name, model_config, train_config, out,
                                      lambda line: print(line, flush=True)))
    gin_utils.write_config(out)
  table = summary_table(reports)
  print(table)
  if len(reports) > 1:
    (root / ds.name / "summary.json").write_text(json.dumps(
        {r["model"]: {"test": r["test"], "validation": r["validation"], "fit": {
            k: v for k, v in r["fit"].items() if k != "history"}} for r in reports}, indent=2))


if __name__ == "__main__":
  gin_utils.run(main)
