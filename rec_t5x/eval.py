"""`python -m rec_t5x.eval`: teacher-forced loss and token accuracy of a checkpoint.

  python -m rec_t5x.eval --gin_file=gin/runs/eval.gin \
    --gin.MIXTURE_OR_TASK_NAME="'rec_t5x.ml100k.rec_all'" --gin.CHECKPOINT_PATH="'/tmp/run'" ...

Each task of the mixture (or the task itself) is evaluated on its split; results go to
`EVAL_OUTPUT_DIR/eval_metrics.json` and to TensorBoard runs `EVAL_OUTPUT_DIR/eval/<task>`.
`evaluate_batches` and `eval_dataset_configs` are also the training loop's periodic evaluation.
With `decode_config` (an `rec_t5x.evaluation.EvalConfig`, set in gin/runs/eval.gin) the
retrieval / ranking / rating tasks are also decoded through `seqio.Evaluator`
(`rec_t5x.evaluation`): whole-catalogue constrained retrieval, likelihood and generated ranking,
decoded and expected ratings. Their metrics join each task's entry of eval_metrics.json and the
TensorBoard runs; per-example predictions go to `EVAL_OUTPUT_DIR/predictions/<task>.jsonl`.
"""
import dataclasses
import json
import os
import pathlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import gin
import jax
import seqio

from rec_t5x import evaluation
from rec_t5x import gin_utils
from rec_t5x import input_pipeline
from rec_t5x import models
from rec_t5x import optimizers
from rec_t5x import partitioning
from rec_t5x import summaries
from rec_t5x import trainer as trainer_lib

EvalStep = Callable[[Any, Mapping[str, jax.Array]], Mapping[str, jax.Array]]


def evaluate_batches(eval_step: EvalStep, params: Any,
                     batches: Iterable[Mapping[str, jax.Array]]) -> dict[str, float]:
  """Token-weighted teacher-forced metrics over batches (zero-weight padding rows count nothing).

  Args:
    eval_step: `(params, batch) -> metrics` with per-batch normalised `loss` / `cross_entropy`
      and the counts `num_target_tokens`, `num_correct_tokens` (`Trainer.eval_step`).
    params: parameters.
    batches: global batches.

  Returns:
    loss and cross_entropy per target token, accuracy, num_target_tokens, num_batches.
  """
  totals = {"loss": 0.0, "cross_entropy": 0.0, "num_correct_tokens": 0.0, "num_target_tokens": 0.0}
  num_batches = 0
  for batch in batches:
    m = jax.device_get(eval_step(params, batch))
    tokens = float(m["num_target_tokens"])
    totals["loss"] += float(m["loss"]) * tokens
    totals["cross_entropy"] += float(m["cross_entropy"]) * tokens
    totals["num_correct_tokens"] += float(m["num_correct_tokens"])
    totals["num_target_tokens"] += tokens
    num_batches += 1
  tokens = max(totals["num_target_tokens"], 1e-9)
  return {"loss": totals["loss"] / tokens, "cross_entropy": totals["cross_entropy"] / tokens,
          "accuracy": totals["num_correct_tokens"] / tokens,
          "num_target_tokens": totals["num_target_tokens"], "num_batches": float(num_batches)}


def eval_dataset_configs(config: input_pipeline.DatasetConfig,
                         log: Callable[[str], None] = print) -> list[input_pipeline.DatasetConfig]:
  """One unshuffled, unpacked config per task of `config`'s mixture that has `config.split`.

  Tasks without the split (e.g. train-only auxiliary tasks) are skipped and reported by `log`.

  Raises:
    ValueError: when no task has the split.
  """
  input_pipeline.import_module(config.module)
  provider = input_pipeline.get_provider(config.mixture_or_task_name)
  tasks = seqio.get_subtasks(provider)
  kept = [t for t in tasks if config.split in t.splits]
  skipped = sorted(t.name for t in tasks if config.split not in t.splits)
  if skipped:
    log(f"evaluation skips {len(skipped)} of {len(tasks)} tasks without a {config.split!r} split: "
        f"{skipped}")
  if not kept:
    raise ValueError(f"no task of {config.mixture_or_task_name!r} has a {config.split!r} split")
  return [dataclasses.replace(config, mixture_or_task_name=t.name, shuffle=False, pack=False)
          for t in kept]


@dataclasses.dataclass(frozen=True)
class EvalDataset:
  """One task's evaluation batches, built once and re-read from the start at every evaluation.

  Attributes:
    name: task name.
    dataset: this process's padded batches (`input_pipeline.batched_dataset`, one pass).
    batch_size: global batch size.
  """
  name: str
  dataset: Any
  batch_size: int


def build_eval_datasets(configs: Iterable[input_pipeline.DatasetConfig],
                        partitioner: partitioning.Partitioner,
                        max_batches: int | None = None) -> list[EvalDataset]:
  """Builds each config's one-pass pipeline (at most `max_batches` batches) once."""
  out = []
  for config in configs:
    layout = partitioner.data_layout(config.batch_size)
    ds = input_pipeline.batched_dataset(config, layout, num_epochs=1,
                                        cache_in_memory=max_batches is None)
    if max_batches is not None:
      ds = ds.take(max_batches)
    out.append(EvalDataset(config.mixture_or_task_name, ds, config.batch_size))
  return out


