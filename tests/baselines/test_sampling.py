"""Tests for rec_t5x.baselines.sampling."""
import numpy as np

from rec_t5x.baselines import sampling
from tests.baselines import synthetic


def test_training_interactions_hold_out_validation_and_test():
  ds = synthetic.make_dataset([[0, 1, 2, 3], [4, 5], [6, 7, 8]], num_items=10)
  inter = sampling.training_interactions(ds)
  assert list(zip(inter.users.tolist(), inter.items.tolist())) == [(0, 0), (0, 1), (1, 4), (1, 5),
                                                                    (2, 6)]


def test_sampled_negatives_are_never_training_positives():
  # User u trained on every item except u and 19: negatives must be exactly {u, 19}.
  sequences = [[i for i in range(20) if i not in (u, 19)] + [19, u] for u in range(5)]
  ds = synthetic.make_dataset(sequences, num_items=20)
  inter = sampling.training_interactions(ds)
  users = np.repeat(np.arange(5), 200)
  negatives, collisions = sampling.sample_negatives(inter, users, np.random.default_rng(0))
  assert collisions == 0
  for u in range(5):
    assert set(negatives[users == u].tolist()) == {u, 19}
  assert not sampling.is_positive(inter, users, negatives).any()


def test_a_user_who_trained_on_every_item_is_counted_as_a_collision():
  ds = synthetic.make_dataset([[0, 1, 2, 0, 1], [2, 1, 0]], num_items=3)
  inter = sampling.training_interactions(ds)
  negatives, collisions = sampling.sample_negatives(inter, np.asarray([0, 0]),
                                                    np.random.default_rng(0))
  assert collisions == 2 and negatives.shape == (2,)
