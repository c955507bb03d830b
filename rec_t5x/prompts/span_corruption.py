"""Word-level T5 span corruption (written here; T5's own version works on token ids).

T5 pre-training replaces random spans of the input with sentinels and asks for the spans back:

    input:  "Toy <extra_id_0> (1995); 12: Heat <extra_id_1>"
    target: "<extra_id_0> Story <extra_id_1> (1995) <extra_id_2>"

The target lists each sentinel followed by the words it replaced, in order, and ends with one more
sentinel. We corrupt whole *words* of the rendered history instead of SentencePiece tokens, because
the vocabulary is trained after the samples are rendered and the words are what carry item
knowledge. Which words may be corrupted is the caller's choice (MLM corrupts title words and keeps
item IDs intact); a span never crosses a protected word or a segment (item) boundary, so every span
is a run of consecutive words of one item and `fill_spans(inputs, targets)` restores the text
exactly.

Noise layout, as in T5: num_noise = round(density * n) corrupted words (1 .. n-1),
num_spans = round(num_noise / mean_span_length) spans (at least 1), the noise and the kept words
are each cut into num_spans random non-empty pieces, and the pieces alternate starting with kept
words.
"""
import re

import numpy as np

MAX_SENTINELS = 100  # T5 vocabularies carry <extra_id_0> .. <extra_id_99>.
_SENTINEL_RE = re.compile(r"<extra_id_(\d+)>")


def sentinel(index: int) -> str:
  """The T5 sentinel token text `<extra_id_{index}>`."""
  if not 0 <= index < MAX_SENTINELS:
    raise ValueError(f"sentinel index {index} outside [0, {MAX_SENTINELS - 1}]")
  return f"<extra_id_{index}>"


def _random_segmentation(total: int, num_pieces: int, rng: np.random.Generator) -> np.ndarray:
  """Splits `total` into `num_pieces` positive integers (uniform over compositions): int [num_pieces]."""
  if num_pieces == 1:
    return np.asarray([total])
  cuts = np.sort(rng.choice(np.arange(1, total), size=num_pieces - 1, replace=False))
  return np.diff(np.concatenate([[0], cuts, [total]]))


def noise_mask(length: int, noise_density: float, mean_span_length: float, rng: np.random.Generator,
               max_spans: int = MAX_SENTINELS - 1) -> np.ndarray:
  """T5-style random-span noise mask over `length` corruptible words.

  Args:
    length: number of corruptible words, >= 2.
    noise_density: share of words to corrupt, in (0, 1).
    mean_span_length: mean noise span length in words.
    rng: numpy Generator.
    max_spans: at most this many spans.

  Returns:
    bool [length]; True marks a corrupted word. At least one word is corrupted and one kept.
  """
  if length < 2:
    raise ValueError(f"span corruption needs at least 2 corruptible words, got {length}")
  num_noise = int(np.clip(round(length * noise_density), 1, length - 1))
  num_spans = int(np.clip(round(num_noise / mean_span_length), 1, min(num_noise, length - num_noise)))
  num_spans = max(1, min(num_spans, max_spans))
  noise = _random_segmentation(num_noise, num_spans, rng)
  kept = _random_segmentation(length - num_noise, num_spans, rng)
  mask = np.zeros([length], bool)
  start = 0
  for keep_len, noise_len in zip(kept, noise):
    start += keep_len
    mask[start:start + noise_len] = True
    start += noise_len
  return mask


def corrupt(segments: list[list[str]], corruptible: list[list[bool]], noise_density: float,
            mean_span_length: float, rng: np.random.Generator) -> tuple[list[str], str]:
  """Span-corrupts the corruptible words of a list of word segments.

  Args:
    segments: words per segment (one segment per item), e.g. [["4821:", "Toy", "Story"], ...].
    corruptible: same shape; True where the word may be corrupted.
    noise_density: share of corruptible words to corrupt.
    mean_span_length: mean span length in words.
    rng: numpy Generator.

  Returns:
    (corrupted_segments, targets): each segment's text with every span replaced by its sentinel,
    and the T5 target "<extra_id_0> span0 <extra_id_1> span1 ... <extra_id_k>".
  """
  flat = [(s, w) for s, words in enumerate(segments) for w in range(len(words)) if corruptible[s][w]]
  # Span splits at segment boundaries can add up to (segments - 1) spans: keep the total <= 99.
  max_spans = MAX_SENTINELS - 1 - (len(segments) - 1)
  if max_spans < 1:
    raise ValueError(f"span corruption of {len(segments)} segments may need more than "
                     f"{MAX_SENTINELS - 1} sentinels")
  mask = noise_mask(len(flat), noise_density, mean_span_length, rng, max_spans=max_spans)
  noisy = {flat[i] for i in np.flatnonzero(mask)}
  pieces, spans = [], []
  for s, words in enumerate(segments):
    out = []
    previous_noisy = False
    for w, word in enumerate(words):
      if (s, w) in noisy:
        if not previous_noisy:
          out.append(sentinel(len(spans)))
          spans.append([])
        spans[-1].append(word)
        previous_noisy = True
      else:
        out.append(word)
        previous_noisy = False
    pieces.append(" ".join(out))
  targets = " ".join(f"{sentinel(i)} {' '.join(span)}" for i, span in enumerate(spans))
  return pieces, f"{targets} {sentinel(len(spans))}"


def fill_spans(corrupted: str, targets: str) -> str:
  """Inverse of `corrupt`: puts each target span back in place of its sentinel.

  Args:
    corrupted: text containing `<extra_id_i>` sentinels.
    targets: "<extra_id_0> span0 <extra_id_1> span1 ... <extra_id_k>".

  Returns:
    The uncorrupted text. Raises ValueError when the sentinels of the two texts do not match.
  """
  parts = _SENTINEL_RE.split(targets)
  # parts = [prefix, idx0, span0, idx1, span1, ..., idxk, suffix]
  if parts[0].strip() or parts[-1].strip() or len(parts) < 3:
    raise ValueError(f"span-corruption target {targets!r} is not '<extra_id_0> ... <extra_id_k>'")
  indices = [int(i) for i in parts[1::2]]
  if indices != list(range(len(indices))):
    raise ValueError(f"span-corruption target {targets!r}: sentinels out of order")
  spans = {i: span.strip() for i, span in zip(indices[:-1], parts[2::2])}
  found = [int(i) for i in _SENTINEL_RE.findall(corrupted)]
  if found != indices[:-1]:
    raise ValueError(f"sentinels {found} of the corrupted text do not match the target's {indices[:-1]}")
  return _SENTINEL_RE.sub(lambda m: spans[int(m.group(1))], corrupted)
