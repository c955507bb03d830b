"""Tests of rec_t5x.data.processing: dedupe, k-core, ordering, public ids, titles."""
import numpy as np
import pytest

from rec_t5x.data import interactions
from rec_t5x.data import movielens
from rec_t5x.data import processing
from tests.data import raw_files


def _log(events, titles=None, rating_scale=(1.0, 5.0)):
  """events: (user, item, rating, timestamp) in file order."""
  users, items, ratings, timestamps = zip(*events) if events else ((), (), (), ())
  return interactions.make_log(list(users), list(items), list(ratings), list(timestamps),
                               titles=titles or {}, source="test", rating_scale=rating_scale,
                               report=interactions.ReadReport())


def _raw_sequences(ds):
  """user raw id -> list of (item raw id, rating) in dataset order."""
  return {ds.user_raw_ids[u]: [(ds.item_raw_ids[i], float(r))
                               for i, r in zip(ds.sequence(u), ds.sequence_ratings(u))]
          for u in range(ds.num_users)}


def test_iterative_k_core_needs_several_rounds():
  # A chain u1-i1-... that unravels one link per side per round, plus a stable 2x2 core.
  chain = [("u1", "i1"), ("u1", "i2"), ("u2", "i2"), ("u2", "i3"), ("u3", "i3"), ("u3", "i4"),
           ("u4", "i4")]
  core = [("u6", "i8"), ("u6", "i9"), ("u7", "i8"), ("u7", "i9")]
  events = [(u, i, 3.0, t) for t, (u, i) in enumerate(chain + core)]
  ds = processing.process(_log(events), processing.ProcessingConfig(k_core=2))
  assert sorted(ds.user_raw_ids) == ["u6", "u7"] and sorted(ds.item_raw_ids) == ["i8", "i9"]
  assert ds.num_interactions == 4
  # Round 1 drops u4 (1 event) and i1 (1 event); round 2 u1 and i4; round 3 i2 and u3; round 4 u2.
  assert ds.info["k_core_rounds"] == 4
  report = interactions.ReadReport.from_json(ds.info["report"])
  assert report.count(interactions.K_CORE_REMOVED) == 7
  # A single pass would have kept the chain's middle: the iteration matters.
  single_pass_users = {"u1", "u2", "u3"}
  assert not single_pass_users & set(ds.user_raw_ids)


def test_k_core_result_has_at_least_k_events_per_user_and_item():
  rng = np.random.default_rng(0)
  events = [(f"u{u}", f"i{i}", 1.0, t) for t, (u, i) in
            enumerate(zip(rng.zipf(1.6, 3000) % 200, rng.zipf(1.4, 3000) % 300))]
  ds = processing.process(_log(events), processing.ProcessingConfig(k_core=5, dedupe="keep_all"))
  assert ds.sequence_lengths().min() >= 5
  assert np.bincount(ds.items, minlength=ds.num_items).min() >= 5


def test_chronological_order_exact_timestamps_then_file_order(tmp_path):
  log = movielens.read_recbole(*raw_files.write_recbole_100k(tmp_path))
  ds = processing.process(log, processing.ProcessingConfig())
  # User 1: item 2 at ...949, then items 3 and 1 at ...950 in file order (float32 would tie all).
  assert [i for i, _ in _raw_sequences(ds)["1"]] == ["2", "3", "1"]
  assert [i for i, _ in _raw_sequences(ds)["2"]] == ["1", "3", "2"]
  for u in range(ds.num_users):
    assert np.all(np.diff(ds.sequence_timestamps(u)) >= 0)


@pytest.mark.parametrize("policy,expected,removed", [
    ("first", [("i1", 1.0), ("i2", 2.0)], 2),
    ("last", [("i2", 2.0), ("i1", 5.0)], 2),
    ("keep_all", [("i1", 1.0), ("i2", 2.0), ("i1", 4.0), ("i1", 5.0)], 0),
])
def test_dedupe_policies(policy, expected, removed):
  # File order differs from time order: the (u1, i1) events happen at t=10, 30 and 40.
  events = [("u1", "i1", 5.0, 40), ("u1", "i1", 1.0, 10), ("u1", "i2", 2.0, 20),
            ("u1", "i1", 4.0, 30), ("u2", "i1", 3.0, 5)]
  ds = processing.process(_log(events), processing.ProcessingConfig(dedupe=policy))
  assert _raw_sequences(ds)["u1"] == expected
  report = interactions.ReadReport.from_json(ds.info["report"])
  assert report.count(interactions.DUPLICATE_EVENT) == removed
  if removed:
    assert "user 'u1', item 'i1': 3 events" in report.summary()


def test_exact_duplicate_at_same_time_keeps_the_file_order_first():
  events = [("u1", "i1", 2.0, 10), ("u1", "i1", 4.0, 10), ("u1", "i2", 3.0, 11)]
  first = processing.process(_log(events), processing.ProcessingConfig(dedupe="first"))
  last = processing.process(_log(events), processing.ProcessingConfig(dedupe="last"))
  assert _raw_sequences(first)["u1"] == [("i1", 2.0), ("i2", 3.0)]
  assert _raw_sequences(last)["u1"] == [("i1", 4.0), ("i2", 3.0)]


