"""SeqIO task or mixture -> packed, per-process sharded, global jax.Array batches.

The pipeline is the one T5X users know: `mixture.get_dataset(...)` on this process's shard
(`seqio.ShardInfo` from the partitioner's `DataLayout`, so each process reads only its share of
the data), `seqio.EncDecFeatureConverter` (packing for training), batches of the per-process
batch size, and `jax.make_array_from_process_local_data` (through `Partitioner.shard_batch`) to
assemble the global batch on the batch sharding.

Exact resume: `BatchIterator.get_state()` serialises the tf.data iterator position through the
public `tf.train.Checkpoint(iterator=...)` API, so a resumed run sees exactly the batches an
uninterrupted run would have seen. SeqIO sources built from `tf.py_function` (our prompt
renderers) hold "external state" that tf.data refuses to checkpoint by default; the prompt
contract makes rendering a pure function of the sample key, so the dataset sets
`experimental_external_state_policy = IGNORE` and the saved position remains exact.
"""
import dataclasses
import difflib
import importlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import msgpack
import numpy as np
import seqio
import tensorflow as tf

from rec_t5x import partitioning

REQUIRED_FEATURES = ("inputs", "targets")
_CHECKPOINT_PREFIX = "iterator"


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
  """What to read and how to batch it (the T5X `DatasetConfig` fields we use).

  Attributes:
    mixture_or_task_name: registered SeqIO task or mixture, e.g. "rec_t5x.ml100k.rec_all".
    task_feature_lengths: maximum tokens per feature, must give "inputs" and "targets".
    split: dataset split, e.g. "train" or "validation".
    batch_size: global batch size (all processes together).
    shuffle: shuffle examples (seeded, so still deterministic).
    seed: seed for shuffling and mixture sampling; None for a nondeterministic seed.
    pack: pack several examples into one row (training); False keeps one example per row.
    use_cached: read SeqIO's offline cache (off by default; a missing cache names the fix).
    module: Python module imported before the task is looked up (it registers the task).
  """
  mixture_or_task_name: str
  task_feature_lengths: Mapping[str, int]
  split: str
  batch_size: int
  shuffle: bool = True
  seed: int | None = 0
  pack: bool = True
  use_cached: bool = False
  module: str | None = None

  def __post_init__(self):
    if not isinstance(self.mixture_or_task_name, str) or not self.mixture_or_task_name:
      raise ValueError(
          f"DatasetConfig.mixture_or_task_name={self.mixture_or_task_name!r}: expected a non-empty "
          "registered SeqIO task or mixture name")
    lengths = self.task_feature_lengths
    if not isinstance(lengths, Mapping):
      raise ValueError(f"DatasetConfig.task_feature_lengths={lengths!r}: expected a mapping like "
                       "{'inputs': 512, 'targets': 64}")
    missing = [f for f in REQUIRED_FEATURES if f not in lengths]
    if missing:
      raise ValueError(f"DatasetConfig.task_feature_lengths={dict(lengths)!r} lacks {missing}: "
                       f"lengths for {list(REQUIRED_FEATURES)} are required")
    for name, length in lengths.items():
      if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"DatasetConfig.task_feature_lengths[{name!r}]={length!r}: expected an "
                         "integer >= 1")
    if not isinstance(self.split, str) or not self.split:
      raise ValueError(f"DatasetConfig.split={self.split!r}: expected a split name like 'train'")
    if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
      raise ValueError(f"DatasetConfig.batch_size={self.batch_size!r}: expected an integer >= 1")
    if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
      raise ValueError(f"DatasetConfig.seed={self.seed!r}: expected an integer or None")
    if self.module is not None and (not isinstance(self.module, str) or not self.module):
      raise ValueError(f"DatasetConfig.module={self.module!r}: expected a dotted module path or None")


def import_module(module: str | None) -> None:
  """Imports the module that registers the SeqIO tasks (no-op for None).

  Raises:
    ModuleNotFoundError: naming the module and how to make it importable.
  """
  if not module:
    return
  try:
    importlib.import_module(module)
  except ModuleNotFoundError as e:
    raise ModuleNotFoundError(
        f"MIXTURE_OR_TASK_MODULE={module!r} could not be imported ({e}). Give a dotted path of an "
        "installed package (e.g. 'seqio_tasks') or add its parent folder to PYTHONPATH.") from e


def get_provider(name: str) -> seqio.DatasetProviderBase:
  """Looks up a registered SeqIO task or mixture.

  Raises:
    ValueError: for an unknown name, listing the closest registered names.
  """
  names = sorted(set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names()))
  if name not in names:
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.4)
    hint = f"closest registered names: {close}" if close else f"{len(names)} names are registered"
    raise ValueError(f"SeqIO task or mixture {name!r} is not registered ({hint}). Set "
                     "MIXTURE_OR_TASK_MODULE to the module that registers it.")
  return seqio.get_mixture_or_task(name)


