"""Teacher-forced scoring for evaluation: ranking candidate items and expected ratings.

`score_candidates` ranks each example's candidate items (e.g. the target plus 99 sampled negatives)
by the model's log-likelihood of each candidate's target token sequence. The encoder runs once per
example; the candidates go through the decoder in chunks of `chunk_size` per example, one
teacher-forced decoder call per chunk (all target positions at once), with the encoder output
repeated for the chunk's rows. Memory per chunk is [batch * chunk_size, target_length, vocab]
float32 logits, so keep `batch * chunk_size * vocab` in mind with the 32k T5 vocabulary.

`expected_rating` reads the model's distribution over the rating strings ("1".."5"): when every
rating is one token after a shared prefix, from the logits at the first step after that prefix
(one decoder step); otherwise (e.g. half stars "3" / "3.5") from the teacher-forced likelihood of
each rating's whole sequence. It returns the expected value, the most likely rating, the
distribution renormalised over the ratings, and the probability mass the model put on them.

All scoring functions are pure (jit them through `rec_t5x.partitioning.Partitioner.partition`, see
the `compile_*` helpers); validate host inputs first with `check_candidates` and
`rec_t5x.beam_search.check_inputs` (which rejects examples with an empty encoder input).
"""
from collections.abc import Callable, Sequence
import dataclasses
import math
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from rec_t5x import item_trie
from rec_t5x.prompts import items as items_lib

Array = jax.Array


@flax.struct.dataclass
class CandidateScores:
  """Candidate log-likelihoods and the ranking they induce.

  Attributes:
    scores: float32 [batch, num_candidates], sum of target-token log-probabilities of each candidate
      (in input order); -inf for padding candidates (-1).
    ranked_items: int32 [batch, num_candidates], candidate item indices best first; padding (-1)
      last. Ties keep the input order (shuffle candidates if the target is always first).
    ranked_scores: float32 [batch, num_candidates], the scores in ranked order.
  """
  scores: Array
  ranked_items: Array
  ranked_scores: Array


def shift_right(targets: Array, start_id: int = 0) -> Array:
  """Decoder inputs from targets [..., length]: start id, then the targets without the last."""
  start = jnp.full(targets.shape[:-1] + (1,), start_id, targets.dtype)
  return jnp.concatenate([start, targets[..., :-1]], axis=-1)


