"""PromptSource: lazy, deterministic, shardable SeqIO sources of rendered samples."""
import numpy as np
import pytest
import seqio
import tensorflow as tf

from rec_t5x import prompts
from rec_t5x.prompts import keys as keys_lib
from seqio_tasks import sources
from tests.seqio_tasks import conftest

LENGTHS = {"inputs": 512, "targets": 64}


def _source(name):
  return seqio.get_mixture_or_task(name).source


def _keys(dataset):
  return [int(ex["key"]) for ex in dataset.as_numpy_iterator()]


@pytest.mark.parametrize("task", sorted(prompts.TASKS))
def test_tasks_yield_well_formed_tokenized_examples(synth, task):
  provider = seqio.get_mixture_or_task(f"rec_t5x.synth.{task}")
  vocab = provider.output_features["targets"].vocabulary
  for split in provider.splits:
    examples = list(provider.get_dataset(LENGTHS, split=split, shuffle=False).as_numpy_iterator())
    keys = prompts.TASKS[task].sample_keys(synth, split, conftest.CONFIG)
    assert len(examples) == len(keys) == provider.num_input_examples(split)
    for ex in examples:
      assert ex["inputs"].dtype == np.int32 and ex["targets"].dtype == np.int32
      assert len(ex["inputs"]) > 1 and len(ex["targets"]) > 1
      assert ex["inputs"][-1] == 1 and ex["targets"][-1] == 1  # EOS appended
      assert vocab.decode(ex["targets"][:-1].tolist()) == ex["targets_pretokenized"].decode()
      sample = prompts.TASKS[task].render(synth, int(ex["key"]), split, conftest.CONFIG,
                                          conftest.CONFIG.seed)
      assert ex["inputs_pretokenized"].decode() == sample["inputs"]
      assert ex["targets_pretokenized"].decode() == sample["targets"]


def test_sources_are_deterministic_and_shuffle_is_a_seeded_permutation(synth):
  source = _source("rec_t5x.synth.retrieval")
  unshuffled = _keys(source.get_dataset("train", shuffle=False))
  assert unshuffled == sorted(unshuffled)
  first = _keys(source.get_dataset("train", shuffle=True, seed=5))
  assert first == _keys(source.get_dataset("train", shuffle=True, seed=5))
  assert sorted(first) == unshuffled and first != unshuffled
  assert first != _keys(source.get_dataset("train", shuffle=True, seed=6))


def test_permuted_keys_reshuffle_every_epoch_and_checkpoint_only_a_position(tmp_path):
  keys = np.arange(100_000, 120_000, dtype=np.int64)
  epochs = iter(sources.permuted_keys(keys, seed=3).repeat(2).batch(keys.size))
  first, second = (next(epochs).numpy() for _ in range(2))
  assert sorted(first) == sorted(second) == keys.tolist()
  assert (first != keys).any() and (first != second).any()
  assert (next(iter(sources.permuted_keys(keys, seed=3).batch(keys.size))).numpy() == first).all()
  assert (next(iter(sources.permuted_keys(keys, seed=4).batch(keys.size))).numpy() != first).any()
  # A full shuffle buffer of these keys checkpoints ~4 MB; the position is a few KB.
  iterator = iter(sources.permuted_keys(keys, seed=3).repeat().batch(1000))
  for _ in range(23):  # into the second epoch
    next(iterator)
  path = tf.train.Checkpoint(iterator=iterator).write(str(tmp_path / "it"))
  assert sum(f.stat().st_size for f in tmp_path.iterdir()) < 64 * 1024
  expected = np.concatenate([next(iterator).numpy() for _ in range(20)])  # into the third epoch
  restored = iter(sources.permuted_keys(keys, seed=3).repeat().batch(1000))
  tf.train.Checkpoint(iterator=restored).read(path).assert_consumed()
  assert (np.concatenate([next(restored).numpy() for _ in range(20)]) == expected).all()
  assert [int(k) for k in sources.permuted_keys(np.array([7]), seed=3)] == [7]


def test_shards_partition_the_keys_before_rendering(synth):
  source = _source("rec_t5x.synth.ranking")
  assert source.supports_arbitrary_sharding
  full = _keys(source.get_dataset("train", shuffle=False))
  shards = [_keys(source.get_dataset("train", shuffle=False, shard_info=seqio.ShardInfo(i, 3)))
            for i in range(3)]
  assert sorted(sum(shards, [])) == full
  assert all(shards) and not set(shards[0]) & set(shards[1])


def test_training_renders_with_the_run_seed_evaluation_with_the_config_seed(synth):
  source = _source("rec_t5x.synth.ranking")

  def texts(split, seed):
    return [ex["inputs"] for ex in source.get_dataset(split, shuffle=False, seed=seed).as_numpy_iterator()]

  assert texts("train", 1) != texts("train", 2)
  assert texts("train", None) == texts("train", conftest.CONFIG.seed)
  assert texts("validation", 1) == texts("validation", 2) == texts("validation", None)


def test_unknown_split_names_the_task(synth):
  with pytest.raises(ValueError, match=r"SeqIO task 'rec_t5x.synth.mim' has no split 'test'"):
    _source("rec_t5x.synth.mim").get_dataset("test", shuffle=False)


def test_dataset_is_loaded_lazily_and_once():
  calls = []

  def loader():
    calls.append(1)
    return conftest.make_synth_dataset()

  fn = sources.PromptDatasetFn("t", "lazy_once", loader, "retrieval", conftest.CONFIG)
  assert not calls
  try:
    fn("train", shuffle_files=False)
    fn("validation", shuffle_files=False)
    assert len(calls) == 1
  finally:
    sources._LOADED.pop("lazy_once", None)  # pylint: disable=protected-access


def test_loader_errors_name_the_task_and_dataset():
  def loader():
    raise FileNotFoundError("no raw files: run python -m rec_t5x.data.fetch")

  fn = sources.PromptDatasetFn("rec_t5x.broken.retrieval", "broken", loader, "retrieval",
                               conftest.CONFIG)
  with pytest.raises(FileNotFoundError, match="no raw files") as info:
    fn("train", shuffle_files=False)
  assert "SeqIO task 'rec_t5x.broken.retrieval'" in "".join(info.value.__notes__)


def test_keys_decode_to_users_of_the_dataset(synth):
  for split in ("train", "validation", "test"):
    for key in _keys(_source("rec_t5x.synth.rating").get_dataset(split, shuffle=False)):
      assert 0 <= keys_lib.decode_key(key)[0] < synth.num_users
