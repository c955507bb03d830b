"""Tests for rec_t5x.input_pipeline with a tiny in-test SeqIO task (py_function source)."""
import jax
import numpy as np
import pytest
import seqio
import tensorflow as tf

from rec_t5x import input_pipeline
from rec_t5x import partitioning

TASK = "test_input_pipeline.tiny"
NUM_EXAMPLES = 40
LENGTHS = {"inputs": 64, "targets": 8}


def _source(split, shuffle_files, seed=None):
  del shuffle_files, seed
  offset = 0 if split == "train" else 1000

  def render(key):
    def py(k):
      k = int(k) + offset
      return f"user history {k} {'x' * (k % 5)}".encode(), f"{k}".encode()
    inputs, targets = tf.py_function(py, [key], [tf.string, tf.string])
    return {"inputs": tf.ensure_shape(inputs, []), "targets": tf.ensure_shape(targets, [])}

  return tf.data.Dataset.range(NUM_EXAMPLES).map(render)


@pytest.fixture(scope="module", autouse=True)
def tiny_task():
  vocab = seqio.ByteVocabulary()
  seqio.TaskRegistry.add(
      TASK, seqio.FunctionDataSource(_source, splits=["train", "validation"]),
      preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos],
      output_features={"inputs": seqio.Feature(vocab), "targets": seqio.Feature(vocab)})
  yield
  seqio.TaskRegistry.remove(TASK)


def _config(**kw):
  base = dict(mixture_or_task_name=TASK, task_feature_lengths=LENGTHS, split="train",
              batch_size=8, shuffle=True, seed=7, pack=True)
  base.update(kw)
  return input_pipeline.DatasetConfig(**base)


def _partitioner(data=4, model=2):
  return partitioning.Partitioner(partitioning.MeshConfig(mesh_shape=(data, model)),
                                  devices=jax.devices()[:data * model])


def _targets_text(batch):
  """Decoded target strings of the rows of an unpacked batch (padding rows skipped)."""
  vocab = seqio.ByteVocabulary()
  rows = np.asarray(batch["decoder_target_tokens"])
  return [vocab.decode([t for t in row if t > 1]) for row in rows if row.any()]


@pytest.mark.parametrize("field,value,match", [
    ("task_feature_lengths", {"inputs": 32}, "targets"),
    ("task_feature_lengths", {"inputs": 32, "targets": 0}, "targets"),
    ("batch_size", 0, "batch_size=0"),
    ("mixture_or_task_name", "", "mixture_or_task_name"),
    ("seed", 1.5, "seed=1.5"),
])
def test_config_validation_names_field(field, value, match):
  with pytest.raises(ValueError, match=match):
    _config(**{field: value})


def test_unknown_task_lists_closest_names():
  with pytest.raises(ValueError, match=r"closest registered names: \['test_input_pipeline.tiny'"):
    input_pipeline.get_provider("test_input_pipeline.tinny")


def test_unimportable_module_names_it():
  with pytest.raises(ModuleNotFoundError, match="no_such_tasks_module"):
    input_pipeline.import_module("no_such_tasks_module")


def test_batch_not_divisible_by_data_shards():
  with pytest.raises(ValueError, match=r"batch size 6 is not divisible by the 'data' mesh axis"):
    input_pipeline.get_iterator(_config(batch_size=6), _partitioner(4, 2))


def test_layout_must_match_batch_size():
  layout = partitioning.DataLayout(global_batch_size=16, batch_size_per_process=16, shard_id=0,
                                   num_shards=1)
  with pytest.raises(ValueError, match="DatasetConfig.batch_size=8"):
    input_pipeline.batched_dataset(_config(), layout, num_epochs=1)


def test_shards_are_disjoint_and_cover_the_split():
  config = _config(shuffle=False, pack=False, batch_size=4)
  seen = []
  for shard in range(2):
    layout = partitioning.DataLayout(global_batch_size=4, batch_size_per_process=2,
                                     shard_id=shard, num_shards=2)
    shard_rows = []
    for batch in input_pipeline.batched_dataset(config, layout, num_epochs=1).as_numpy_iterator():
      assert batch["decoder_target_tokens"].shape == (2, LENGTHS["targets"])
      shard_rows += _targets_text(batch)
    seen.append(shard_rows)
  assert not set(seen[0]) & set(seen[1])
  assert sorted(seen[0] + seen[1], key=int) == [str(k) for k in range(NUM_EXAMPLES)]


