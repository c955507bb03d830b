"""Tests of rec_t5x.data.interactions: ReadReport and InteractionLog."""
import numpy as np
import pytest

from rec_t5x.data import interactions


def test_report_counts_and_keeps_first_examples():
  report = interactions.ReadReport()
  for line in range(1, 9):
    report.add(interactions.MALFORMED_LINE, f"f.tsv:{line}", "expected 4 fields")
  report.add(interactions.BAD_ENCODING, "f.tsv:3")
  assert report.count(interactions.MALFORMED_LINE) == 8
  assert report.count(interactions.BLANK_LINE) == 0
  assert report.examples[interactions.MALFORMED_LINE] == [
      f"f.tsv:{n}: expected 4 fields" for n in range(1, interactions.MAX_EXAMPLES + 1)]
  assert report.num_skipped == 8  # bad_encoding is a repair, not a skip
  summary = report.summary()
  assert "malformed_line: 8" in summary and "f.tsv:1: expected 4 fields" in summary
  assert "f.tsv:6" not in summary


def test_report_merge_adds_counts_and_does_not_mutate():
  a = interactions.ReadReport()
  a.add(interactions.BLANK_LINE, "a:1")
  b = interactions.ReadReport()
  b.add(interactions.BLANK_LINE, "b:7", count=3)
  b.add(interactions.DUPLICATE_EVENT, "processing", count=2)
  merged = a.merge(b)
  assert merged.counts == {interactions.BLANK_LINE: 4, interactions.DUPLICATE_EVENT: 2}
  assert merged.examples[interactions.BLANK_LINE] == ["a:1", "b:7"]
  assert a.counts == {interactions.BLANK_LINE: 1}


def test_report_json_round_trip():
  report = interactions.ReadReport()
  report.add(interactions.MISSING_TITLE, "processing", "items 'x'", count=2)
  again = interactions.ReadReport.from_json(report.to_json())
  assert again.counts == report.counts and again.examples == report.examples
  assert interactions.ReadReport().summary() == "no problems found"


def test_strict_report_raises_for_skips_only():
  report = interactions.ReadReport(strict=True)
  report.add(interactions.BAD_ENCODING, "f:2")  # a repair: still counted
  with pytest.raises(ValueError, match=r"f:9: expected 4 fields"):
    report.add(interactions.MALFORMED_LINE, "f:9", "expected 4 fields")


def test_make_log_numbers_events_in_file_order():
  log = interactions.make_log(["u1", "u2"], ["i1", "i1"], [1.0, np.nan], [5, 3], titles={"i1": "T"},
                              source="test", rating_scale=(1.0, 5.0),
                              report=interactions.ReadReport())
  assert len(log) == 2 and log.has_ratings
  assert log.order.tolist() == [0, 1] and log.order.dtype == np.int64
  assert log.users.dtype == object and log.users.tolist() == ["u1", "u2"]
  assert log.ratings.dtype == np.float32 and np.isnan(log.ratings[1])


def test_log_rejects_wrong_dtypes_and_lengths():
  good = dict(users=np.array(["a"], dtype=object), items=np.array(["b"], dtype=object),
              ratings=np.ones(1, np.float32), timestamps=np.zeros(1, np.int64),
              order=np.zeros(1, np.int64), titles={}, source="t")
  interactions.InteractionLog(**good)
  with pytest.raises(ValueError, match="timestamps: expected a 1-D int64"):
    interactions.InteractionLog(**dict(good, timestamps=np.zeros(1, np.float32)))
  with pytest.raises(ValueError, match="ratings: length 2"):
    interactions.InteractionLog(**dict(good, ratings=np.ones(2, np.float32)))
  with pytest.raises(ValueError, match="rating_scale"):
    interactions.InteractionLog(**dict(good, rating_scale=(5.0, 1.0)))


def test_collect_titles_counts_unknown_duplicate_and_placeholder():
  report = interactions.ReadReport()
  entries = [("a", "Alpha", "m:1"), ("z", "Zed", "m:2"), ("a", "Other", "m:3"),
             ("b", "unknown", "m:4"), ("c", None, "m:5"), ("d", "  ", "m:6")]
  titles = interactions.collect_titles(entries, known_items={"a", "b", "c", "d"}, report=report)
  assert titles == {"a": "Alpha"}
  assert report.counts == {interactions.UNKNOWN_ITEM_IN_METADATA: 1,
                           interactions.DUPLICATE_METADATA: 1,
                           interactions.PLACEHOLDER_TITLE: 1}
  assert report.examples[interactions.UNKNOWN_ITEM_IN_METADATA] == ["m:2: item 'z' has no events"]
