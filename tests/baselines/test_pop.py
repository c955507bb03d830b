"""Tests for rec_t5x.baselines.pop."""
import numpy as np

from rec_t5x.baselines import common
from rec_t5x.baselines import evaluation
from rec_t5x.baselines import pop
from tests.baselines import synthetic


def test_item_counts_count_every_training_interaction_only():
  # Training parts: [0, 1, 1], [1, 2], [3, 3] (short user keeps all); held out: 4, 5 / 6, 7.
  ds = synthetic.make_dataset([[0, 1, 1, 4, 5], [1, 2, 6, 7], [3, 3]], num_items=8)
  assert pop.item_counts(ds).tolist() == [1, 3, 1, 2, 0, 0, 0, 0]


def test_pop_ranks_unseen_items_by_count():
  rng = np.random.default_rng(0)
  weights = 1.0 / np.arange(1, 31)
  sequences = [rng.choice(30, size=6, replace=False, p=weights / weights.sum()).tolist()
               for _ in range(40)]
  ds = synthetic.make_dataset(sequences, num_items=30)
  trained = pop.train(ds, pop.PopConfig(), common.TrainConfig(), log=lambda _: None)
  counts = trained.embeddings["item_counts"]
  assert counts.tolist() == pop.item_counts(ds).tolist() and counts[0] > counts[-1]
  for name in evaluation.SPLITS:
    split = evaluation.make_split(ds, name)
    result = evaluation.evaluate(trained.make_scorer(split), split, ds.num_items, top_n=20)
    for row in range(split.num_rows):
      seen = set(split.prefix(row).tolist())
      expected = sorted((i for i in range(ds.num_items) if i not in seen),
                        key=lambda i: (-counts[i], i))[:20]
      assert result.top_items[row].tolist() == expected
