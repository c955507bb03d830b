"""Sample keys and the per-split view of a user's sequence."""
import numpy as np
import pytest

from rec_t5x.prompts import config as config_lib
from rec_t5x.prompts import keys as keys_lib
from tests.prompts import synthetic

SEQUENCES = [[0, 1, 2, 3, 4, 5], [6, 7, 8], [9, 1], [3]]


@pytest.fixture(name="ds")
def _ds():
  return synthetic.make_dataset(SEQUENCES, 20)


def test_key_round_trip():
  for user, position in [(0, 0), (5, 17), (123456, 2**24 - 1)]:
    assert keys_lib.decode_key(keys_lib.encode_key(user, position)) == (user, position)
  with pytest.raises(ValueError, match="does not fit"):
    keys_lib.encode_key(1, 2**24)
  with pytest.raises(ValueError, match="negative"):
    keys_lib.decode_key(-1)


def test_train_keys_cover_every_training_position_after_the_first(ds):
  keys = keys_lib.train_keys(ds, "retrieval", config_lib.SampleConfig())
  decoded = [keys_lib.decode_key(k) for k in keys]
  # user 0: train = [0, 1, 2, 3] -> positions 1..3; user 1: train = [6] -> none;
  # user 2 (2 events, all train) -> position 1; user 3 (1 event) -> none.
  assert decoded == [(0, 1), (0, 2), (0, 3), (2, 1)]
  assert keys.dtype == np.int64


def test_train_keys_cap_is_a_seeded_sorted_subset():
  ds = synthetic.make_dataset([list(range(12))], 20)
  config = config_lib.SampleConfig(max_train_samples_per_user=3, seed=5)
  keys = keys_lib.train_keys(ds, "mim", config)
  positions = [keys_lib.decode_key(k)[1] for k in keys]
  assert len(positions) == 3 and positions == sorted(positions) and len(set(positions)) == 3
  assert set(positions) <= set(range(1, 10))
  np.testing.assert_array_equal(keys, keys_lib.train_keys(ds, "mim", config))
  other_seeds = {tuple(keys_lib.train_keys(ds, "mim", config_lib.SampleConfig(
      max_train_samples_per_user=3, seed=s))) for s in range(6)}
  assert len(other_seeds) > 1


def test_eval_keys_are_users_with_validation_and_test(ds):
  keys = keys_lib.eval_keys(ds)
  assert [keys_lib.decode_key(k) for k in keys] == [(0, 0), (1, 0)]


def test_context_per_split(ds):
  train = keys_lib.context(ds, keys_lib.encode_key(0, 2), "train", "t")
  assert train.visible.tolist() == [0, 1, 2] and train.target == 2
  assert train.later.tolist() == [3]
  assert train.history(1).tolist() == [1]
  validation = keys_lib.context(ds, keys_lib.encode_key(0, 0), "validation", "t")
  assert validation.visible.tolist() == [0, 1, 2, 3, 4] and validation.target == 4
  assert validation.later.size == 0
  test = keys_lib.context(ds, keys_lib.encode_key(0, 0), "test", "t")
  assert test.visible.tolist() == [0, 1, 2, 3, 4, 5] and test.target == 5
  assert test.history(3).tolist() == [2, 3, 4]
  np.testing.assert_array_equal(test.visible_ratings, ds.sequence_ratings(0))


def test_context_rejects_keys_outside_the_training_sequence(ds):
  with pytest.raises(ValueError, match=r"position 4 of user 0, whose training sequence has 4 items"):
    keys_lib.context(ds, keys_lib.encode_key(0, 4), "train", "retrieval")
  with pytest.raises(ValueError, match=r"names user 9, but dataset 'synthetic' has 4 users"):
    keys_lib.context(ds, keys_lib.encode_key(9, 1), "train", "retrieval")
  with pytest.raises(ValueError, match="has no validation/test item"):
    keys_lib.context(ds, keys_lib.encode_key(2, 0), "validation", "retrieval")
  with pytest.raises(ValueError, match="evaluation keys have 0"):
    keys_lib.context(ds, keys_lib.encode_key(0, 1), "test", "retrieval")


def test_sample_rng_depends_on_every_argument():
  draws = {keys_lib.sample_rng(*args).integers(2**62) for args in [
      ("a", "train", 1, 0), ("b", "train", 1, 0), ("a", "test", 1, 0), ("a", "train", 2, 0),
      ("a", "train", 1, 1)]}
  assert len(draws) == 5
  assert (keys_lib.sample_rng("a", "train", 1, 0).integers(2**62)
          == keys_lib.sample_rng("a", "train", 1, 0).integers(2**62))
