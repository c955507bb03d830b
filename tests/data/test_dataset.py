"""Tests of rec_t5x.data.dataset: the RecDataset contract, leave-one-out and save/load."""
import json

import numpy as np
import pytest

from rec_t5x.data import dataset as dataset_lib


def _dataset(lengths=(5, 2, 3), num_items=6, **overrides):
  """Users with the given sequence lengths; user u's j-th item is (u + j) % num_items."""
  items = np.concatenate([(u + np.arange(n)) % num_items for u, n in enumerate(lengths)])
  n = len(items)
  fields = dict(
      name="toy", item_public_ids=np.array([4, 1, 6, 2, 5, 3][:num_items], np.int64),
      item_titles=tuple(f"Title {i}" for i in range(num_items)),
      user_offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
      items=items.astype(np.int32), ratings=np.arange(n, dtype=np.float32) % 5 + 1,
      timestamps=np.arange(n, dtype=np.int64) * 10, rating_scale=(1.0, 5.0))
  fields.update(overrides)
  return dataset_lib.RecDataset(**fields)


def test_sizes_and_sequences():
  ds = _dataset()
  assert (ds.num_users, ds.num_items, ds.num_interactions) == (3, 6, 10)
  assert ds.has_ratings
  assert ds.sequence(0).tolist() == [0, 1, 2, 3, 4] and ds.sequence(0).dtype == np.int32
  assert ds.sequence(1).tolist() == [1, 2]
  assert ds.sequence_ratings(2).tolist() == [3.0, 4.0, 5.0]
  assert ds.sequence_timestamps(1).tolist() == [50, 60]
  with pytest.raises(IndexError, match="user index 3 out of range"):
    ds.sequence(3)


def test_leave_one_out():
  ds = _dataset()
  assert ds.train_sequence(0).tolist() == [0, 1, 2]
  assert ds.validation_item(0) == 3 and ds.test_item(0) == 4
  # Fewer than 3 events: everything in train, no validation/test item.
  assert ds.train_sequence(1).tolist() == [1, 2]
  assert ds.validation_item(1) is None and ds.test_item(1) is None
  # Exactly 3 events: one training item.
  assert ds.train_sequence(2).tolist() == [2]
  assert (ds.validation_item(2), ds.test_item(2)) == (3, 4)
  assert ds.eval_users().tolist() == [0, 2] and ds.eval_users().dtype == np.int64


def test_public_id_lookup():
  ds = _dataset()
  for index in range(ds.num_items):
    assert ds.item_index_of_public_id(ds.public_id_of_item(index)) == index
  assert ds.item_index_of_public_id(np.int64(4)) == 0
  with pytest.raises(KeyError, match="public item id 7 is unknown"):
    ds.item_index_of_public_id(7)
  with pytest.raises(KeyError, match="public item id 0 is unknown"):
    ds.item_index_of_public_id(0)


@pytest.mark.parametrize("overrides,message", [
    ({"item_public_ids": np.array([1, 1, 2, 3, 4, 5], np.int64)}, "permutation of 1..6"),
    ({"item_public_ids": np.array([0, 1, 2, 3, 4, 5], np.int64)}, "permutation of 1..6"),
    ({"items": np.zeros(10, np.int64)}, "items: expected a 1-D int32 array"),
    ({"user_offsets": np.array([0, 5, 4, 10], np.int64)}, "user_offsets: expected non-decreasing"),
    ({"item_titles": ("a",)}, "item_titles: expected 6 titles"),
    ({"ratings": np.ones(9, np.float32)}, "same length"),
    ({"rating_scale": (5.0, 5.0)}, "rating_scale"),
    ({"user_raw_ids": ("a",)}, "user_raw_ids: expected 3 ids"),
    ({"item_id_style": "hex"}, r"RecDataset.item_id_style='hex': expected one of"),
])
def test_validation(overrides, message):
  with pytest.raises(ValueError, match=message):
    _dataset(**overrides)