def teacher_forced_metrics(trainer: trainer_lib.Trainer, params: Any,
                           datasets: Iterable[EvalDataset]) -> dict[str, dict[str, float]]:
  """`evaluate_batches` on one pass over each dataset.

  Returns:
    task name -> metrics.
  """
  results = {}
  for data in datasets:
    batches = input_pipeline.BatchIterator(data.dataset, trainer.partitioner, data.batch_size)
    results[data.name] = evaluate_batches(trainer.eval_step, params, batches)
  return results


def _checkpoint_step(path: pathlib.Path) -> int:
  """Step of one of our checkpoint paths (run dir -> latest step dir), else 0."""
  if path.name.isdigit():
    return int(path.name)
  steps = [int(p.name) for p in path.iterdir() if p.name.isdigit()] if path.is_dir() else []
  return max(steps, default=0)


def _input_shapes(config: input_pipeline.DatasetConfig) -> dict[str, tuple[int, int]]:
  lengths = config.task_feature_lengths
  return {"encoder_input_tokens": (config.batch_size, lengths["inputs"]),
          "decoder_input_tokens": (config.batch_size, lengths["targets"])}


def load_params(model: models.EncoderDecoderModel, partitioner: partitioning.Partitioner,
                config: input_pipeline.DatasetConfig, checkpoint_path: str,
                ) -> tuple[trainer_lib.Trainer, Any]:
  """A Trainer for `config`'s batch shapes and the checkpoint's parameters on its shardings.

  The optimizer is only needed to build the Trainer's state layout; a default Adafactor is used.
  """
  trainer = trainer_lib.Trainer(model, optimizers.adafactor(), partitioner, _input_shapes(config))
  from rec_t5x import checkpoints  # pylint: disable=g-import-not-at-top  (orbax import)
  params = checkpoints.restore_initial(checkpoint_path, trainer.abstract_state.params)
  return trainer, params


def evaluate(*, model: models.EncoderDecoderModel, dataset_cfg: input_pipeline.DatasetConfig,
             partitioner: partitioning.Partitioner, checkpoint_path: str, output_dir: str,
             eval_steps: int | None = None,
             decode_config: evaluation.EvalConfig | None = None) -> dict[str, dict[str, float]]:
  """Evaluates one checkpoint (gin-configured in `__main__`).

  Args:
    model: the model (architecture must match the checkpoint).
    dataset_cfg: task or mixture, split, batch size, feature lengths.
    partitioner: mesh.
    checkpoint_path: one of our run / step directories, or a T5X / Hugging Face checkpoint.
    output_dir: where eval_metrics.json and the TensorBoard runs go.
    eval_steps: at most this many batches per task (None: the whole split) of teacher forcing.
    decode_config: decoding evaluation settings (None: teacher forcing only).

  Returns:
    task name -> metrics.
  """
  if eval_steps is not None and eval_steps < 1:
    raise ValueError(f"evaluate.eval_steps={eval_steps}: expected >= 1 or None")
  trainer, params = load_params(model, partitioner, dataset_cfg, checkpoint_path)
  datasets = build_eval_datasets(eval_dataset_configs(dataset_cfg), partitioner, eval_steps)
  results = teacher_forced_metrics(trainer, params, datasets)
  step = _checkpoint_step(pathlib.Path(checkpoint_path))
  if decode_config is not None:
    decoder = evaluation.DecodingEvaluator(
        dataset_cfg.mixture_or_task_name, dataset_cfg.split, dict(dataset_cfg.task_feature_lengths),
        model.module, partitioner, trainer.state_shardings.params, decode_config, params)
    decoded = decoder(params, step)
    for name, metrics in decoded.items():
      results.setdefault(name, {}).update(metrics)
    if jax.process_index() == 0 and decoded:
      decoder.write(output_dir, step, decoded)
  out = pathlib.Path(output_dir)
  logger = summaries.RunLogger(out, total_steps=step)
  for name, metrics in results.items():
    logger.log_eval(step, f"eval/{name}", metrics)
  logger.close()
  if jax.process_index() == 0:
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval_metrics.json").write_text(json.dumps(
        {"checkpoint_path": os.fspath(checkpoint_path), "step": step, "split": dataset_cfg.split,
         "tasks": results}, indent=2, sort_keys=True))
  return results


def main(argv) -> None:
  del argv
  gin_utils.initialize_distributed()
  evaluate_using_gin = gin.configurable(evaluate)
  gin_utils.parse_gin_flags()
  evaluate_using_gin()


def console_main() -> None:
  """Entry point of the `rec_t5x_eval` console script (and of `python -m rec_t5x.eval`)."""
  gin_utils.run(main, {"evaluate": evaluate})


if __name__ == "__main__":
  console_main()
