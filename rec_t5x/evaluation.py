"""Decoding evaluation of the recommendation tasks through `seqio.Evaluator`.

    fns_by_task = build_task_fns(task_names, split, module, params, partitioner, shardings, config)
    results = evaluate_tasks(fns_by_task, feature_lengths, output_dir=..., step=...)

One `seqio.Evaluator` per task (a task's model callables depend on its kind, and the Evaluator
does not tell a callable which task it is reading), each given only the callables of
`rec_t5x.evaluation_fns.TaskFns` (predict_fn / predict_with_aux_fn / score_fn). The sample `key`
rides along the model features (`KeyedEncDecFeatureConverter`) so the
callables can find the user (history exclusion, ranking candidates, sampled negatives).

Metric keys (metric fns attached in `seqio_tasks.eval_fns`):
  retrieval  recall@K, ndcg@K, hr@K (K in 5, 10, 20, up to `top_k`), mrr, invalid_rate (share of
             the K slots no item could fill), duplicate_rate (constrained beam search over the
             whole catalogue); sampled/hr@K, sampled/ndcg@K, sampled/mrr (P5: 1 positive +
             99 never-interacted negatives).
  ranking    likelihood/hr@K, likelihood/ndcg@K, likelihood/mrr (candidates by log-likelihood);
             hr@K, ndcg@K, mrr, invalid_rate (the greedy generated choice).
  rating     rmse, mae, clipped_rate, invalid_rate (decoded and parsed; out-of-range clipped and
             counted); expected/rmse, expected/mae, expected/mean_mass.
  every task num_examples. `EvalConfig.max_examples` evaluates a seeded subset (the first examples
  of a shuffle with `SUBSET_SEED`, the same users every time).
`write_outputs` writes `<dir>/decode_metrics.json`, TensorBoard runs `<dir>/decode/<task>` and
per-example `<dir>/predictions/<task>.jsonl` (inputs, targets, predictions, scores).
"""
import json
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import seqio
import tensorflow as tf

from rec_t5x import evaluation_fns
from rec_t5x import summaries

EvalConfig = evaluation_fns.EvalConfig
TaskFns = evaluation_fns.TaskFns
TaskSpec = evaluation_fns.TaskSpec
SUBSET_SEED = 0


class KeyedEncDecFeatureConverter(seqio.EncDecFeatureConverter):
  """`EncDecFeatureConverter(pack=False)` that also carries each example's sample `key`.

  seqio's `passthrough_features` needs a length for every passed feature, which
  `seqio.Evaluator` (measuring only the converter's TASK_FEATURES) cannot give; so the scalar key
  is zipped back onto the converted, order-preserving (unpacked) examples.
  """

  def __init__(self):
    super().__init__(pack=False)

  def __call__(self, ds, task_feature_lengths):
    if "key" not in ds.element_spec:
      raise ValueError("evaluation needs the sample 'key' feature of rec_t5x tasks; the task "
                       "dataset has only " + str(sorted(ds.element_spec)))
    keys = ds.map(_key_of)
    converted = super().__call__(ds, task_feature_lengths)
    return tf.data.Dataset.zip((converted, keys)).map(_with_key)


def _key_of(example):
  return example["key"]


def _with_key(features, key):
  return dict(features, key=key)


def decoding_tasks(mixture_or_task_name: str, split: str) -> list[str]:
  """Names of the retrieval / ranking / rating tasks of a task or mixture that have `split`."""
  from seqio_tasks import registry  # pylint: disable=g-import-not-at-top  (registers the tasks)
  provider = registry.get(mixture_or_task_name)
  names = []
  for task in seqio.get_subtasks(provider):
    try:
      entry = registry.task_entry(task.name)
    except ValueError:
      continue
    if entry.prompt_task in evaluation_fns.KINDS and split in task.splits:
      names.append(task.name)
  return names


def task_spec(task_name: str, split: str) -> TaskSpec:
  """The `TaskSpec` of a registered rec_t5x task (loads its dataset)."""
  from seqio_tasks import registry  # pylint: disable=g-import-not-at-top
  entry = registry.task_entry(task_name)
  task = seqio.get_mixture_or_task(task_name)
  return TaskSpec(name=task_name, kind=entry.prompt_task, split=split,
                  dataset=registry.load_dataset(entry.dataset), sample_config=entry.config,
                  vocabulary=task.output_features["targets"].vocabulary)


