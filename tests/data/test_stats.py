"""Tests of rec_t5x.data.stats."""
import numpy as np

from rec_t5x.data import dataset as dataset_lib
from rec_t5x.data import stats


def _dataset():
  lengths = [1, 3, 8]  # mean 4, median 3
  items = np.array([0, 0, 1, 2, 0, 1, 2, 3, 0, 1, 2, 3], np.int32)
  return dataset_lib.RecDataset(
      name="toy", item_public_ids=np.array([2, 4, 1, 3], np.int64),
      item_titles=("a", "", "c", "d"),
      user_offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), items=items,
      ratings=np.full(12, np.nan, np.float32), timestamps=np.zeros(12, np.int64),
      rating_scale=None)


def test_compute():
  summary = stats.compute(_dataset())
  assert (summary.num_users, summary.num_items, summary.num_interactions) == (3, 4, 12)
  assert summary.mean_length == 4.0 and summary.median_length == 3.0
  assert (summary.min_length, summary.max_length) == (1, 8)
  assert summary.density == 12 / (3 * 4)
  assert summary.num_eval_users == 2 and summary.items_without_title == 1
  assert summary.to_json()["name"] == "toy"


def test_format_table():
  table = stats.format_table([stats.compute(_dataset()), stats.compute(_dataset())])
  lines = table.splitlines()
  assert len(lines) == 4
  assert lines[0].split()[:4] == ["dataset", "users", "items", "interactions"]
  assert set(lines[1]) <= {"-", " "}
  assert lines[2].split()[:5] == ["toy", "3", "4", "12", "4.0"]
  assert "100.0000%" in lines[2]
  assert len({len(line) for line in lines}) == 1  # aligned columns