def mixture_shares(name: str) -> dict[str, float] | None:
  """{task name: share of the samples} of a registered mixture, from its (resolved) rates.

  None for a task. Logged at the start of training, so a run's log shows the rates that its
  gin bindings (e.g. `seqio_tasks.mixing_rates`) produced.
  """
  provider = get_provider(name)
  if not isinstance(provider, seqio.Mixture):
    return None
  rates = {task.name: float(provider.get_rate(task)) for task in provider.tasks}
  total = sum(rates.values())
  return {task: (rate / total if total > 0 else 0.0) for task, rate in rates.items()}


def task_dataset(config: DatasetConfig, layout: partitioning.DataLayout,
                 num_epochs: int | None, cache_in_memory: bool = True) -> tf.data.Dataset:
  """This process's shard of the task's preprocessed examples (before feature conversion).

  Args:
    config: what to read.
    layout: this process's shard (`Partitioner.data_layout`).
    num_epochs: passes over the data; None repeats forever (training).
    cache_in_memory: let SeqIO keep small tasks in memory after the first pass; turn off when
      passes are cut short (a partial in-memory cache is discarded, with a warning, each time).

  Returns:
    Examples with "inputs"/"targets" token ids (plus any `*_pretokenized` text).
  """
  import_module(config.module)
  provider = get_provider(config.mixture_or_task_name)
  features = provider.output_features
  missing = [f for f in REQUIRED_FEATURES if f not in features]
  if missing:
    raise ValueError(f"SeqIO {config.mixture_or_task_name!r} lacks output features {missing}; an "
                     f"encoder-decoder model needs {list(REQUIRED_FEATURES)}")
  try:
    return provider.get_dataset(
        sequence_length=dict(config.task_feature_lengths), split=config.split,
        use_cached=config.use_cached, shuffle=config.shuffle, seed=config.seed,
        shard_info=layout.shard_info, num_epochs=num_epochs, try_in_mem_cache=cache_in_memory)
  except (FileNotFoundError, ValueError) as e:
    if config.use_cached:
      raise ValueError(f"reading the SeqIO cache of {config.mixture_or_task_name!r} failed ({e}). "
                       "Build it with seqio's cache_tasks_main or set USE_CACHED_TASKS=False "
                       "(DatasetConfig.use_cached=False) to preprocess on the fly.") from e
    raise


def pad_batch(batch: dict[str, tf.Tensor], size: int) -> dict[str, tf.Tensor]:
  """Zero-pads the batch axis to `size` rows (zero loss weights, so metrics are unchanged)."""
  def pad(x):
    extra = size - tf.shape(x)[0]
    return tf.pad(x, [[0, extra]] + [[0, 0]] * (len(x.shape) - 1))
  return {k: tf.ensure_shape(pad(v), [size] + v.shape[1:]) for k, v in batch.items()}


def with_checkpointable_options(ds: tf.data.Dataset) -> tf.data.Dataset:
  """Lets the iterator of a py_function-based dataset be checkpointed (see module docstring)."""
  options = tf.data.Options()
  options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
  options.deterministic = True
  return ds.with_options(options)


def batched_dataset(config: DatasetConfig, layout: partitioning.DataLayout,
                    num_epochs: int | None, cache_in_memory: bool = True) -> tf.data.Dataset:
  """This process's batches: `{feature: [batch_size_per_process, length]}` model features.

  Args:
    config: what to read and how to batch.
    layout: this process's shard.
    num_epochs: None for an endless training stream (incomplete batches never occur); else a
      finite pass whose last batch is zero-padded to full size.
    cache_in_memory: see `task_dataset`.

  Returns:
    Batches with EncDecFeatureConverter's features (encoder_input_tokens, decoder_target_tokens,
    decoder_input_tokens, decoder_loss_weights, and segment ids / positions when packed).
  """
  if layout.global_batch_size != config.batch_size:
    raise ValueError(f"DataLayout.global_batch_size={layout.global_batch_size} differs from "
                     f"DatasetConfig.batch_size={config.batch_size}")
  ds = task_dataset(config, layout, num_epochs, cache_in_memory)
  converter = seqio.EncDecFeatureConverter(pack=config.pack)
  ds = converter(ds, dict(config.task_feature_lengths))
  per_process = layout.batch_size_per_process
  ds = ds.batch(per_process, drop_remainder=num_epochs is None)
  if num_epochs is not None:
    ds = ds.map(lambda b: pad_batch(b, per_process))
  return with_checkpointable_options(ds.prefetch(tf.data.AUTOTUNE))