def check_compatible(spec: TaskSpec, module: Any, params: Any) -> None:
  """Checks the network and its parameters against the task's vocabulary before compiling.

  Raises:
    ValueError: naming the task, the vocabulary size and the network's `vocab_size` / embedding
      shape when the task's ids do not fit, or the parameters disagree with the network config.
  """
  vocab_size = spec.vocabulary.vocab_size
  net = getattr(module, "config", None)
  rows = getattr(net, "vocab_size", None)
  if rows is not None and vocab_size > rows:
    raise ValueError(f"task {spec.name!r}: its vocabulary has {vocab_size} ids but the network "
                     f"has vocab_size={rows}; the checkpoint was trained with another vocabulary "
                     "(set NUM_EMBEDDINGS / use the task's vocabulary)")
  embedding = params.get("token_embedder", {}).get("embedding") if hasattr(params, "get") else None
  if embedding is not None and net is not None:
    expected = (net.vocab_size, net.emb_dim)
    if tuple(embedding.shape) != expected:
      raise ValueError(f"task {spec.name!r}: checkpoint token_embedder/embedding has shape "
                       f"{tuple(embedding.shape)}, the network config expects {expected} "
                       "(vocab_size, emb_dim); the checkpoint belongs to another model size")


def build_task_fns(task_names: Sequence[str], split: str, module: Any, params: Any,
                   partitioner: Any, params_shardings: Any,
                   config: EvalConfig) -> dict[str, TaskFns]:
  """`TaskFns` per task after `check_compatible`; ValueError when no task is given."""
  if not task_names:
    raise ValueError(f"no retrieval / ranking / rating task with a {split!r} split to evaluate")
  out = {}
  for name in task_names:
    spec = task_spec(name, split)
    check_compatible(spec, module, params)
    out[name] = TaskFns(spec, module, params, partitioner, params_shardings, config)
  return out


def make_evaluator(task_name: str, split: str, feature_lengths: dict[str, int],
                   max_examples: int | None) -> seqio.Evaluator:
  """A `seqio.Evaluator` of one task; a bounded subset is a seeded shuffle's first examples."""
  converter = KeyedEncDecFeatureConverter()
  return seqio.Evaluator(task_name, converter, eval_split=split, use_cached=False,
                         seed=SUBSET_SEED, sequence_length=dict(feature_lengths),
                         num_examples=max_examples, shuffle=max_examples is not None,
                         async_compute_metrics=False)


def run_task(fns: TaskFns, feature_lengths: dict[str, int],
             evaluator: seqio.Evaluator | None = None, step: int | None = None
             ) -> tuple[dict[str, float], seqio.Evaluator]:
  """Evaluates one task with its callables; returns (metrics, the evaluator)."""
  spec = fns.spec
  if evaluator is None:
    evaluator = make_evaluator(spec.name, spec.split, feature_lengths, fns.config.max_examples)
  fns.details.clear()
  score_fn = fns.score_fn if fns.config.sampled_negatives > 0 else _no_sampled_scores
  future, _ = evaluator.evaluate(compute_metrics=True, step=step, predict_fn=fns.predict_fn,
                                 predict_with_aux_fn=fns.predict_with_aux_fn, score_fn=score_fn)
  metrics = {k: float(np.asarray(getattr(v, "value", v)))
             for k, v in future.result()[spec.name].items()}
  return _measured(metrics, spec.kind, fns.config), evaluator


def _no_sampled_scores(dataset, model_feature_shapes=None):
  """Placeholder scores when the sampled protocol is off (its metrics are then dropped)."""
  del model_feature_shapes
  return [(int(i), np.zeros(2, np.float32)) for i, _ in dataset.as_numpy_iterator()]


def _measured(metrics: dict[str, float], kind: str, config: EvalConfig) -> dict[str, float]:
  """Drops metrics that were not measured: sampled/* when off, retrieval cut-offs above top_k."""
  def kept(name):
    if name.startswith("sampled/"):
      return config.sampled_negatives > 0
    if kind == "retrieval" and name.startswith(("recall@", "hr@", "ndcg@")):
      return int(name.split("@")[1]) <= config.top_k
    return True
  return {k: v for k, v in metrics.items() if kept(k)}


