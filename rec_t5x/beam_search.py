"""Batched beam search with the key/value cache, optionally constrained to the item catalogue.

A generative recommender is evaluated over the whole catalogue: constrained mode walks the
`rec_t5x.item_trie` trie, so every returned sequence is a real item, and the K returned items of
an example are distinct (each finished hypothesis is a distinct path of the trie). Items of a
per-example exclusion list (the user's history) are masked at their EOS edge, so they can never be
completed; a beam whose prefix only leads to excluded items simply has no continuation (its
candidates score -inf and other hypotheses take its slot), and when fewer than K items can be
completed the missing slots come back as invalid (`valid` False, item -1, log-prob -inf). No beam
can dead-lock. (Masking at the leaf keeps the per-example state at [batch, num_items] bools; the
price is that a hypothesis inside a sub-tree whose items are all excluded holds its beam slot until
it reaches the EOS step, where it dies.)

Search (per example, `beam_size` = W hypotheses, length limit L):
  * step t feeds each alive hypothesis's last token through the cached decoder (rows = batch * W;
    the encoder ran once per example; the per-hypothesis self-attention cache is tiled W times,
    while the example-level entries, `BEAM_INVARIANT_CACHE_KEYS`, keep one row per example and the
    network's cross-attention attends from all W hypotheses of an example to that one copy);
  * EOS candidates become finished hypotheses (score = log-prob, or log-prob / ((5 + length) / 6) **
    alpha with length normalisation); the best W finished are kept;
  * non-EOS candidates (trie children in constrained mode; otherwise every token but EOS and
    padding) compete for the W alive slots by log-probability; the cache rows follow their parents;
  * an example stops once its K-th finished score beats every alive hypothesis's best possible
    score; the loop stops when all examples have, or at L.
Log-probabilities are the model's own (softmax over the whole vocabulary, not renormalised over the
allowed tokens), so they equal the teacher-forced log-likelihood of the returned sequence.

Everything here is a pure function of (params, inputs): `compile_beam_search` hands it to the
`rec_t5x.partitioning.Partitioner` (the one place that jits), with the batch sharded like training.
Written here rather than reusing T5X's beam search, which is neither installable here nor aware of a
trie or of exclusions.
"""
import dataclasses
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from rec_t5x import decoding
from rec_t5x import item_trie

Array = jax.Array
NEG_INF = decoding.NEG_INF
_INVALID_BELOW = NEG_INF / 2  # log-probs below this mark impossible hypotheses
# Cache entries of `rec_t5x.network` that depend only on the example, not on the hypothesis: the
# projected encoder keys / values of cross-attention and the encoder padding mask. They are neither
# tiled nor reordered: `rec_t5x.layers.MultiHeadDotProductAttention` groups the batch * W query
# rows by example in cross-attention decode steps, so the encoder-sized keys / values are read once
# per example instead of W times per step.
BEAM_INVARIANT_CACHE_KEYS = ("encoder_decoder_attention", "encoder_valid")


@dataclasses.dataclass(frozen=True)
class BeamSearchConfig:
  """Beam search settings.

  Attributes:
    beam_size: hypotheses kept per example (W), >= top_k.
    top_k: finished sequences returned per example, best first.
    max_decode_length: generated tokens at most, EOS included; None: the longest catalogue item
      (constrained mode); required in unconstrained mode.
    alpha: length normalisation exponent (finished score = log-prob / ((5 + length) / 6) ** alpha);
      0 (default) ranks by log-probability, right for item IDs of similar lengths.
    constrained: restrict outputs to catalogue items (needs a trie).
    eos_id: end-of-sequence id.
    start_id: decoder start id (0 for T5).
    pad_id: padding id; never generated.
  """
  beam_size: int = 20
  top_k: int = 20
  max_decode_length: int | None = None
  alpha: float = 0.0
  constrained: bool = True
  eos_id: int = item_trie.EOS_ID
  start_id: int = 0
  pad_id: int = item_trie.PAD_ID

  def __post_init__(self):
    def check_int(name, low, high=None):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < low or (
          high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"BeamSearchConfig.{name}={value!r}: expected an integer {bound}")

    check_int("beam_size", 1)
    check_int("top_k", 1, self.beam_size)
    if self.max_decode_length is not None:
      check_int("max_decode_length", 1)
    if not isinstance(self.alpha, (int, float)) or not 0.0 <= self.alpha < float("inf"):
      raise ValueError(f"BeamSearchConfig.alpha={self.alpha!r}: expected a finite float >= 0")
    for name in ("eos_id", "start_id", "pad_id"):
      check_int(name, 0)
    if self.eos_id == self.pad_id:
      raise ValueError(f"BeamSearchConfig.eos_id={self.eos_id}: must differ from pad_id")


