"""Tests of rec_t5x.data.amazon on gzipped files in the 2014 and 2018 schemas."""
import json

import pytest

from rec_t5x.data import amazon
from rec_t5x.data import interactions
from tests.data import raw_files

REVIEWS = [
    raw_files.review("A1", "B001", 5.0, 1390176000),
    raw_files.review("A2", "B001", 4.0, 1390000000),
    raw_files.review("A1", "B002", 3.0, 1390262400),
]
META_2014 = [
    {"asin": "B001", "title": "Cr&egrave;me &amp; Co  Lip\tBalm", "price": 3.5,
     "related": {"also_bought": ["B002", "B999"]}, "salesRank": {"Beauty": 402875},
     "categories": [["Beauty", "Skin Care"]]},
    {"asin": "B002", "imUrl": "http://ecx.images-amazon.com/x.jpg",
     "categories": [["Beauty"]]},                                  # no title
    {"asin": "B999", "title": "Never reviewed"},
]


def test_2014_reviews_and_python_literal_metadata(tmp_path):
  reviews, meta = raw_files.write_amazon_2014(tmp_path, REVIEWS, META_2014)
  assert meta.read_bytes()[:2] == b"\x1f\x8b"
  with pytest.raises(ValueError):
    json.loads(repr(META_2014[0]))  # really not JSON: single quotes
  log = amazon.read_amazon(reviews, meta)
  assert log.users.tolist() == ["A1", "A2", "A1"]
  assert log.items.tolist() == ["B001", "B001", "B002"]
  assert log.ratings.tolist() == [5.0, 4.0, 3.0]
  assert log.timestamps.tolist() == [1390176000, 1390000000, 1390262400]
  assert log.titles == {"B001": "Cr&egrave;me &amp; Co  Lip\tBalm"}  # raw; processing cleans it
  assert log.report.count(interactions.UNKNOWN_ITEM_IN_METADATA) == 1
  assert log.rating_scale == (1.0, 5.0)


def test_2018_json_metadata_with_duplicates(tmp_path):
  reviews = raw_files.write_gz_lines(tmp_path / "Toys_and_Games_5.json.gz",
                                     [json.dumps(r) for r in REVIEWS])
  meta_rows = [{"asin": "B001", "title": "First", "also_buy": []},
               {"asin": "B001", "title": "Again", "also_buy": []},
               {"title": "No asin"},
               {"asin": "B002", "title": "Second &quot;quoted&quot;"}]
  meta = raw_files.write_gz_lines(tmp_path / "meta_Toys_and_Games.json.gz",
                                  [json.dumps(m) for m in meta_rows])
  log = amazon.read_amazon(reviews, meta)
  assert log.titles == {"B001": "First", "B002": "Second &quot;quoted&quot;"}
  assert log.report.count(interactions.DUPLICATE_METADATA) == 1
  assert log.report.count(interactions.MALFORMED_LINE) == 1
  assert f"{meta}:3: field 'asin'" in log.report.summary()


def test_malformed_reviews_bad_encoding_and_blank_lines(tmp_path):
  lines = [json.dumps(REVIEWS[0]),
           "{not json",                                                          # line 2
           json.dumps({k: v for k, v in REVIEWS[1].items() if k != "unixReviewTime"}),  # 3
           json.dumps(raw_files.review("A3", "B003", 9.0, 1)),                    # 4: out of range
           json.dumps(raw_files.review("A3", "B003", "x", 1)),                    # 5: bad rating
           "",                                                                    # 6: blank
           json.dumps(raw_files.review("A4", "B004", 2.0, 5), ensure_ascii=False)
           .encode("utf-8").replace(b"A name", b"A n\xffme"),                     # 7: bad byte
           "[1, 2]"]                                                              # 8: not a dict
  reviews = raw_files.write_gz_lines(tmp_path / "reviews_Beauty_5.json.gz", lines)
  log = amazon.read_amazon(reviews)
  assert log.users.tolist() == ["A1", "A4"]
  report = log.report
  assert report.count(interactions.MALFORMED_LINE) == 4
  assert report.count(interactions.RATING_OUT_OF_RANGE) == 1
  assert report.count(interactions.BLANK_LINE) == 1
  assert report.count(interactions.BAD_ENCODING) == 1
  summary = report.summary()
  assert f"{reviews}:2: neither JSON nor a Python literal" in summary
  assert f"{reviews}:3: field 'unixReviewTime': expected an integer, got None" in summary
  assert f"{reviews}:5: field 'overall': expected a number, got 'x'" in summary
  assert f"{reviews}:8: expected an object, got list" in summary
  with pytest.raises(ValueError, match=r"reviews_Beauty_5.json.gz:2: neither JSON"):
    amazon.read_amazon(reviews, strict=True)


def test_metadata_is_never_evaluated(tmp_path, monkeypatch):
  reviews = raw_files.write_gz_lines(tmp_path / "r.json.gz", [json.dumps(REVIEWS[0])])
  calls = []
  monkeypatch.setattr("os.system", lambda *a: calls.append(a))
  meta = raw_files.write_gz_lines(
      tmp_path / "m.json.gz",
      ["{'asin': 'B001', 'title': __import__('os').system('echo hacked')}"])
  log = amazon.read_amazon(reviews, meta)
  assert calls == [] and log.titles == {}
  assert log.report.count(interactions.MALFORMED_LINE) == 1


def test_parse_record_accepts_json_and_python_literals():
  assert amazon.parse_record('{"a": 1}') == {"a": 1}
  assert amazon.parse_record("{'a': (1, 2), 'b': None}") == {"a": (1, 2), "b": None}
  with pytest.raises(ValueError, match="expected an object"):
    amazon.parse_record("'text'")


def test_expected_file_names():
  names_2014 = amazon.expected_files("Beauty", "2014")
  assert names_2014.reviews == ("reviews_Beauty_5.json.gz", "reviews_Beauty.json.gz")
  assert names_2014.meta == "meta_Beauty.json.gz"
  names_2018 = amazon.expected_files(amazon.CATEGORIES["sports"]["2018"], 2018)
  assert names_2018.reviews == ("Sports_and_Outdoors_5.json.gz", "Sports_and_Outdoors.json.gz")
  assert names_2018.meta == "meta_Sports_and_Outdoors.json.gz"
  with pytest.raises(ValueError, match=r"release: expected one of \('2014', '2018'\), got '2020'"):
    amazon.expected_files("Beauty", "2020")


def test_reviews_without_any_valid_line_raise(tmp_path):
  reviews = raw_files.write_gz_lines(tmp_path / "r.json.gz", ["{}"])
  with pytest.raises(ValueError, match="no valid review found"):
    amazon.read_amazon(reviews)
