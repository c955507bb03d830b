"""Tests of rec_t5x.data.tabular: the generic CSV/TSV reader and its building blocks."""
import gzip

import numpy as np
import pytest

from rec_t5x.data import interactions
from rec_t5x.data import tabular

MAPPING = tabular.ColumnMapping(user="user", item="item", rating="stars", timestamp="time",
                                title="name")


def _write(path, text, encoding="utf-8"):
  path.write_bytes(text.encode(encoding))
  return path


def test_csv_with_header_names_quotes_and_titles(tmp_path):
  path = _write(tmp_path / "log.csv",
                "time,user,item,stars,name\n"
                "100,u1,i1,4,\"Toys, Games & More\"\n"
                "90,u2,i1,5,\"Toys, Games & More\"\n"
                "95,u1,i2,3.5,Plain\n")
  log = tabular.read_table(path, MAPPING, rating_scale=(1.0, 5.0))
  assert log.users.tolist() == ["u1", "u2", "u1"]
  assert log.items.tolist() == ["i1", "i1", "i2"]
  np.testing.assert_array_equal(log.ratings, np.array([4, 5, 3.5], np.float32))
  assert log.timestamps.tolist() == [100, 90, 95] and log.timestamps.dtype == np.int64
  assert log.titles == {"i1": "Toys, Games & More", "i2": "Plain"}
  assert log.rating_scale == (1.0, 5.0)
  assert not log.report.counts


def test_tsv_by_index_without_header_or_rating(tmp_path):
  path = _write(tmp_path / "log.tsv", "a\tx\t7\nb\ty\t8\n")
  log = tabular.read_table(path, tabular.ColumnMapping(user=0, item=1, timestamp=2),
                           delimiter="\t", header=False)
  assert log.users.tolist() == ["a", "b"] and log.timestamps.tolist() == [7, 8]
  assert np.isnan(log.ratings).all() and log.rating_scale is None and not log.has_ratings


def test_bad_rows_are_skipped_and_reported_with_file_line_and_column(tmp_path):
  path = _write(tmp_path / "log.csv",
                "user,item,stars,time\n"
                "u1,i1,4,100\n"
                "u1,i2,four,101\n"       # line 3: bad rating
                "u1,i3,4\n"              # line 4: missing field
                "\n"                     # line 5: blank
                "u2,i1,9,102\n"          # line 6: out of range
                "u2,i2,3,1e3x\n"         # line 7: bad timestamp
                ",i2,3,104\n"            # line 8: empty user
                "u2,i3,nan,105\n"        # line 9: NaN rating
                "u3,i1,2,106.0\n")       # line 10: integral float timestamp is accepted
  mapping = tabular.ColumnMapping(user="user", item="item", rating="stars", timestamp="time")
  log = tabular.read_table(path, mapping, rating_scale=(1.0, 5.0))
  assert log.users.tolist() == ["u1", "u3"] and log.timestamps.tolist() == [100, 106]
  report = log.report
  assert report.count(interactions.MALFORMED_LINE) == 5
  assert report.count(interactions.BLANK_LINE) == 1
  assert report.count(interactions.RATING_OUT_OF_RANGE) == 1
  text = report.summary()
  assert f"{path}:3: field 3 ('stars'): expected a numeric rating, got 'four'" in text
  assert f"{path}:4: expected 4 fields separated by ',', got 3" in text
  assert f"{path}:6: field 3 ('stars'): rating '9' outside [1, 5]" in text
  assert f"{path}:7: field 4 ('time'): expected an integer timestamp, got '1e3x'" in text
  assert f"{path}:8: field 1 ('user'): empty id" in text
  assert f"{path}:9: field 3 ('stars'): expected a numeric rating, got 'nan'" in text


def test_strict_mode_raises_at_the_first_bad_line(tmp_path):
  path = _write(tmp_path / "log.csv", "user,item\nu1,i1\nu2\n")
  with pytest.raises(ValueError, match=r"log.csv:3: expected 2 fields"):
    tabular.read_table(path, tabular.ColumnMapping(user="user", item="item"), strict=True)


