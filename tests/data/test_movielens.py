"""Tests of rec_t5x.data.movielens on small files in the real RecBole and GroupLens layouts."""
import numpy as np
import pytest

from rec_t5x.data import interactions
from rec_t5x.data import movielens
from tests.data import raw_files


def _events(log):
  return list(zip(log.users.tolist(), log.items.tolist(), log.ratings.tolist(),
                  log.timestamps.tolist()))


def test_recbole_100k_events_and_titles(tmp_path):
  inter, item = raw_files.write_recbole_100k(tmp_path)
  log = movielens.read_recbole(inter, item)
  assert _events(log) == [(u, i, float(r), t) for u, i, r, t in raw_files.EVENTS]
  assert log.timestamps.dtype == np.int64
  assert log.titles == {"1": "Toy Story (1995)", "2": "Misérables, Les (1995)",
                        "3": "GoldenEye (1995)"}
  assert log.rating_scale == (1.0, 5.0)
  assert not log.report.counts


def test_recbole_item_quirks_are_counted(tmp_path):
  # The real ml-100k.item has item 267 titled "unkonwn" (year "unkonwn") and item 1412 with the
  # year "V" and the year already in its title; a row for an item without events is ignored.
  movies = dict(raw_files.MOVIES)
  movies["3"] = ("unkonwn", "unkonwn")
  movies["2"] = ("Land Before Time III: The Time of the Great Giving (1995)", "V")
  inter, item = raw_files.write_recbole_100k(tmp_path, movies=movies,
                                             extra_item_lines=["99\tNo Events\t1990\tDrama"])
  log = movielens.read_recbole(inter, item)
  assert log.titles == {"1": "Toy Story (1995)",
                        "2": "Land Before Time III: The Time of the Great Giving (1995)"}
  assert log.report.count(interactions.PLACEHOLDER_TITLE) == 1
  assert log.report.count(interactions.UNKNOWN_ITEM_IN_METADATA) == 1
  assert f"{item}:5: item '99' has no events" in log.report.summary()


def test_recbole_1m_crlf_item_id_is_the_title(tmp_path):
  inter, item = raw_files.write_recbole_1m(tmp_path)
  log = movielens.read_recbole(inter, item, title_from_item_id=True)
  assert log.users.tolist()[:2] == ["1m_1", "1m_2"]
  assert log.items[0] == "GoldenEye (1995)"
  assert log.titles["Misérables, Les (1995)"] == "Misérables, Les (1995)"
  assert log.timestamps.tolist() == [t for *_, t in raw_files.EVENTS]
  assert not log.report.counts


def test_recbole_header_without_item_id_names_the_file(tmp_path):
  path = tmp_path / "x.inter"
  path.write_text("user_id:token\tmovie:token\nu\ti\n")
  with pytest.raises(ValueError, match=r"x.inter:1: RecBole header .* has no 'item_id' column"):
    movielens.read_recbole(path)


def test_timestamps_are_exact_integers(tmp_path):
  # Near-ties that float32 would merge, and millisecond times beyond 2**31.
  events = [("1", "1", 3, 881250949), ("1", "2", 3, 881250950), ("1", "3", 3, 1_700_000_000_123)]
  inter, item = raw_files.write_recbole_100k(tmp_path, events=events)
  log = movielens.read_recbole(inter, item)
  assert log.timestamps.tolist() == [881250949, 881250950, 1_700_000_000_123]
  assert np.float32(881250949) == np.float32(881250950)  # what RecBole's float32 would do


def test_grouplens_100k_latin1_and_malformed_lines(tmp_path):
  data, item = raw_files.write_grouplens_100k(
      tmp_path, extra_data_lines=["4\t1\t3", "4\t2\tx\t881250000", "4\t3\t7\t881250000"])
  log = movielens.read_grouplens_100k(data, item)
  assert _events(log) == [(u, i, float(r), t) for u, i, r, t in raw_files.EVENTS]
  assert log.titles["2"] == "Misérables, Les (1995)"  # latin-1 é decoded
  n = len(raw_files.EVENTS)
  assert log.report.count(interactions.MALFORMED_LINE) == 2
  assert log.report.count(interactions.RATING_OUT_OF_RANGE) == 1
  summary = log.report.summary()
  assert f"{data}:{n + 1}: expected 4 fields separated by '\\t', got 3" in summary
  assert f"{data}:{n + 2}: field 3: expected a numeric rating, got 'x'" in summary
  assert f"{data}:{n + 3}: field 3: rating '7' outside [1, 5]" in summary


def test_grouplens_1m_double_colon_and_latin1(tmp_path):
  ratings, movies = raw_files.write_grouplens_1m(tmp_path)
  log = movielens.read_grouplens_1m(ratings, movies)
  assert _events(log) == [(u, i, float(r), t) for u, i, r, t in raw_files.EVENTS]
  assert log.titles["2"] == "Misérables, Les (1995)"
  assert not log.report.counts


def test_both_sources_agree(tmp_path):
  recbole = movielens.read_recbole(*raw_files.write_recbole_100k(tmp_path / "r"))
  grouplens = movielens.read_grouplens_100k(*raw_files.write_grouplens_100k(tmp_path / "g"))
  assert _events(recbole) == _events(grouplens)
  assert recbole.titles == grouplens.titles


@pytest.mark.parametrize("movie_title,year,expected", [
    ("Toy Story", "1995", "Toy Story (1995)"),
    ("Toy Story", "1995.0", "Toy Story (1995)"),
    ("Already (1995)", "1995", "Already (1995)"),
    ("Odd", "V", "Odd"),
    ("No Year", "", "No Year"),
])
def test_recbole_title(movie_title, year, expected):
  assert movielens.recbole_title(movie_title, year) == expected