def sequence_log_likelihood(logits: Array, targets: Array) -> Array:
  """float32 [...]: sum of log_softmax(logits)[target] over non-padding targets [..., length]."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  token = jnp.take_along_axis(log_probs, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  return jnp.sum(jnp.where(targets > 0, token, 0.0), axis=-1)


def _score_chunk(module: nn.Module, params: Any, encoded: Array, encoder_input_tokens: Array,
                 candidates: Array, item_tokens: Array) -> Array:
  """Log-likelihoods [batch, c] of candidates int [batch, c] (-1 -> -inf); encoded is per row."""
  batch, chunk = candidates.shape
  targets = item_tokens[jnp.maximum(candidates, 0)].reshape(batch * chunk, -1)
  logits = module.apply({"params": params}, encoded, encoder_input_tokens, shift_right(targets),
                        targets, method="decode")
  scores = sequence_log_likelihood(logits, targets).reshape(batch, chunk)
  return jnp.where(candidates >= 0, scores, -jnp.inf)


def score_candidates(module: nn.Module, params: Any, encoder_input_tokens: Array,
                     candidate_items: Array, item_tokens: Array, *,
                     chunk_size: int | None = None) -> CandidateScores:
  """Ranks each example's candidates by teacher-forced log-likelihood (pure, jit-able).

  Args:
    module: a `rec_t5x.network.Transformer`.
    params: its parameters.
    encoder_input_tokens: int [batch, enc_length].
    candidate_items: int [batch, num_candidates] item indices, -1 = padding.
    item_tokens: int [num_items, target_length] each item's target ids, EOS-terminated, 0 after
      (`ItemTrie.item_tokens`).
    chunk_size: candidates per example per decoder call (default all at once).

  Returns:
    `CandidateScores`.
  """
  batch, num = candidate_items.shape
  chunk = num if chunk_size is None else max(1, min(int(chunk_size), num))
  num_chunks = math.ceil(num / chunk)
  padded = jnp.pad(candidate_items.astype(jnp.int32), ((0, 0), (0, num_chunks * chunk - num)),
                   constant_values=-1)
  encoded = module.apply({"params": params}, encoder_input_tokens, method="encode")
  encoded_rows = jnp.repeat(encoded, chunk, axis=0)  # [batch * chunk, enc_length, emb]
  encoder_rows = jnp.repeat(encoder_input_tokens, chunk, axis=0)
  chunks = jnp.transpose(padded.reshape(batch, num_chunks, chunk), (1, 0, 2))
  per_chunk = jax.lax.map(
      lambda c: _score_chunk(module, params, encoded_rows, encoder_rows, c, item_tokens), chunks)
  scores = jnp.transpose(per_chunk, (1, 0, 2)).reshape(batch, num_chunks * chunk)[:, :num]
  order = jnp.argsort(-scores, axis=1, stable=True)
  return CandidateScores(scores=scores,
                         ranked_items=jnp.take_along_axis(candidate_items.astype(jnp.int32), order,
                                                          axis=1),
                         ranked_scores=jnp.take_along_axis(scores, order, axis=1))


def check_candidates(candidate_items: Any, num_items: int) -> None:
  """Host check of candidate item indices: int [batch, num_candidates] in [0, num_items) or -1.

  Raises:
    ValueError: naming the first bad [example, position] (out of the catalogue, repeated within its
      row) or an example with no candidate.
  """
  arr = np.asarray(candidate_items)
  if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
    raise ValueError(f"candidate_items: expected int [batch, num_candidates] item indices (-1 = "
                     f"padding), got {arr.dtype} {arr.shape}")
  bad = np.argwhere((arr < -1) | (arr >= num_items))
  if bad.size:
    b, k = map(int, bad[0])
    raise ValueError(f"candidate_items[{b}, {k}] = {int(arr[b, k])} is not an item of the "
                     f"catalogue (item indices 0..{num_items - 1}; -1 = padding)")
  empty = np.flatnonzero(~np.any(arr >= 0, axis=1))
  if empty.size:
    raise ValueError(f"candidate_items rows {empty[:10].tolist()} have no candidate (all -1)")
  for b, row in enumerate(arr):
    real = row[row >= 0]
    values, counts = np.unique(real, return_counts=True)
    if np.any(counts > 1):
      item = int(values[counts > 1][0])
      positions = np.flatnonzero(row == item).tolist()
      raise ValueError(f"candidate_items row {b} repeats item {item} at positions {positions}")


def candidate_items_from_tokens(trie: item_trie.ItemTrie,
                                candidates: Sequence[Sequence[Sequence[int]]]) -> np.ndarray:
  """Item indices int32 [batch, num_candidates] of candidate token sequences (EOS included).

  Raises:
    KeyError: naming [example][position] and the tokens of a candidate that is no catalogue item.
  """
  width = max((len(row) for row in candidates), default=0)
  out = np.full((len(candidates), width), -1, np.int32)
  for b, row in enumerate(candidates):
    for k, tokens in enumerate(row):
      out[b, k] = trie.item_index_or_raise(tokens, what=f"candidate [{b}][{k}]")
  return out


# --------------------------------------------------------------------------------------------------
# Ratings.


@dataclasses.dataclass(frozen=True)
class RatingTokens:
  """How the ratings are spelled in target tokens.

  Attributes:
    values: [R] rating values, e.g. (1.0, 2.0, 3.0, 4.0, 5.0).
    sequences: [R] token id tuples of each rating's target text, EOS included.
    prefix: tokens shared by every rating before they differ (e.g. a lone "▁" piece), forced.
    first_tokens: [R] the token right after `prefix` when that token alone names the rating (each
      rating is prefix + token + EOS); None otherwise (then whole sequences are scored).
  """
  values: tuple[float, ...]
  sequences: tuple[tuple[int, ...], ...]
  prefix: tuple[int, ...]
  first_tokens: tuple[int, ...] | None

  def __post_init__(self):
    if len(self.values) < 2:
      raise ValueError(f"RatingTokens.values={self.values!r}: expected at least 2 ratings")
    if len(self.sequences) != len(self.values):
      raise ValueError(f"RatingTokens.sequences has {len(self.sequences)} entries for "
                       f"{len(self.values)} values")
    if len(set(self.sequences)) != len(self.sequences):
      raise ValueError(f"RatingTokens.sequences={self.sequences!r}: two ratings have the same "
                       "tokens")
    if self.first_tokens is not None and len(set(self.first_tokens)) != len(self.values):
      raise ValueError(f"RatingTokens.first_tokens={self.first_tokens!r}: expected one distinct "
                       "token per rating")

  @property
  def single_step(self) -> bool:
    return self.first_tokens is not None

  def sequence_table(self) -> np.ndarray:
    """int32 [R, max_length] of the rating sequences, 0-padded (an `item_tokens` table)."""
    width = max(len(s) for s in self.sequences)
    table = np.zeros((len(self.sequences), width), np.int32)
    for i, seq in enumerate(self.sequences):
      table[i, :len(seq)] = seq
    return table


def rating_tokens(encode: Callable[[str], Sequence[int]], values: Sequence[float], *,
                  texts: Sequence[str] | None = None,
                  eos_id: int = item_trie.EOS_ID) -> RatingTokens:
  """Encodes the rating texts (default: the prompts' `format_rating`, "4", "3.5") for scoring.

  Args:
    encode: text -> token ids without EOS (a seqio vocabulary's `encode`).
    values: the rating values.
    texts: their target texts (default `rec_t5x.prompts.items.format_rating(value)`).
    eos_id: end-of-sequence id appended to each.

  Returns:
    `RatingTokens`; `first_tokens` is set when, after the longest shared prefix, each rating is a
    single distinct token followed by EOS.

  Raises:
    ValueError: non-finite or repeated values, texts of another length, or two ratings that
      encode to the same tokens (naming both).
  """
  values = tuple(float(v) for v in values)
  if any(not np.isfinite(v) for v in values) or len(set(values)) != len(values):
    raise ValueError(f"rating values {values}: expected distinct finite numbers")
  texts = [items_lib.format_rating(v) for v in values] if texts is None else list(texts)
  if len(texts) != len(values):
    raise ValueError(f"rating texts {texts}: expected one per value {values}")
  sequences = tuple(tuple(int(t) for t in encode(text)) + (eos_id,) for text in texts)
  for i, j in ((i, j) for i in range(len(values)) for j in range(i + 1, len(values))):
    if sequences[i] == sequences[j]:
      raise ValueError(f"ratings {texts[i]!r} and {texts[j]!r} both encode to {list(sequences[i])}")
  prefix_len = 0
  while all(len(s) > prefix_len + 1 for s in sequences) and len(
      {s[prefix_len] for s in sequences}) == 1:
    prefix_len += 1
  prefix = sequences[0][:prefix_len]
  rests = [s[prefix_len:] for s in sequences]
  single = all(len(r) == 2 for r in rests) and len({r[0] for r in rests}) == len(rests)
  return RatingTokens(values=values, sequences=sequences, prefix=prefix,
                      first_tokens=tuple(r[0] for r in rests) if single else None)


@flax.struct.dataclass
class RatingPrediction:
  """The model's rating distribution per example.

  Attributes:
    expected: float32 [batch], sum_r p(r) * value_r with p renormalised over the ratings.
    argmax: float32 [batch], the most likely rating value.
    probs: float32 [batch, R], p(r) renormalised over the ratings (order of `RatingTokens.values`).
    mass: float32 [batch], the probability the model gives the rating tokens before renormalising
      (near 1 for a model trained on the rating task).
  """
  expected: Array
  argmax: Array
  probs: Array
  mass: Array


def _first_step_log_probs(module: nn.Module, params: Any, encoder_input_tokens: Array,
                          rating: RatingTokens) -> Array:
  """log p(first token | prefix) [batch, R] from one teacher-forced decoder call."""
  batch = encoder_input_tokens.shape[0]
  targets = jnp.asarray(rating.prefix + (rating.first_tokens[0],), jnp.int32)
  targets = jnp.broadcast_to(targets, (batch, targets.shape[0]))
  logits = module.apply({"params": params}, encoder_input_tokens, shift_right(targets), targets)
  log_probs = jax.nn.log_softmax(logits[:, -1, :].astype(jnp.float32), axis=-1)
  return log_probs[:, jnp.asarray(rating.first_tokens, jnp.int32)]


def expected_rating(module: nn.Module, params: Any, encoder_input_tokens: Array,
                    rating: RatingTokens) -> RatingPrediction:
  """Expected and most likely rating under the model (pure, jit-able; see module docstring).

  Args:
    module: a `rec_t5x.network.Transformer`.
    params: its parameters.
    encoder_input_tokens: int [batch, enc_length].
    rating: from `rating_tokens`.

  Returns:
    `RatingPrediction`.
  """
  if rating.single_step:
    log_probs = _first_step_log_probs(module, params, encoder_input_tokens, rating)
  else:
    batch = encoder_input_tokens.shape[0]
    candidates = jnp.broadcast_to(jnp.arange(len(rating.values), dtype=jnp.int32),
                                  (batch, len(rating.values)))
    log_probs = score_candidates(module, params, encoder_input_tokens, candidates,
                                 jnp.asarray(rating.sequence_table())).scores
  values = jnp.asarray(rating.values, jnp.float32)
  probs = jax.nn.softmax(log_probs, axis=-1)
  return RatingPrediction(expected=probs @ values, argmax=values[jnp.argmax(log_probs, axis=-1)],
                          probs=probs, mass=jnp.sum(jnp.exp(log_probs), axis=-1))


# --------------------------------------------------------------------------------------------------
# Compiled entry points.


def compile_score_candidates(partitioner: Any, module: nn.Module, params_shardings: Any, *,
                             chunk_size: int | None = None):
  """Partitioned `score_candidates`: `fn(params, encoder_input_tokens, candidate_items,
  item_tokens) -> CandidateScores`, batch-sharded, `item_tokens` replicated.

  Call `beam_search.check_inputs` and `check_candidates` on host arrays first for readable errors.
  """
  batch = partitioner.batch_sharding

  def score(params, encoder_input_tokens, candidate_items, item_tokens):
    return score_candidates(module, params, encoder_input_tokens, candidate_items, item_tokens,
                            chunk_size=chunk_size)

  return partitioner.partition(score, in_shardings=(params_shardings, batch, batch,
                                                    partitioner.replicated),
                               out_shardings=batch)


def compile_expected_rating(partitioner: Any, module: nn.Module, params_shardings: Any,
                            rating: RatingTokens):
  """Partitioned `expected_rating`: `fn(params, encoder_input_tokens) -> RatingPrediction`."""
  batch = partitioner.batch_sharding

  def predict(params, encoder_input_tokens):
    return expected_rating(module, params, encoder_input_tokens, rating)

  return partitioner.partition(predict, in_shardings=(params_shardings, batch),
                               out_shardings=batch)