def test_unknown_column_name_names_file_and_header(tmp_path):
  path = _write(tmp_path / "log.csv", "user,item\nu1,i1\n")
  with pytest.raises(ValueError, match=r"log.csv:1: column rating='stars' is not in the header"):
    tabular.read_table(path, tabular.ColumnMapping(user="user", item="item", rating="stars"),
                       rating_scale=(1.0, 5.0))
  rated = _write(tmp_path / "rated.csv", "user,item,stars\nu1,i1,3\n")
  with pytest.raises(ValueError, match="rated.csv: rating_scale is required"):
    tabular.read_table(rated, tabular.ColumnMapping(user=0, item=1, rating=2))
  with pytest.raises(ValueError, match="column timestamp=5 is out of range"):
    tabular.read_table(path, tabular.ColumnMapping(user=0, item=1, timestamp=5))


def test_column_mapping_validation():
  with pytest.raises(ValueError, match=r"ColumnMapping.user: expected a column index >= 0, got -1"):
    tabular.ColumnMapping(user=-1, item=1)
  with pytest.raises(ValueError, match="ColumnMapping.rating"):
    tabular.ColumnMapping(user=0, item=1, rating=1.5)
  with pytest.raises(ValueError, match="each column may be used once"):
    tabular.ColumnMapping(user=0, item=0)


def test_bad_encoding_is_repaired_and_counted(tmp_path):
  path = tmp_path / "log.csv"
  path.write_bytes(b"user,item,name\nu1,i1,Caf\xe9\nu2,i2,ok\n")  # latin-1 byte in a UTF-8 file
  log = tabular.read_table(path, tabular.ColumnMapping(user="user", item="item", title="name"))
  assert log.titles["i1"] == "Caf\ufffd" and len(log) == 2
  assert log.report.count(interactions.BAD_ENCODING) == 1
  assert f"{path}:2: byte b'\\xe9'" in log.report.summary()


def test_gzip_crlf_and_bom(tmp_path):
  path = tmp_path / "log.tsv.gz"
  path.write_bytes(gzip.compress("\ufeffuser\titem\r\nu1\ti1\r\nu2\ti2\r\n".encode("utf-8")))
  log = tabular.read_table(path, tabular.ColumnMapping(user="user", item="item"), delimiter="\t")
  assert log.users.tolist() == ["u1", "u2"] and log.items.tolist() == ["i1", "i2"]


def test_multi_character_delimiter_and_unicode_line_separators(tmp_path):
  # U+2028 inside a field must not split the line (str.splitlines would).
  path = _write(tmp_path / "x.dat", "1::a\u2028b::3\n2::c::4\n")
  report = interactions.ReadReport()
  fields = tabular.split_fields(path, delimiter="::", header=False, encoding="utf-8",
                                report=report, quotechar=None)
  assert fields.columns == [["1", "2"], ["a\u2028b", "c"], ["3", "4"]]
  assert fields.line_numbers.tolist() == [1, 2]


def test_conflicting_titles_keep_the_first(tmp_path):
  path = _write(tmp_path / "log.csv", "u,i,t\na,x,First\nb,x,Second\n")
  log = tabular.read_table(path, tabular.ColumnMapping(user="u", item="i", title="t"))
  assert log.titles == {"x": "First"}
  assert log.report.count(interactions.DUPLICATE_METADATA) == 1


def test_file_without_valid_events_raises_with_the_report(tmp_path):
  path = _write(tmp_path / "log.csv", "user,item\nonly-one-field\n")
  with pytest.raises(ValueError, match=r"(?s)no valid event found.*malformed_line: 1"):
    tabular.read_table(path, tabular.ColumnMapping(user="user", item="item"))


def test_quoted_fields_without_header_and_multiline_quotes(tmp_path):
  # The field count comes from the parsed rows, not from counting raw commas.
  path = _write(tmp_path / "log.csv", 'a,"x, y, z",3\nb,w,4\nc,"open\nquote",5\n')
  log = tabular.read_table(path, tabular.ColumnMapping(user=0, item=1, timestamp=2), header=False)
  assert log.items.tolist() == ["x, y, z", "w"]
  assert log.report.count(interactions.MALFORMED_LINE) == 2  # a quote spanning lines 3-4
