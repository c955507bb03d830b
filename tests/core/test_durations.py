"""Tests for rec_t5x.durations."""
import pytest

from rec_t5x import durations


@pytest.mark.parametrize("seconds,text", [(5.4, "5s"), (6.4, "6s"), (65, "1m05s"), (245, "4m05s"),
                                          (3723, "1h02m03s"), (float("inf"), "?"),
                                          (float("nan"), "?"), (-1, "?"), (None, "?")])
def test_format_duration(seconds, text):
  assert durations.format_duration(seconds) == text
