"""Tiny model, synthetic batches and tiny SeqIO task shared by the multi-process workers and tests.

Batches come from `SyntheticBatches`, a pure function of (step, global row): each process builds
only the rows of its data shard, never the global batch, and a one-process run with the same global
batch size builds exactly the rows the processes build together. The SeqIO task (`register_task`)
renders one example per integer key and logs every key it renders, so a test can check that a
process only ever rendered keys of its own shard.
"""
import dataclasses

import numpy as np

from rec_t5x import models
from rec_t5x import network
from rec_t5x import optimizers
from rec_t5x import partitioning

# Heads, MLP and vocabulary divide by 4: the run's (2, 2) mesh and the restore's (2, 4) mesh.
CONFIG = network.T5Config(vocab_size=64, emb_dim=16, num_heads=4, head_dim=4, mlp_dim=32,
                          num_encoder_layers=1, num_decoder_layers=1)
BATCH, ENC_LEN, DEC_LEN = 8, 8, 5
SHAPES = {"encoder_input_tokens": (BATCH, ENC_LEN), "decoder_input_tokens": (BATCH, DEC_LEN)}
FAST = {"xla_backend_optimization_level": 0}
MESH = (2, 2)            # (data, model) of the two-process run: 2 processes x 2 devices.
RESTORE_MESH = (2, 4)    # the one-process restore: 8 devices, another model partitioning.
TOTAL_STEPS = 4
SAVE_STEP = 2
SEED = 0

TASK = "rec_t5x_multihost_test.tiny"
NUM_EXAMPLES = 25       # odd: the two shards hold 13 and 12 examples (ragged gathers)
TASK_LENGTHS = {"inputs": 4, "targets": 3}


def model() -> models.EncoderDecoderModel:
  return models.EncoderDecoderModel(network.Transformer(CONFIG), z_loss=1e-4)


def optimizer() -> optimizers.Optimizer:
  return optimizers.adafactor(optimizers.LearningRateConfig("rsqrt", 0.1, warmup_steps=2))


@dataclasses.dataclass
class SyntheticBatches:
  """Process-local rows of step s's global batch; row r depends only on (seed, s, r).

  Attributes:
    layout: this process's DataLayout (shard id, rows per process).
    seed: data seed.
    rows_built: how many rows this process generated so far (never a whole global batch per step
      when there are several shards).
  """
  layout: partitioning.DataLayout
  seed: int = 1
  rows_built: int = 0

  def row(self, step: int, global_row: int) -> dict[str, np.ndarray]:
    rng = np.random.RandomState([self.seed, step, global_row])
    length = 1 + (step + global_row) % DEC_LEN          # 1..DEC_LEN target tokens
    targets = np.zeros(DEC_LEN, np.int32)
    targets[:length] = rng.randint(2, CONFIG.vocab_size, length)
    inputs = rng.randint(1, CONFIG.vocab_size, ENC_LEN).astype(np.int32)
    inputs[ENC_LEN - global_row % 3:] = 0
    return {"encoder_input_tokens": inputs,
            "decoder_input_tokens": np.concatenate([[0], targets[:-1]]).astype(np.int32),
            "decoder_target_tokens": targets,
            "decoder_loss_weights": (targets > 0).astype(np.float32)}

  def local_batch(self, step: int) -> dict[str, np.ndarray]:
    """[batch_size_per_process, length] features of this process's rows of step `step`."""
    per = self.layout.batch_size_per_process
    first = self.layout.shard_id * per
    rows = [self.row(step, r) for r in range(first, first + per)]
    self.rows_built += len(rows)
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


RENDERED_KEYS: list[int] = []


def register_task() -> None:
  """Registers TASK (idempotent): key k -> inputs [k+2, k%7+2, 3, 1], targets [k%5+2, 4, 1].

  The source shards the keys before rendering (like seqio_tasks' PromptSource), and every
  rendered key is appended to RENDERED_KEYS.
  """
  import seqio  # pylint: disable=g-import-not-at-top  (TensorFlow: only in workers that need it)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  if TASK in seqio.TaskRegistry.names():
    return

  def render(key):
    RENDERED_KEYS.append(int(key))
    k = int(key)
    return (np.asarray([k + 2, k % 7 + 2, 3], np.int32), np.asarray([k % 5 + 2, 4], np.int32))

  def dataset_fn(split, shuffle_files, seed=None, shard_info=None):
    del split
    ds = tf.data.Dataset.range(NUM_EXAMPLES)
    if shard_info is not None and shard_info.num_shards > 1:
      ds = ds.shard(shard_info.num_shards, shard_info.index)
    if shuffle_files:
      ds = ds.shuffle(NUM_EXAMPLES, seed=seed)

    def to_features(key):
      inputs, targets = tf.numpy_function(render, [key], [tf.int32, tf.int32], stateful=False)
      return {"inputs": tf.ensure_shape(inputs, [3]), "targets": tf.ensure_shape(targets, [2])}

    return ds.map(to_features)

  class ShardedSource(seqio.FunctionDataSource):
    @property
    def supports_arbitrary_sharding(self) -> bool:
      return True

    def get_dataset(self, split="train", shuffle=True, seed=None, shard_info=None, *,
                    sequence_length=None, use_cached=False, num_epochs=1):
      del sequence_length, use_cached, num_epochs
      return dataset_fn(split, shuffle, seed, shard_info)

  vocab = seqio.PassThroughVocabulary(size=CONFIG.vocab_size, eos_id=1)
  seqio.TaskRegistry.add(
      TASK, ShardedSource(dataset_fn, splits=("train", "validation")),
      preprocessors=[seqio.preprocessors.append_eos_after_trim],
      output_features={"inputs": seqio.Feature(vocab, dtype=tf.int32),
                       "targets": seqio.Feature(vocab, dtype=tf.int32)})