@flax.struct.dataclass
class BeamSearchOutput:
  """Top-K finished sequences per example, best first.

  Attributes:
    sequences: int32 [batch, top_k, length], generated ids with EOS, 0 after it (0 when invalid).
    log_probs: float32 [batch, top_k], sum of token log-probabilities (-inf when invalid).
    scores: float32 [batch, top_k], the ranking score (= log_probs unless alpha > 0).
    items: int32 [batch, top_k], catalogue item index (-1 when invalid or without a trie).
    valid: bool [batch, top_k], False for slots no hypothesis could fill.
  """
  sequences: Array
  log_probs: Array
  scores: Array
  items: Array
  valid: Array


@flax.struct.dataclass
class _State:
  step: Array               # int32 scalar: tokens generated by the alive hypotheses
  alive_tokens: Array       # int32 [B, W, L]
  alive_log_probs: Array    # float32 [B, W]
  alive_nodes: Array        # int32 [B, W] trie node (0 when unconstrained)
  finished_tokens: Array    # int32 [B, W, L]
  finished_log_probs: Array  # float32 [B, W]
  finished_scores: Array    # float32 [B, W], sorted descending
  finished_items: Array     # int32 [B, W]
  cache: Any                # decoder cache, rows B * W


def length_penalty(length: Array | int, alpha: float) -> Array:
  """((5 + length) / 6) ** alpha (Wu et al., 2016); 1 when alpha is 0."""
  return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


