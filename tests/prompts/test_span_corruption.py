"""Word-level T5 span corruption."""
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from rec_t5x.prompts import span_corruption


@given(length=st.integers(2, 300), density=st.floats(0.01, 0.99), mean=st.floats(1.0, 10.0),
       seed=st.integers(0, 2**32 - 1))
@settings(max_examples=100, deadline=None)
def test_noise_mask_counts(length, density, mean, seed):
  mask = span_corruption.noise_mask(length, density, mean, np.random.default_rng(seed))
  num_noise = int(mask.sum())
  assert num_noise == min(max(round(length * density), 1), length - 1)
  assert not mask[0]  # kept words come first, as in T5
  starts = np.flatnonzero(mask & ~np.concatenate([[False], mask[:-1]]))
  expected_spans = min(max(round(num_noise / mean), 1), num_noise, length - num_noise, 99)
  assert len(starts) == max(1, expected_spans)


def test_noise_mask_needs_two_words():
  with pytest.raises(ValueError, match="at least 2 corruptible words, got 1"):
    span_corruption.noise_mask(1, 0.5, 3.0, np.random.default_rng(0))


def _reconstruct(corrupted: str, targets: str) -> str:
  """An independent inverse: split the target on sentinels and substitute."""
  pieces = re.split(r"<extra_id_\d+>", targets)
  spans = [p.strip() for p in pieces[1:-1]]
  for i, span in enumerate(spans):
    corrupted = corrupted.replace(f"<extra_id_{i}>", span, 1)
  return corrupted


@given(segments=st.lists(st.lists(st.sampled_from(["a", "bb", "c3", "(x)", "Dd"]), min_size=1,
                                  max_size=6), min_size=1, max_size=8),
       seed=st.integers(0, 2**32 - 1), protect_first=st.booleans())
@settings(max_examples=100, deadline=None)
def test_corrupt_round_trip_and_target_format(segments, seed, protect_first):
  corruptible = [[not (protect_first and w == 0) for w in range(len(s))] for s in segments]
  if sum(map(sum, corruptible)) < 2:
    return
  pieces, targets = span_corruption.corrupt(segments, corruptible, 0.3, 2.0, np.random.default_rng(seed))
  sentinels = [int(i) for i in re.findall(r"<extra_id_(\d+)>", targets)]
  assert sentinels == list(range(len(sentinels))) and len(sentinels) >= 2
  assert targets.endswith(f"<extra_id_{sentinels[-1]}>")
  assert [int(i) for i in re.findall(r"<extra_id_(\d+)>", " ".join(pieces))] == sentinels[:-1]
  for piece, words in zip(pieces, segments):
    if "<extra_id_" not in piece:
      assert piece == " ".join(words)
  joined = " | ".join(pieces)
  assert _reconstruct(joined, targets) == " | ".join(" ".join(s) for s in segments)
  assert span_corruption.fill_spans(joined, targets) == " | ".join(" ".join(s) for s in segments)
  if protect_first:
    for piece, words in zip(pieces, segments):
      assert piece.split(" ")[0] == words[0]


def test_fill_spans_rejects_mismatched_sentinels():
  with pytest.raises(ValueError, match="do not match"):
    span_corruption.fill_spans("a <extra_id_1> b", "<extra_id_0> x <extra_id_1>")
  with pytest.raises(ValueError, match="is not"):
    span_corruption.fill_spans("a <extra_id_0>", "x <extra_id_0> y")


def test_sentinel_range():
  assert span_corruption.sentinel(99) == "<extra_id_99>"
  with pytest.raises(ValueError, match=r"outside \[0, 99\]"):
    span_corruption.sentinel(100)
