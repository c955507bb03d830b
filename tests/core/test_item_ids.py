"""Tests for rec_t5x.item_ids: spelling, parsing and dataset-variant names of item-ID styles."""
import pytest

from rec_t5x import item_ids


def test_format_and_parse_round_trip_in_both_styles():
  for public_id in (1, 7, 42, 4821):
    assert item_ids.format_id(public_id) == str(public_id)
    assert item_ids.format_id(public_id, "atomic") == f"<i{public_id}>"
    for style in item_ids.STYLES:
      assert item_ids.parse_id(item_ids.format_id(public_id, style)) == public_id


def test_parse_rejects_what_is_not_one_id():
  for token in ("", "abc", "<i>", "<i12", "i12>", "<j12>", "<i-3>", "12.5", "<i12>x", "-4"):
    assert item_ids.parse_id(token) is None, token
  assert item_ids.parse_id("+12") == 12


def test_atomic_symbols_cover_the_catalogue():
  assert item_ids.atomic_symbols(3) == ["<i1>", "<i2>", "<i3>"]
  assert item_ids.atomic_symbols(0) == []
  with pytest.raises(ValueError, match="num_items"):
    item_ids.atomic_symbols(-1)


def test_variant_names_round_trip():
  assert item_ids.variant_name("ml100k", "digits") == "ml100k"
  assert item_ids.variant_name("ml100k", "atomic") == "ml100k_atomic"
  assert item_ids.split_variant("ml100k_atomic") == ("ml100k", "atomic")
  assert item_ids.split_variant("ml100k") == ("ml100k", "digits")
  assert item_ids.split_variant("_atomic") == ("_atomic", "digits")


def test_variants_without_titles_keep_their_base_and_style():
  assert item_ids.variant_name("ml1m", "atomic", titles=False) == "ml1m_atomic_notitles"
  assert item_ids.variant_name("ml1m", "digits", titles=False) == "ml1m_notitles"
  assert item_ids.parse_variant("ml1m_atomic_notitles") == item_ids.Variant("ml1m", "atomic", False)
  assert item_ids.parse_variant("ml1m_notitles") == item_ids.Variant("ml1m", "digits", False)
  assert item_ids.parse_variant("ml1m_atomic") == item_ids.Variant("ml1m", "atomic", True)
  assert item_ids.split_variant("ml1m_atomic_notitles") == ("ml1m", "atomic")
  # The suffixes only count after a name, and titles come last.
  assert item_ids.parse_variant("_notitles") == item_ids.Variant("_notitles", "digits", True)
  assert item_ids.parse_variant("_atomic_notitles") == item_ids.Variant("_atomic", "digits", False)
  assert item_ids.parse_variant("ml1m_notitles_atomic") == item_ids.Variant(
      "ml1m_notitles", "atomic", True)
  for name in ("ml1m", "ml1m_atomic", "ml1m_notitles", "ml1m_atomic_notitles"):
    assert item_ids.parse_variant(name).name == name


def test_errors_name_the_parameter_and_the_choices():
  with pytest.raises(ValueError, match=r"item_id_style='hex': expected one of \('digits', 'atomic'\)"):
    item_ids.format_id(3, "hex")
  with pytest.raises(ValueError, match="public item IDs are >= 1; got 0"):
    item_ids.format_id(0)