def _gather_beams(x: Array, parents: Array) -> Array:
  """Rows of x [B * W, ...] reordered by the parents int [B, W'] of each example: [B * W', ...]."""
  batch, width = parents.shape
  per_example = x.reshape((batch, x.shape[0] // batch) + x.shape[1:])
  picked = jax.vmap(lambda rows, idx: rows[idx])(per_example, parents)
  return picked.reshape((batch * width,) + x.shape[1:])


def _is_invariant(path: Any, x: Array, invariant_keys: tuple[str, ...]) -> bool:
  """Whether a cache entry is a scalar or lies under one of `invariant_keys`."""
  return jnp.ndim(x) == 0 or bool({getattr(k, "key", None) for k in path} & set(invariant_keys))


def _tile_cache(cache: Any, width: int, invariant_keys: tuple[str, ...]) -> Any:
  """Repeats each per-hypothesis cache row `width` times; example-level entries stay as they are."""
  def tile(path, x):
    return x if _is_invariant(path, x, invariant_keys) else decoding.repeat_batch(x, width)
  return jax.tree_util.tree_map_with_path(tile, cache)


def _reorder_cache(cache: Any, parents: Array, invariant_keys: tuple[str, ...]) -> Any:
  """Cache rows follow their parent hypotheses [B, W], except example-level entries.

  Entries under a key in `invariant_keys` hold one row per example (see `_tile_cache`), which no
  reordering within the example changes.
  """
  def reorder(path, x):
    return x if _is_invariant(path, x, invariant_keys) else _gather_beams(x, parents)
  return jax.tree_util.tree_map_with_path(reorder, cache)


def _take(x: Array, index: Array) -> Array:
  """x [B, N, ...] indexed along axis 1 by index [B, M] -> [B, M, ...]."""
  return jax.vmap(lambda rows, idx: rows[idx])(x, index)


def _finish(state: _State, log_probs: Array, config: BeamSearchConfig,
            trie: item_trie.TrieArrays | None, excluded: Array | None) -> tuple[Array, ...]:
  """Merges this step's EOS candidates into the finished set; returns its new arrays."""
  alive_ok = state.alive_log_probs > _INVALID_BELOW
  eos_lp = state.alive_log_probs + log_probs[..., config.eos_id]
  if trie is not None and config.constrained:
    items = item_trie.eos_edge(trie, state.alive_nodes, config.eos_id)
    ok = alive_ok & (items >= 0)
    if excluded is not None:
      ok &= ~_take(excluded, jnp.maximum(items, 0))
  else:
    ok = alive_ok
    items = jnp.full(alive_ok.shape, -1, jnp.int32)
  new_lp = jnp.where(ok, eos_lp, NEG_INF)
  new_scores = jnp.where(ok, eos_lp / length_penalty(state.step + 1, config.alpha), NEG_INF)
  new_tokens = jax.lax.dynamic_update_slice_in_dim(
      state.alive_tokens, jnp.full(alive_ok.shape + (1,), config.eos_id, jnp.int32), state.step,
      axis=2)
  scores = jnp.concatenate([state.finished_scores, new_scores], axis=1)
  top_scores, top = jax.lax.top_k(scores, config.beam_size)
  pick = lambda old, new: _take(jnp.concatenate([old, new], axis=1), top)
  return (pick(state.finished_tokens, new_tokens), pick(state.finished_log_probs, new_lp),
          top_scores, pick(state.finished_items, items))


def _extend(state: _State, log_probs: Array, config: BeamSearchConfig,
            trie: item_trie.TrieArrays | None,
            blocked: Array | None = None) -> tuple[Array, Array, Array, Array]:
  """Best W non-EOS continuations: (parents [B, W], tokens [B, W], log-probs [B, W], nodes).

  `blocked` (bool [B, num_nodes], `item_trie.blocked_nodes`) prunes continuations into branches
  whose items are all excluded, so they never take a beam slot.
  """
  batch, width, vocab = log_probs.shape
  alive_ok = (state.alive_log_probs > _INVALID_BELOW)[..., None]
  if trie is not None and config.constrained:
    tokens, next_nodes, valid = item_trie.children(trie, state.alive_nodes)  # [B, W, C]
    token_lp = jnp.take_along_axis(log_probs, jnp.maximum(tokens, 0), axis=-1)
    ok = valid & (tokens != config.eos_id) & alive_ok
    if blocked is not None:
      flat = jnp.maximum(next_nodes, 0).reshape(batch, -1)
      ok &= ~jnp.take_along_axis(blocked, flat, axis=1).reshape(next_nodes.shape)
  else:
    tokens = jnp.broadcast_to(jnp.arange(vocab, dtype=jnp.int32), log_probs.shape)
    next_nodes = jnp.zeros(log_probs.shape, jnp.int32)
    token_lp = log_probs
    ok = (tokens != config.eos_id) & (tokens != config.pad_id) & alive_ok
  candidates = jnp.where(ok, state.alive_log_probs[..., None] + token_lp, NEG_INF)
  num = candidates.shape[-1]
  top_lp, flat = jax.lax.top_k(candidates.reshape(batch, width * num), width)
  pick = lambda x: jnp.take_along_axis(x.reshape(batch, width * num), flat, axis=1)
  return flat // num, pick(tokens), top_lp, pick(next_nodes)


def _done(state: _State, config: BeamSearchConfig, length: int) -> Array:
  """bool [B]: no alive hypothesis can still enter an example's top-K."""
  best_alive = jnp.max(state.alive_log_probs, axis=1)
  bound = best_alive / length_penalty(length, config.alpha)
  bound = jnp.where(best_alive > _INVALID_BELOW, bound, NEG_INF)
  return state.finished_scores[:, config.top_k - 1] >= bound


def _decode_length(config: BeamSearchConfig, trie: item_trie.TrieArrays | None) -> int:
  if config.constrained:
    if trie is None:
      raise ValueError("BeamSearchConfig.constrained=True needs the item trie (TrieArrays); pass "
                       "one or set constrained=False")
    if config.max_decode_length is None:
      return trie.max_length
    if config.max_decode_length < trie.max_length:
      raise ValueError(f"BeamSearchConfig.max_decode_length={config.max_decode_length} is shorter "
                       f"than the longest catalogue item ({trie.max_length} tokens with EOS); such "
                       "items could never be produced")
    return config.max_decode_length
  if config.max_decode_length is None:
    raise ValueError("BeamSearchConfig.max_decode_length is required when constrained=False")
  return config.max_decode_length


def _check_exclusions(config: BeamSearchConfig, trie: item_trie.TrieArrays | None,
                      excluded_items: Array | None) -> None:
  if excluded_items is not None and not (config.constrained and trie is not None):
    raise ValueError("excluded_items needs constrained decoding with a trie")


def beam_search(tokens_to_logits: decoding.TokensToLogits, cache: Any, batch_size: int,
                config: BeamSearchConfig, trie: item_trie.TrieArrays | None = None,
                excluded_items: Array | None = None, *,
                beam_invariant_cache_keys: tuple[str, ...] = BEAM_INVARIANT_CACHE_KEYS
                ) -> BeamSearchOutput:
  """Beam search over any cached model step (pure, jit-able; see the module docstring).

  Args:
    tokens_to_logits: the model step for rows `batch_size * beam_size`, with a cache of at least
      the decode length (`config.max_decode_length`, else the trie's longest item).
    cache: the decoder cache for `batch_size` rows. Entries outside `beam_invariant_cache_keys` are
      tiled to `beam_size` rows per example here; entries under them keep `batch_size` rows, so
      `tokens_to_logits` must broadcast them over the beams of each example (row b*W + w is beam w
      of example b), as rec_t5x.network's decoder does.
    batch_size: examples.
    config: search settings.
    trie: catalogue trie; required when `config.constrained`; otherwise only used to name the items
      of unconstrained outputs (-1 for sequences that are no item).
    excluded_items: optional int [batch, max_excluded] item indices (padding -1) that must not be
      returned (constrained mode only).
    beam_invariant_cache_keys: cache sub-trees that only depend on the example (never tiled nor
      reordered). Pass () for a step function that needs every entry at `batch_size * beam_size`
      rows.

  Returns:
    The `BeamSearchOutput`.
  """
  length = _decode_length(config, trie)
  _check_exclusions(config, trie, excluded_items)
  batch, width = batch_size, config.beam_size
  excluded = (None if excluded_items is None
              else item_trie.excluded_mask(excluded_items, trie.num_items))
  blocked = None if excluded is None else item_trie.blocked_nodes(trie, excluded)
  cache = _tile_cache(cache, width, beam_invariant_cache_keys)
  first_alive = jnp.where(jnp.arange(width) == 0, 0.0, NEG_INF).astype(jnp.float32)
  state = _State(
      step=jnp.array(0, jnp.int32),
      alive_tokens=jnp.zeros((batch, width, length), jnp.int32),
      alive_log_probs=jnp.broadcast_to(first_alive, (batch, width)),
      alive_nodes=jnp.full((batch, width), item_trie.ROOT, jnp.int32),
      finished_tokens=jnp.zeros((batch, width, length), jnp.int32),
      finished_log_probs=jnp.full((batch, width), NEG_INF, jnp.float32),
      finished_scores=jnp.full((batch, width), NEG_INF, jnp.float32),
      finished_items=jnp.full((batch, width), -1, jnp.int32),
      cache=cache)

  def cond(state: _State) -> Array:
    return (state.step < length) & ~jnp.all(_done(state, config, length))

  def body(state: _State) -> _State:
    previous = jax.lax.dynamic_index_in_dim(state.alive_tokens, jnp.maximum(state.step - 1, 0),
                                            axis=2, keepdims=False)
    last = jnp.where(state.step == 0, config.start_id, previous)
    logits, cache = tokens_to_logits(last.reshape(batch * width, 1).astype(jnp.int32), state.cache)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1).reshape(batch, width, -1)
    fin_tokens, fin_lp, fin_scores, fin_items = _finish(state, log_probs, config, trie, excluded)
    parents, tokens, alive_lp, nodes = _extend(state, log_probs, config, trie, blocked)
    alive_tokens = jax.lax.dynamic_update_slice_in_dim(
        _take(state.alive_tokens, parents), tokens[..., None], state.step, axis=2)
    cache = _reorder_cache(cache, parents, beam_invariant_cache_keys)
    return _State(step=state.step + 1, alive_tokens=alive_tokens, alive_log_probs=alive_lp,
                  alive_nodes=nodes, finished_tokens=fin_tokens, finished_log_probs=fin_lp,
                  finished_scores=fin_scores, finished_items=fin_items, cache=cache)

  state = jax.lax.while_loop(cond, body, state)
  return _output(state, config, trie)


def _output(state: _State, config: BeamSearchConfig,
            trie: item_trie.TrieArrays | None) -> BeamSearchOutput:
  k = config.top_k
  log_probs = state.finished_log_probs[:, :k]
  valid = log_probs > _INVALID_BELOW
  sequences = jnp.where(valid[..., None], state.finished_tokens[:, :k], 0)
  items = state.finished_items[:, :k]
  if trie is not None and not config.constrained:
    items = item_trie.item_of_sequence(trie, sequences)
  return BeamSearchOutput(sequences=sequences,
                          log_probs=jnp.where(valid, log_probs, -jnp.inf),
                          scores=jnp.where(valid, state.finished_scores[:, :k], -jnp.inf),
                          items=jnp.where(valid, items, -1), valid=valid)


def beam_search_network(module: nn.Module, params: Any, encoder_input_tokens: Array,
                        config: BeamSearchConfig, trie: item_trie.TrieArrays | None = None,
                        excluded_items: Array | None = None) -> BeamSearchOutput:
  """Encodes once per example, builds the decoder cache and runs `beam_search` (pure, jit-able).

  Args:
    module: a `rec_t5x.network.Transformer`.
    params: its parameters.
    encoder_input_tokens: int [batch, enc_length] (0 = padding; every row needs a token).
    config: search settings.
    trie: catalogue trie (`ItemTrie.arrays()`).
    excluded_items: optional int [batch, max_excluded] item indices, -1 padded.

  Returns:
    The `BeamSearchOutput`.
  """
  length = _decode_length(config, trie)
  _check_exclusions(config, trie, excluded_items)
  encoded = module.apply({"params": params}, encoder_input_tokens, method="encode")
  cache = decoding.init_decoder_cache(module, params, encoded, encoder_input_tokens, length)
  step_fn = decoding.network_tokens_to_logits(module, params, length)
  return beam_search(step_fn, cache, encoder_input_tokens.shape[0], config, trie, excluded_items)


def check_inputs(encoder_input_tokens: Any, excluded_items: Any = None,
                 trie: item_trie.ItemTrie | item_trie.TrieArrays | None = None, *,
                 vocab_size: int | None = None) -> None:
  """Host-side checks before a (compiled) search; jit cannot raise on values.

  Args:
    encoder_input_tokens: int [batch, enc_length].
    excluded_items: optional int [batch, max_excluded] item indices, -1 padded.
    trie: the catalogue (needed with `excluded_items`).
    vocab_size: when given, token ids must be below it (an out-of-range id gives NaN logits, and
      a search over NaN returns only invalid slots).

  Raises:
    ValueError: a non-2-D or non-integer `encoder_input_tokens`, an id out of range, a row with no
      token (an example without history / prompt: the decoder would attend to nothing), or bad
      `excluded_items`.
  """
  tokens = np.asarray(encoder_input_tokens)
  if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
    raise ValueError(f"encoder_input_tokens: expected int [batch, enc_length], got {tokens.dtype} "
                     f"{tokens.shape}")
  limit = np.iinfo(np.int32).max if vocab_size is None else vocab_size
  bad = np.argwhere((tokens < 0) | (tokens >= limit))
  if bad.size:
    b, k = map(int, bad[0])
    raise ValueError(f"encoder_input_tokens[{b}, {k}] = {int(tokens[b, k])}: expected ids in "
                     f"[0, {limit})")
  empty = np.flatnonzero(~np.any(tokens > 0, axis=1))
  if empty.size:
    raise ValueError(f"encoder_input_tokens rows {empty[:10].tolist()} are all padding (no history "
                     "or prompt); drop those examples before decoding")
  if excluded_items is not None:
    if trie is None:
      raise ValueError("excluded_items given without the item trie")
    item_trie.check_excluded_items(excluded_items, trie.num_items)
    if np.asarray(excluded_items).shape[0] != tokens.shape[0]:
      raise ValueError(f"excluded_items has {np.asarray(excluded_items).shape[0]} rows for "
                       f"{tokens.shape[0]} examples")


def compile_beam_search(partitioner: Any, module: nn.Module, config: BeamSearchConfig,
                        params_shardings: Any, *, with_exclusions: bool = False):
  """The partitioned (jit-compiled) search: `fn(params, encoder_input_tokens, trie, excluded)`.

  The batch (and the output) is sharded along 'batch' like training batches, the trie arrays are
  replicated, the parameters keep `params_shardings`. Shapes select the compilation, so use a fixed
  batch size (pad the last batch) and a fixed encoder length.

  Args:
    partitioner: a `rec_t5x.partitioning.Partitioner`.
    module: the `Transformer`.
    config: search settings (static).
    params_shardings: NamedSharding tree of the parameters (as for the train state).
    with_exclusions: whether calls pass `excluded_items` (int [batch, max_excluded]).

  Returns:
    A `PartitionedFunction` `(params, encoder_input_tokens, trie_arrays, excluded_items) ->
    BeamSearchOutput`; pass `trie_arrays=None` when `config.constrained` is False and no trie is
    wanted, and `excluded_items=None` unless `with_exclusions`. Call `check_inputs` on host arrays
    first for readable errors.
  """
  batch = partitioner.batch_sharding
  replicated = partitioner.replicated

  def search(params, encoder_input_tokens, trie, excluded_items):
    return beam_search_network(module, params, encoder_input_tokens, config, trie,
                               excluded_items if with_exclusions else None)

  return partitioner.partition(search,
                               in_shardings=(params_shardings, batch, replicated,
                                             batch if with_exclusions else replicated),
                               out_shardings=batch)
