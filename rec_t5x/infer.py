"""`python -m rec_t5x.infer`: cached greedy decoding of a task split, written as JSONL.

  python -m rec_t5x.infer --gin_file=gin/models/t5_1_1_small.gin --gin_file=gin/runs/infer.gin \
    --gin.CHECKPOINT_PATH="'/tmp/run'" --gin.INFER_OUTPUT_DIR="'/tmp/run/infer'" \
    --gin.MIXTURE_OR_TASK_NAME="'rec_t5x.ml100k.rec_only'" \
    --gin.TASK_FEATURE_LENGTHS="{'inputs': 256, 'targets': 32}"

One file per task, `INFER_OUTPUT_DIR/<task>.jsonl` (with several processes
`<task>-<process>-of-<count>.jsonl`, each with its own rows): one line per example with
"inputs", "targets" (the task's text) and "prediction" (the decoded output, cut at EOS).
"""
import json
import pathlib
from collections.abc import Iterator
from typing import Any

import gin
import jax
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec
import numpy as np
import seqio
import tensorflow as tf

from rec_t5x import decoding
from rec_t5x import eval as eval_lib
from rec_t5x import gin_utils
from rec_t5x import input_pipeline
from rec_t5x import models
from rec_t5x import partitioning
from rec_t5x import trainer as trainer_lib

TEXT_FEATURES = ("inputs_pretokenized", "targets_pretokenized")


def text_and_feature_batches(config: input_pipeline.DatasetConfig,
                             layout: partitioning.DataLayout) -> tf.data.Dataset:
  """This process's batches of (model features, texts), one pass, in order.

  The features come from `seqio.EncDecFeatureConverter(pack=False)`, which drops the text, so the
  text is read from a second pass over the same (unshuffled, deterministic) examples and zipped.
  The last batch's features are zero-padded to the full batch; its texts are not.

  Returns:
    Dataset of (`{feature: [batch_size_per_process, length]}`, `{text feature: [rows]}`).
  """
  examples = input_pipeline.task_dataset(config, layout, num_epochs=1, cache_in_memory=False)
  missing = [f for f in TEXT_FEATURES if f not in examples.element_spec]
  if missing:
    raise ValueError(f"task {config.mixture_or_task_name!r} keeps no {missing} (add seqio's "
                     "tokenize preprocessor, which copies the text)")
  features = seqio.EncDecFeatureConverter(pack=False)(examples,
                                                      dict(config.task_feature_lengths))
  texts = examples.map(lambda ex: {k: ex[k] for k in TEXT_FEATURES})
  size = layout.batch_size_per_process
  ds = tf.data.Dataset.zip((features, texts)).batch(size)
  ds = ds.map(lambda f, t: (input_pipeline.pad_batch(f, size), t))
  return input_pipeline.with_checkpointable_options(ds.prefetch(tf.data.AUTOTUNE))


def _decode_text(vocab: seqio.Vocabulary, ids: np.ndarray) -> str:
  """Decodes ids up to (not including) the first EOS or padding id."""
  ids = [int(i) for i in ids]
  for stop in (vocab.eos_id, 0):
    if stop in ids:
      ids = ids[:ids.index(stop)]
  return vocab.decode(ids)


def make_decode_fn(model: models.EncoderDecoderModel, trainer: trainer_lib.Trainer,
                   max_decode_length: int, eos_id: int):
  """Compiled greedy decoding: (params, encoder_input_tokens [batch, len]) -> [batch, max_len]."""
  def decode(params, encoder_input_tokens):
    sequences, _ = decoding.generate(model.module, params, encoder_input_tokens,
                                     max_decode_length, eos_id=eos_id)
    return sequences[:, 0, :]

  p = trainer.partitioner
  return p.partition(decode, in_shardings=(trainer.state_shardings.params, p.batch_sharding),
                     out_shardings=p.batch_sharding)


