"""Tests for rec_t5x.experiments.vocab: embedding rows from a vocabulary size."""
import pytest

from rec_t5x.experiments import vocab


@pytest.mark.parametrize("size,rows", [(2389, 2432), (32100, 32128), (128, 128), (1, 128)])
def test_round_up_to_128(size, rows):
  assert vocab.round_up(size) == rows


def test_round_up_rejects_non_positive():
  with pytest.raises(ValueError, match=r"round_up\(0, 128\)"):
    vocab.round_up(0)
