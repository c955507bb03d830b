"""SeqIO data sources that render prompt samples from a lazily loaded RecDataset.

A `PromptSource` is a `seqio.FunctionDataSource` whose dataset_fn loads the dataset on first use
(never at import / registration), enumerates the split's integer sample keys
(`rec_t5x.prompts.<task>.sample_keys`) and returns

    keys -> shard (per host) -> permute (train) -> render

where `render` runs `rec_t5x.prompts.<task>.render` through `tf.numpy_function`. Rendering is a
pure function of (dataset, key, split, config, seed), so the stream is deterministic, shardable
over hosts before any rendering work, and its position is checkpointable with the tf.data
iterator. The source shuffles itself (it reports `performs_internal_shuffling`, so SeqIO adds no
shuffle buffer): see `permuted_keys`.

Seeds: validation / test samples always use `SampleConfig.seed`, so evaluation sets (ranking
candidates, phrasings) are identical across runs; training uses the seed SeqIO passes to
`get_dataset` (T5X's run seed) or `SampleConfig.seed` when none is given.
"""
import dataclasses
import threading
from typing import Callable, Optional

import numpy as np
import seqio
import tensorflow as tf

from rec_t5x import prompts
from rec_t5x.prompts import config as config_lib

DatasetLoader = Callable[[], object]

_LOCK = threading.RLock()
_LOADED: dict[str, object] = {}
_KEYS: dict[tuple, np.ndarray] = {}


def load_dataset(name: str, loader: DatasetLoader):
  """Loads dataset `name` once per process (thread-safe) and returns the cached RecDataset."""
  with _LOCK:
    if name not in _LOADED:
      _LOADED[name] = loader()
    return _LOADED[name]


def clear_caches() -> None:
  """Forgets loaded datasets and key arrays (tests; after rebuilding a dataset on disk)."""
  with _LOCK:
    _LOADED.clear()
    _KEYS.clear()


def _seed_value(seed) -> Optional[int]:
  """SeqIO passes an int, None, or (rarely) a scalar tensor; returns a non-negative int or None."""
  if seed is None:
    return None
  value = int(np.asarray(seed).item())
  return value % (2**63)


def permuted_keys(keys: np.ndarray, seed: int) -> tf.data.Dataset:
  """`keys` in a seeded random order that changes every time the dataset is iterated (epoch).

  A full-size `Dataset.shuffle(len(keys))` would do the same, but it holds every key as a
  separate tensor and a tf.data iterator checkpoint stores that whole buffer: 190 MB for 1 M keys,
  ~330 MB per checkpoint for ML-100K's `rec_all` and more memory than the machine has for ML-1M.
  Here position `i` of an epoch reads `keys[index_shuffle(i)]`, a stateless pseudorandom
  bijection of [0, len(keys)) (`tf.random.experimental.index_shuffle`) whose seed is
  (`seed`, a per-epoch draw of `Dataset.random(rerandomize_each_iteration=True)`). The iterator
  state is the epoch's draw and the position, a few KB, and resuming from it is exact.
  """
  if keys.size < 2:
    return tf.data.Dataset.from_tensor_slices(tf.constant(keys, tf.int64))
  table = tf.constant(keys, tf.int64)
  last = tf.constant(keys.size - 1, tf.int64)

  def one_epoch(epoch_draw):
    permutation_seed = tf.stack([tf.constant(seed, tf.int64), tf.reshape(epoch_draw, [])])
    return tf.data.Dataset.range(keys.size).map(
        lambda i: tf.gather(table, tf.random.experimental.index_shuffle(i, permutation_seed, last)))

  epoch_draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
  return epoch_draws.flat_map(one_epoch)


@dataclasses.dataclass(frozen=True)
class PromptDatasetFn:
  """The dataset_fn of a PromptSource: (split, shuffle_files, seed, shard_info) -> tf.data.Dataset.

  Attributes:
    task_name: the SeqIO task name (for error messages).
    dataset_name: registered dataset name (key of the loaded-dataset cache).
    loader: zero-argument callable returning the RecDataset.
    prompt_task: name of the prompt task in `rec_t5x.prompts.TASKS`.
    config: sample configuration.
  """
  task_name: str
  dataset_name: str
  loader: DatasetLoader
  prompt_task: str
  config: config_lib.SampleConfig

  def dataset(self):
    try:
      return load_dataset(self.dataset_name, self.loader)
    except Exception as e:  # pylint: disable=broad-except
      e.add_note(f"(while loading dataset {self.dataset_name!r} for SeqIO task {self.task_name!r})")
      raise

  def keys(self, split: str) -> np.ndarray:
    """int64 [num_samples] sample keys of `split` (computed once per process)."""
    cache_key = (self.dataset_name, self.prompt_task, split, self.config)
    with _LOCK:
      if cache_key not in _KEYS:
        task = prompts.TASKS[self.prompt_task]
        _KEYS[cache_key] = task.sample_keys(self.dataset(), split, self.config)
      return _KEYS[cache_key]

  def render_seed(self, split: str, seed) -> int:
    seed = _seed_value(seed)
    if split != config_lib.TRAIN or seed is None:
      return self.config.seed
    return seed

  def __call__(self, split: str, shuffle_files: bool, seed=None,
               shard_info: Optional[seqio.ShardInfo] = None) -> tf.data.Dataset:
    """Rendered samples {"inputs": str, "targets": str, "key": int64} of `split`."""
    ds = self.dataset()
    keys = self.keys(split)
    render_seed = self.render_seed(split, seed)
    if shard_info is not None and shard_info.num_shards > 1:  # as Dataset.shard: every n-th key
      keys = keys[shard_info.index::shard_info.num_shards]
    if shuffle_files:
      data = permuted_keys(keys, render_seed)
    else:
      data = tf.data.Dataset.from_tensor_slices(tf.constant(keys, tf.int64))
    task = prompts.TASKS[self.prompt_task]
    config = self.config

    def render(key):
      sample = task.render(ds, int(key), split, config, render_seed)
      return sample["inputs"].encode("utf-8"), sample["targets"].encode("utf-8")

    def to_features(key):
      inputs, targets = tf.numpy_function(render, [key], [tf.string, tf.string], stateful=False)
      inputs.set_shape([])
      targets.set_shape([])
      return {"inputs": inputs, "targets": targets, "key": key}

    return data.map(to_features, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


class PromptSource(seqio.FunctionDataSource):
  """A FunctionDataSource over rendered prompt samples, sharded by key, shuffled internally."""

  def __init__(self, dataset_fn: PromptDatasetFn, splits):
    super().__init__(dataset_fn=dataset_fn, splits=tuple(splits), num_input_examples=None,
                     caching_permitted=True)
    self._prompt_fn = dataset_fn

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return True

  @property
  def performs_internal_shuffling(self) -> bool:
    return True

  def num_input_examples(self, split: str) -> int:
    """Number of samples in `split`; loads the dataset (cheap once it is cached)."""
    return int(self._prompt_fn.keys(split).size)

  def get_dataset(self, split: str = "train", shuffle: bool = True, seed: Optional[int] = None,
                  shard_info: Optional[seqio.ShardInfo] = None, *, sequence_length=None,
                  use_cached: bool = False, num_epochs: Optional[int] = 1) -> tf.data.Dataset:
    del sequence_length, use_cached, num_epochs  # handled by the Task
    if split not in self.splits:
      raise ValueError(f"SeqIO task {self._prompt_fn.task_name!r} has no split {split!r}; its splits are "
                       f"{tuple(self.splits)}")
    return self._prompt_fn(split=split, shuffle_files=shuffle, seed=seed, shard_info=shard_info)