def test_save_load_round_trip_with_awkward_strings(tmp_path):
  titles = ("Tab\there", "Back\\slash \\t literal", "New\nline", "Crème", "", "Plain")
  ds = _dataset(item_titles=titles, item_raw_ids=tuple(f"raw\t{i}" for i in range(6)),
                user_raw_ids=("u1", "u\\2", "u3"), info={"source": "unit test"})
  ds.save(tmp_path / "toy")
  loaded = dataset_lib.RecDataset.load(tmp_path / "toy")
  for field in ("item_public_ids", "user_offsets", "items", "ratings", "timestamps"):
    np.testing.assert_array_equal(getattr(loaded, field), getattr(ds, field))
    assert getattr(loaded, field).dtype == getattr(ds, field).dtype
  assert loaded.item_titles == titles
  assert loaded.item_raw_ids == ds.item_raw_ids and loaded.user_raw_ids == ds.user_raw_ids
  assert loaded.rating_scale == (1.0, 5.0) and loaded.name == "toy"
  assert loaded.info == {"source": "unit test"}
  meta = json.loads((tmp_path / "toy" / "meta.json").read_text())
  assert meta["format_version"] == dataset_lib.FORMAT_VERSION and meta["num_interactions"] == 10
  header = (tmp_path / "toy" / "items.tsv").read_text().splitlines()[0]
  assert header == "index\tpublic_id\traw_id\ttitle"


def test_without_titles_empties_every_title_and_counts_them(tmp_path):
  ds = _dataset()
  bare = ds.without_titles(name="toy_notitles")
  assert bare.item_titles == ("",) * ds.num_items and bare.name == "toy_notitles"
  assert bare.items is ds.items and bare.item_public_ids is ds.item_public_ids
  assert bare.info["titles_dropped"] == sum(1 for t in ds.item_titles if t) > 0
  assert ds.item_titles != bare.item_titles  # the original is untouched
  loaded = dataset_lib.load(dataset_lib.save(bare, tmp_path / "b"))
  assert loaded.item_titles == bare.item_titles and loaded.info == bare.info


def test_item_id_style_round_trips_and_defaults_to_digits(tmp_path):
  ds = _dataset()
  assert ds.item_id_style == "digits"
  atomic = ds.with_item_id_style("atomic")
  assert atomic.item_id_style == "atomic" and atomic.items is ds.items
  assert dataset_lib.load(dataset_lib.save(atomic, tmp_path / "a")).item_id_style == "atomic"
  path = dataset_lib.save(ds, tmp_path / "d")
  meta = json.loads((path / "meta.json").read_text())
  del meta["item_id_style"]  # files written before the field existed
  (path / "meta.json").write_text(json.dumps(meta))
  assert dataset_lib.load(path).item_id_style == "digits"


def test_save_load_without_ratings_or_raw_ids(tmp_path):
  ds = _dataset(ratings=np.full(10, np.nan, np.float32), rating_scale=None)
  loaded = dataset_lib.load(dataset_lib.save(ds, tmp_path / "d"))
  assert not loaded.has_ratings and np.isnan(loaded.ratings).all()
  assert loaded.item_raw_ids == () and loaded.user_raw_ids == ()


def test_save_replaces_an_existing_directory(tmp_path):
  dataset_lib.save(_dataset(), tmp_path / "d")
  (tmp_path / "d" / "stale.txt").write_text("old")
  dataset_lib.save(_dataset(lengths=(4,)), tmp_path / "d")
  assert not (tmp_path / "d" / "stale.txt").exists()
  assert dataset_lib.load(tmp_path / "d").num_users == 1
  assert [p.name for p in tmp_path.iterdir()] == ["d"]  # no temporary directory left


def test_load_rejects_other_format_versions_and_damaged_files(tmp_path):
  directory = dataset_lib.save(_dataset(), tmp_path / "d")
  meta = json.loads((directory / "meta.json").read_text())
  (directory / "meta.json").write_text(json.dumps(dict(meta, format_version=99)))
  with pytest.raises(ValueError, match="format_version 99 is not supported"):
    dataset_lib.load(directory)
  (directory / "meta.json").write_text(json.dumps(meta))
  lines = (directory / "items.tsv").read_text().splitlines()
  (directory / "items.tsv").write_text("\n".join(lines[:-1]) + "\n")
  with pytest.raises(ValueError, match=r"items.tsv: expected 6 rows \(meta.json\), got 5"):
    dataset_lib.load(directory)
  with pytest.raises(FileNotFoundError):
    dataset_lib.load(tmp_path / "missing")