def evaluate_tasks(fns_by_task: dict[str, TaskFns], feature_lengths: dict[str, int],
                   step: int | None = None, evaluators: dict[str, Any] | None = None
                   ) -> dict[str, dict[str, float]]:
  """`run_task` for every task (evaluators are reused from / stored into `evaluators`)."""
  evaluators = {} if evaluators is None else evaluators
  results = {}
  for name, fns in fns_by_task.items():
    results[name], evaluators[name] = run_task(fns, feature_lengths, evaluators.get(name), step)
  return results


class DecodingEvaluator:
  """Decoding metrics of every retrieval / ranking / rating task of a task or mixture, reusable
  across checkpoints (`__call__(params, step)`): the training loop's periodic evaluation and the
  eval binary. Compiles and caches each task's SeqIO examples once.

  Args:
    mixture_or_task_name / split / feature_lengths: what to evaluate.
    module, partitioner, params_shardings: the model and how its parameters are laid out.
    config: `EvalConfig` (set `max_examples` to keep periodic evaluation cheap).
    params: parameters used for the compatibility check (and until the first call).
  """

  def __init__(self, mixture_or_task_name: str, split: str, feature_lengths: dict[str, int],
               module: Any, partitioner: Any, params_shardings: Any, config: EvalConfig,
               params: Any):
    self.task_names = decoding_tasks(mixture_or_task_name, split)
    self.feature_lengths = dict(feature_lengths)
    self.fns = (build_task_fns(self.task_names, split, module, params, partitioner,
                               params_shardings, config) if self.task_names else {})
    self.evaluators: dict[str, Any] = {}

  def __call__(self, params: Any, step: int | None = None) -> dict[str, dict[str, float]]:
    for fns in self.fns.values():
      fns.params = params
    return evaluate_tasks(self.fns, self.feature_lengths, step, self.evaluators)

  def write(self, output_dir: str, step: int, results: dict[str, dict[str, float]]) -> None:
    write_outputs(output_dir, step, results, self.fns, self.evaluators)


def prediction_records(fns: TaskFns, evaluator: seqio.Evaluator) -> list[dict[str, Any]]:
  """Per-example {index, key, inputs, targets, ...predictions and scores} in dataset order."""
  records = []
  examples = evaluator.cached_task_datasets[fns.spec.name].as_numpy_iterator()
  for index, example in enumerate(examples):
    record = {"index": index, "inputs": example["inputs_pretokenized"].decode(),
              "targets": example["targets_pretokenized"].decode()}
    record.update(fns.details.get(index, {}))
    records.append(record)
  return records


def write_outputs(output_dir: str, step: int, results: dict[str, dict[str, float]],
                  fns_by_task: dict[str, TaskFns], evaluators: dict[str, Any]) -> None:
  """decode_metrics.json, TensorBoard runs decode/<task>, predictions/<task>.jsonl."""
  out = pathlib.Path(output_dir)
  (out / "predictions").mkdir(parents=True, exist_ok=True)
  logger = summaries.RunLogger(out, total_steps=max(step, 1))
  for name, metrics in results.items():
    logger.log_eval(step, f"decode/{name}", metrics)
  logger.close()
  (out / "decode_metrics.json").write_text(json.dumps({"step": step, "tasks": results}, indent=2,
                                                      sort_keys=True))
  for name, fns in fns_by_task.items():
    with open(out / "predictions" / f"{name}.jsonl", "w") as f:
      for record in prediction_records(fns, evaluators[name]):
        f.write(json.dumps(record) + "\n")


TABLE_ROWS = (("retrieval", "recall@5", "Recall@5"), ("retrieval", "recall@10", "Recall@10"),
              ("retrieval", "ndcg@5", "NDCG@5"), ("retrieval", "ndcg@10", "NDCG@10"),
              ("ranking", "likelihood/hr@1", "ranking HR@1"),
              ("ranking", "likelihood/hr@5", "ranking HR@5"),
              ("rating", "rmse", "RMSE (decoded)"), ("rating", "expected/rmse", "RMSE (expected)"))


def metrics_table(results: dict[str, dict[str, float]]) -> str:
  """The main job's summary table (one line per metric, with each task's example count)."""
  lines = [f"{'metric':<18} {'value':>8}  task (examples)"]
  for kind, key, label in TABLE_ROWS:
    for name, metrics in sorted(results.items()):
      if name.rsplit(".", 1)[-1] == kind and key in metrics:
        lines.append(f"{label:<18} {metrics[key]:>8.4f}  {name} "
                     f"({int(metrics.get('num_examples', 0))})")
  return "\n".join(lines)