def serialize_iterator(iterator: Any) -> bytes:
  """Serialises a tf.data iterator's position with tf.train.Checkpoint (public API).

  The checkpoint files are written to a temporary folder and packed into one msgpack blob, so the
  caller (the checkpoint manager) can store them wherever it keeps the train state.
  """
  with tempfile.TemporaryDirectory() as tmp:
    tf.train.Checkpoint(iterator=iterator).write(os.path.join(tmp, _CHECKPOINT_PREFIX))
    files = {}
    for name in sorted(os.listdir(tmp)):
      with open(os.path.join(tmp, name), "rb") as f:
        files[name] = f.read()
  return msgpack.packb(files)


def restore_iterator(iterator: Any, state: bytes) -> None:
  """Restores a position written by `serialize_iterator` into a fresh iterator of the same dataset.

  Raises:
    ValueError: when `state` is not such a blob or does not match the dataset.
  """
  try:
    files = msgpack.unpackb(state)
  except Exception as e:  # msgpack raises several unrelated exception types.
    raise ValueError(f"input iterator state ({len(state)} bytes) is not a serialized iterator") from e
  if not isinstance(files, dict) or not any(n.endswith(".index") for n in files):
    raise ValueError("input iterator state is not a serialized tf.data iterator checkpoint")
  with tempfile.TemporaryDirectory() as tmp:
    for name, data in files.items():
      with open(os.path.join(tmp, os.path.basename(name)), "wb") as f:
        f.write(data)
    try:
      tf.train.Checkpoint(iterator=iterator).read(
          os.path.join(tmp, _CHECKPOINT_PREFIX)).assert_consumed()
    except (tf.errors.OpError, AssertionError) as e:
      raise ValueError(f"input iterator state does not match this dataset: {e}") from e


class BatchIterator(Iterator[dict[str, jax.Array]]):
  """Iterates global batches and saves / restores its position.

  Each `next()` reads this process's rows from tf.data and assembles the global `jax.Array`
  batch (`[batch_size, length]` per feature) on the partitioner's batch sharding.
  """

  def __init__(self, dataset: tf.data.Dataset, partitioner: partitioning.Partitioner,
               batch_size: int):
    self._dataset = dataset
    self._partitioner = partitioner
    self._batch_size = batch_size
    self._iterator = iter(dataset)

  @property
  def element_spec(self) -> dict[str, jax.ShapeDtypeStruct]:
    """Global shapes, dtypes and shardings of one batch (for compiling before the first batch)."""
    sharding = self._partitioner.batch_sharding
    return {k: jax.ShapeDtypeStruct((self._batch_size,) + tuple(s.shape[1:]),
                                    s.dtype.as_numpy_dtype, sharding=sharding)
            for k, s in self._dataset.element_spec.items()}

  def __iter__(self) -> "BatchIterator":
    return self

  def next_local(self) -> dict[str, np.ndarray]:
    """This process's rows of the next batch, as numpy (`[batch_size_per_process, length]`)."""
    return {k: v.numpy() for k, v in next(self._iterator).items()}

  def to_global(self, local: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
    """The global batch (`[batch_size, length]` jax.Arrays) from this process's rows."""
    return self._partitioner.shard_batch(local, self._batch_size)

  def __next__(self) -> dict[str, jax.Array]:
    return self.to_global(self.next_local())

  def get_state(self) -> bytes:
    """The iterator position (tf.train.Checkpoint files packed into bytes)."""
    return serialize_iterator(self._iterator)

  def set_state(self, state: bytes) -> None:
    """Restores a position from `get_state()` (same config, same process shard)."""
    restore_iterator(self._iterator, state)

  def save(self, path: str | os.PathLike) -> None:
    """Writes `get_state()` to `path` (one file per process; include the index in the name)."""
    with tf.io.gfile.GFile(os.fspath(path), "wb") as f:
      f.write(self.get_state())

  def restore(self, path: str | os.PathLike) -> None:
    """Restores a position written by `save`."""
    with tf.io.gfile.GFile(os.fspath(path), "rb") as f:
      self.set_state(f.read())


def get_iterator(config: DatasetConfig, partitioner: partitioning.Partitioner,
                 num_epochs: int | None = None) -> BatchIterator:
  """The input pipeline: config -> this process's shard -> global batches.

  Args:
    config: what to read and how to batch.
    partitioner: gives this process's data layout and the batch sharding.
    num_epochs: None repeats forever (training); 1 makes one padded pass (evaluation).

  Returns:
    A BatchIterator whose position can be saved and restored.

  Raises:
    ValueError: when the batch size is not divisible by the mesh's data axis.
  """
  layout = partitioner.data_layout(config.batch_size)
  return BatchIterator(batched_dataset(config, layout, num_epochs), partitioner, config.batch_size)