def test_finite_pass_pads_last_batch_with_zero_weights():
  config = _config(shuffle=False, pack=False, batch_size=16)  # 40 = 2 * 16 + 8.
  batches = list(input_pipeline.get_iterator(config, _partitioner(), num_epochs=1))
  assert len(batches) == 3
  weights = np.asarray(batches[-1]["decoder_loss_weights"])
  assert weights[:8].sum(axis=1).min() > 0 and not weights[8:].any()
  assert sum(len(_targets_text(b)) for b in batches) == NUM_EXAMPLES


def test_global_batch_is_packed_and_sharded():
  partitioner = _partitioner()
  iterator = input_pipeline.get_iterator(_config(), partitioner)
  batch = next(iterator)
  assert set(batch) == set(iterator.element_spec)
  for name, array in batch.items():
    spec = iterator.element_spec[name]
    assert array.shape == spec.shape and array.dtype == spec.dtype
    assert array.sharding.is_equivalent_to(partitioner.batch_sharding, array.ndim)
  assert batch["encoder_input_tokens"].shape == (8, LENGTHS["inputs"])
  # Packing puts more than one example in some row.
  assert int(np.asarray(batch["decoder_segment_ids"]).max()) > 1


def test_training_stream_repeats_past_one_epoch():
  iterator = input_pipeline.get_iterator(_config(pack=False, shuffle=False), _partitioner())
  rows = [t for _ in range(NUM_EXAMPLES // 8 + 2) for t in _targets_text(next(iterator))]
  assert rows == [str(k) for k in range(NUM_EXAMPLES)] + [str(k) for k in range(16)]


def test_restored_iterator_continues_exactly():
  partitioner = _partitioner()
  first = input_pipeline.get_iterator(_config(), partitioner)
  for _ in range(3):
    next(first)
  state = first.get_state()
  expected = [next(first) for _ in range(4)]
  resumed = input_pipeline.get_iterator(_config(), partitioner)
  resumed.set_state(state)
  for want, got in zip(expected, [next(resumed) for _ in range(4)]):
    for name in want:
      np.testing.assert_array_equal(np.asarray(want[name]), np.asarray(got[name]), err_msg=name)


def test_save_restore_through_a_file(tmp_path):
  partitioner = _partitioner()
  first = input_pipeline.get_iterator(_config(seed=3), partitioner)
  next(first)
  first.save(tmp_path / "train_ds-0-of-1")
  want = next(first)
  resumed = input_pipeline.get_iterator(_config(seed=3), partitioner)
  resumed.restore(tmp_path / "train_ds-0-of-1")
  np.testing.assert_array_equal(np.asarray(want["encoder_input_tokens"]),
                                np.asarray(next(resumed)["encoder_input_tokens"]))


def test_bad_state_is_a_clear_error():
  iterator = input_pipeline.get_iterator(_config(), _partitioner())
  with pytest.raises(ValueError, match="not a serialized"):
    iterator.set_state(b"garbage")


def test_mixture_shares_are_the_normalised_rates():
  other = TASK + "_other"
  seqio.TaskRegistry.add(
      other, seqio.FunctionDataSource(_source, splits=["train"]),
      preprocessors=[seqio.preprocessors.tokenize],
      output_features={"inputs": seqio.Feature(seqio.ByteVocabulary()),
                       "targets": seqio.Feature(seqio.ByteVocabulary())})
  mixture = TASK + "_mixture"
  seqio.MixtureRegistry.add(mixture, [(TASK, 3.0), (other, lambda task: 1.0)])
  try:
    assert input_pipeline.mixture_shares(mixture) == {TASK: 0.75, other: 0.25}
    assert input_pipeline.mixture_shares(TASK) is None
  finally:
    seqio.MixtureRegistry.remove(mixture)
    seqio.TaskRegistry.remove(other)