def predict_task(decode_fn, params: Any, config: input_pipeline.DatasetConfig,
                 partitioner: partitioning.Partitioner,
                 max_examples: int | None = None) -> Iterator[dict[str, str]]:
  """Yields {"inputs", "targets", "prediction"} for this process's examples of one task."""
  layout = partitioner.data_layout(config.batch_size)
  vocab = input_pipeline.get_provider(config.mixture_or_task_name).output_features[
      "targets"].vocabulary
  count = 0
  for features, texts in text_and_feature_batches(config, layout).as_numpy_iterator():
    tokens = partitioner.shard_batch({"encoder_input_tokens": features["encoder_input_tokens"]},
                                     config.batch_size)["encoder_input_tokens"]
    predicted = decode_fn(params, tokens)
    local = np.asarray(multihost_utils.global_array_to_host_local_array(
        predicted, partitioner.mesh, PartitionSpec(partitioning.DATA_AXIS)))
    for row in range(len(texts["inputs_pretokenized"])):
      if max_examples is not None and count >= max_examples:
        return
      count += 1
      yield {"inputs": texts["inputs_pretokenized"][row].decode(),
             "targets": texts["targets_pretokenized"][row].decode(),
             "prediction": _decode_text(vocab, local[row])}


def _output_path(output_dir: pathlib.Path, task: str) -> pathlib.Path:
  if jax.process_count() == 1:
    return output_dir / f"{task}.jsonl"
  return output_dir / f"{task}-{jax.process_index()}-of-{jax.process_count()}.jsonl"


def infer(*, model: models.EncoderDecoderModel, dataset_cfg: input_pipeline.DatasetConfig,
          partitioner: partitioning.Partitioner, checkpoint_path: str, output_dir: str,
          max_decode_length: int | None = None, max_examples: int | None = None,
          log=print) -> dict[str, pathlib.Path]:
  """Greedy-decodes each task of `dataset_cfg` and writes JSONL (gin-configured in `__main__`).

  Args:
    model: the model (architecture must match the checkpoint).
    dataset_cfg: task or mixture, split, batch size, feature lengths.
    partitioner: mesh.
    checkpoint_path: one of our run / step directories, or a T5X / Hugging Face checkpoint.
    output_dir: where the JSONL files go.
    max_decode_length: tokens to generate (default: the targets feature length).
    max_examples: at most this many examples per task and process (None: all).
    log: where messages go.

  Returns:
    task name -> the JSONL file written.
  """
  if max_examples is not None and max_examples < 1:
    raise ValueError(f"infer.max_examples={max_examples}: expected >= 1 or None")
  length = max_decode_length or dataset_cfg.task_feature_lengths["targets"]
  trainer, params = eval_lib.load_params(model, partitioner, dataset_cfg, checkpoint_path)
  out_dir = pathlib.Path(output_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  written, decode_fns = {}, {}
  for config in eval_lib.eval_dataset_configs(dataset_cfg, log):
    vocab = input_pipeline.get_provider(config.mixture_or_task_name).output_features[
        "targets"].vocabulary
    if vocab.eos_id not in decode_fns:
      decode_fns[vocab.eos_id] = make_decode_fn(model, trainer, length, vocab.eos_id)
    decode_fn = decode_fns[vocab.eos_id]
    path = _output_path(out_dir, config.mixture_or_task_name)
    with path.open("w") as f:
      n = 0
      for record in predict_task(decode_fn, params, config, partitioner, max_examples):
        f.write(json.dumps(record) + "\n")
        n += 1
    log(f"wrote {n} predictions to {path}")
    written[config.mixture_or_task_name] = path
  return written


def main(argv) -> None:
  del argv
  gin_utils.initialize_distributed()
  infer_using_gin = gin.configurable(infer)
  gin_utils.parse_gin_flags()
  infer_using_gin()


def console_main() -> None:
  """Entry point of the `rec_t5x_infer` console script (and of `python -m rec_t5x.infer`)."""
  gin_utils.run(main, {"infer": infer})


if __name__ == "__main__":
  console_main()