def test_min_rating_removes_and_counts():
  events = [("u1", "i1", 1.0, 1), ("u1", "i2", 4.0, 2), ("u2", "i1", 5.0, 3)]
  ds = processing.process(_log(events), processing.ProcessingConfig(min_rating=4.0))
  assert ds.num_interactions == 2 and ds.num_items == 2
  report = interactions.ReadReport.from_json(ds.info["report"])
  assert report.count(interactions.BELOW_MIN_RATING) == 1
  no_ratings = _log([("u", "i", np.nan, 1)], rating_scale=None)
  with pytest.raises(ValueError, match="min_rating=4.0: the source has no ratings"):
    processing.process(no_ratings, processing.ProcessingConfig(min_rating=4.0))


def test_public_ids_are_a_seeded_permutation_not_order_of_appearance():
  events = [(f"u{t % 7}", f"i{t}", 3.0, t) for t in range(60)]
  ds = processing.process(_log(events), processing.ProcessingConfig(item_id_seed=3))
  first_seen = [ds.item_raw_ids.index(f"i{t}") for t in range(60)]
  assert first_seen == list(range(60))  # internal indices follow first appearance
  assert sorted(ds.item_public_ids.tolist()) == list(range(1, 61))
  assert ds.item_public_ids.tolist() != list(range(1, 61))
  # Far from monotone in order of appearance (a leak would give correlation 1).
  assert abs(np.corrcoef(np.arange(60), ds.item_public_ids)[0, 1]) < 0.5
  again = processing.process(_log(events), processing.ProcessingConfig(item_id_seed=3))
  other = processing.process(_log(events), processing.ProcessingConfig(item_id_seed=4))
  np.testing.assert_array_equal(ds.item_public_ids, again.item_public_ids)
  assert ds.item_public_ids.tolist() != other.item_public_ids.tolist()


def test_titles_are_cleaned_and_missing_ones_counted():
  long_title = "Super Soft Bamboo Brush Set with Travel Pouch for Every Skin Type"
  events = [("u", "a", 3.0, 1), ("u", "b", 3.0, 2), ("u", "c", 3.0, 3)]
  titles = {"a": "  Cr&egrave;me &amp;amp; Co\n\tLip   Balm ", "b": long_title}
  ds = processing.process(_log(events, titles), processing.ProcessingConfig(title_max_chars=30))
  by_raw = dict(zip(ds.item_raw_ids, ds.item_titles))
  assert by_raw["a"] == "Crème & Co Lip Balm"
  assert by_raw["b"] == "Super Soft Bamboo Brush Set"
  assert by_raw["c"] == ""
  report = interactions.ReadReport.from_json(ds.info["report"])
  assert report.count(interactions.MISSING_TITLE) == 1
  assert report.count(interactions.TITLE_TRUNCATED) == 1


@pytest.mark.parametrize("raw,max_chars,expected,cut", [
    ("a b c", 10, "a b c", False),
    ("alpha beta gamma", 10, "alpha beta", True),
    ("alpha beta gamma", 11, "alpha beta", True),
    ("alpha, beta gamma", 8, "alpha", True),          # trailing separator removed
    ("Supercalifragilistic", 5, "Super", True),       # one long word: hard cut
    ("A&nbsp;B", 10, "A B", False),                   # non-breaking space collapsed
    ("Tom &amp;amp; Jerry", 20, "Tom & Jerry", False),  # doubly escaped
])
def test_clean_title(raw, max_chars, expected, cut):
  assert processing.clean_title(raw, max_chars) == (expected, cut)
  assert "..." not in processing.clean_title(raw, max_chars)[0]


@pytest.mark.parametrize("kwargs,message", [
    ({"k_core": -1}, r"ProcessingConfig.k_core: expected an int >= 0, got -1"),
    ({"dedupe": "newest"}, r"ProcessingConfig.dedupe: expected one of .*got 'newest'"),
    ({"item_id_seed": 1.5}, r"ProcessingConfig.item_id_seed"),
    ({"title_max_chars": 0}, r"ProcessingConfig.title_max_chars: expected an int >= 1, got 0"),
    ({"min_rating": "4"}, r"ProcessingConfig.min_rating"),
])
def test_config_validation(kwargs, message):
  with pytest.raises(ValueError, match=message):
    processing.ProcessingConfig(**kwargs)


def test_config_json_round_trip():
  config = processing.ProcessingConfig(k_core=5, min_rating=3.5, dedupe="last", item_id_seed=9)
  assert processing.ProcessingConfig.from_json(config.to_json()) == config


def test_nothing_left_raises():
  with pytest.raises(ValueError, match="no event is left"):
    processing.process(_log([("u", "i", 3.0, 1)]), processing.ProcessingConfig(k_core=2))


def test_reader_report_is_carried_into_the_dataset(tmp_path):
  data, item = raw_files.write_grouplens_100k(tmp_path, extra_data_lines=["bad line"])
  ds = processing.process(movielens.read_grouplens_100k(data, item),
                          processing.ProcessingConfig())
  report = interactions.ReadReport.from_json(ds.info["report"])
  assert report.count(interactions.MALFORMED_LINE) == 1
  assert ds.info["processing"] == processing.ProcessingConfig().to_json()
