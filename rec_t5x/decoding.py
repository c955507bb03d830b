"""Incremental (cached) autoregressive decoding: greedy and temperature / top-k / top-p sampling.

The search functions see the model only through a `TokensToLogits` callable
`(token_ids [batch, 1], cache) -> (logits [batch, vocab], new_cache)`, as in T5X, so they are pure,
`jit`-able (one `lax.while_loop`, static shapes) and model-agnostic. `network_tokens_to_logits` and
`init_decoder_cache` adapt `rec_t5x.network.Transformer`'s decode mode; `generate` puts the pieces
together. The cache is a pytree whose arrays all have the batch as leading axis except scalar step
counters, so `repeat_batch` / `cache_map` can expand it for several samples per input (and, later,
beams).

Conventions (T5X's): `decoder_input_tokens[:, 0]` is the start id (0 for T5); a non-zero
`decoder_input_tokens[:, i + 1]` is a forced prompt token for output position i; once a row has
produced `eos_id` it continues with 0 (padding), and its log-probability stops accumulating.
"""
from collections.abc import Callable
from typing import Any, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Cache = Any  # pytree of arrays
NEG_INF = -1e10


class TokensToLogits(Protocol):
  """One decoding step: feeds `token_ids` [batch, 1] and returns ([batch, vocab] logits, cache)."""

  def __call__(self, token_ids: Array, cache: Cache) -> tuple[Array, Cache]:
    ...


# --------------------------------------------------------------------------------------------------
# Cache helpers (shared with beam search).


def cache_map(fn: Callable[[Array], Array], cache: Cache) -> Cache:
  """Applies `fn` to every cache array with a batch axis (rank >= 1); scalars pass through."""
  return jax.tree.map(lambda x: fn(x) if jnp.ndim(x) >= 1 else x, cache)


def repeat_batch(x: Array, n: int) -> Array:
  """[batch, ...] -> [batch * n, ...], each row repeated n times consecutively."""
  return jnp.repeat(x, n, axis=0)


# --------------------------------------------------------------------------------------------------
# Network adapters.


def init_decoder_cache(module: nn.Module, params: Any, encoded: Array,
                       encoder_input_tokens: Array, max_decode_length: int) -> Cache:
  """Creates the decoding cache of `rec_t5x.network.Transformer` for `max_decode_length` steps.

  Runs the decoder once on a single dummy token: this allocates the self-attention caches
  ([batch, max_decode_length, heads, head_dim] zeros), projects the encoder output into the
  cross-attention caches (once for the whole decode) and stores the encoder padding mask.

  Args:
    module: the `Transformer`.
    params: its parameters.
    encoded: [batch, enc_length, emb_dim] encoder output.
    encoder_input_tokens: int [batch, enc_length].
    max_decode_length: number of decoding steps the cache holds.

  Returns:
    the "cache" collection.
  """
  dummy = jnp.zeros((encoder_input_tokens.shape[0], 1), jnp.int32)
  _, variables = module.apply({"params": params}, encoded, encoder_input_tokens, dummy, dummy,
                              decode=True, max_decode_length=max_decode_length, method="decode",
                              mutable=["cache"])
  return variables["cache"]


def network_tokens_to_logits(module: nn.Module, params: Any, max_decode_length: int
                             ) -> TokensToLogits:
  """A `TokensToLogits` running one decode step of `rec_t5x.network.Transformer`."""

  def tokens_to_logits(token_ids: Array, cache: Cache) -> tuple[Array, Cache]:
    logits, variables = module.apply(
        {"params": params, "cache": cache}, None, None, token_ids, token_ids, decode=True,
        max_decode_length=max_decode_length, method="decode", mutable=["cache"])
    return logits[:, 0, :], variables["cache"]

  return tokens_to_logits


# --------------------------------------------------------------------------------------------------
# Sampling.


def filter_logits(logits: Array, *, topk: int = 0, topp: float = 0.0) -> Array:
  """Keeps the `topk` largest logits and/or the smallest set with probability >= `topp`.

  Args:
    logits: float [batch, vocab].
    topk: keep this many (0 = all).
    topp: nucleus mass in (0, 1] (0 = off).

  Returns:
    [batch, vocab] with removed entries set to NEG_INF.
  """
  if topk > 0:
    kth = jax.lax.top_k(logits, topk)[0][:, -1:]
    logits = jnp.where(logits < kth, NEG_INF, logits)
  if topp > 0.0:
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    keep = mass_before < topp  # the first token is always kept
    threshold = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits < threshold, NEG_INF, logits)
  return logits


def temperature_sample(decoder_input_tokens: Array, cache: Cache, tokens_to_logits: TokensToLogits,
                       eos_id: int, *, rng: Array | None = None, temperature: float = 1.0,
                       topk: int = 0, topp: float = 0.0, num_decodes: int = 1
                       ) -> tuple[Array, Array]:
  """Cached autoregressive decoding; `temperature=0.0` is greedy (argmax).

  Args:
    decoder_input_tokens: int [batch, length]: column 0 the start id, later non-zero entries forced
      prompt tokens (see module docstring); `length` is the number of generated tokens.
    cache: decoding cache for `batch` rows and at least `length` steps (`init_decoder_cache`).
    tokens_to_logits: the model step.
    eos_id: end-of-sequence id.
    rng: PRNG key, required when `temperature > 0`.
    temperature: a Python float; 0 for greedy.
    topk: sample among the k most likely tokens (0 = all).
    topp: nucleus sampling mass (0 = off).
    num_decodes: independent samples per row (the cache is repeated).

  Returns:
    (sequences int32 [batch, num_decodes, length], log_probs float32 [batch, num_decodes]): the
    generated ids (without the start id; 0 after EOS) and the sum of the model's log-probabilities
    (of the untempered logits) of the generated, non-forced tokens up to and including EOS.
  """
  if temperature < 0.0:
    raise ValueError(f"temperature={temperature}: expected >= 0")
  if temperature > 0.0 and rng is None:
    raise ValueError("temperature > 0 needs an rng")
  if num_decodes < 1:
    raise ValueError(f"num_decodes={num_decodes}: expected >= 1")
  batch, length = decoder_input_tokens.shape
  inputs = repeat_batch(decoder_input_tokens.astype(jnp.int32), num_decodes)
  cache = cache_map(lambda x: repeat_batch(x, num_decodes), cache) if num_decodes > 1 else cache
  rows = batch * num_decodes
  forced = jnp.concatenate([inputs[:, 1:], jnp.zeros((rows, 1), jnp.int32)], axis=1)
  rng = jax.random.PRNGKey(0) if rng is None else rng

  def cond(state):
    i, _, _, ended, _, _ = state
    return (i < length) & ~jnp.all(ended)

  def body(state):
    i, tokens, cache, ended, log_prob, rng = state
    current = jax.lax.dynamic_slice_in_dim(tokens, i, 1, axis=1)
    logits, cache = tokens_to_logits(current, cache)
    logits = logits.astype(jnp.float32)
    if temperature == 0.0:
      sampled = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    else:
      rng, step_rng = jax.random.split(rng)
      scaled = filter_logits(logits / temperature, topk=topk, topp=topp)
      sampled = jax.random.categorical(step_rng, scaled, axis=-1).astype(jnp.int32)
    prompt = jax.lax.dynamic_index_in_dim(forced, i, axis=1, keepdims=False)
    next_token = jnp.where(prompt != 0, prompt, sampled)
    next_token = jnp.where(ended, 0, next_token)
    token_log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits), next_token[:, None], axis=-1)
    log_prob += jnp.where(ended | (prompt != 0), 0.0, token_log_prob[:, 0])
    ended |= next_token == eos_id
    tokens = jax.lax.dynamic_update_slice_in_dim(tokens, next_token[:, None], i + 1, axis=1)
    return i + 1, tokens, cache, ended, log_prob, rng

  tokens = jnp.concatenate([inputs[:, :1], jnp.zeros((rows, length), jnp.int32)], axis=1)
  state = (jnp.array(0, jnp.int32), tokens, cache, jnp.zeros((rows,), bool),
           jnp.zeros((rows,), jnp.float32), rng)
  _, tokens, _, _, log_prob, _ = jax.lax.while_loop(cond, body, state)
  return (tokens[:, 1:].reshape(batch, num_decodes, length),
          log_prob.reshape(batch, num_decodes))


def generate(module: nn.Module, params: Any, encoder_input_tokens: Array, max_decode_length: int,
             *, eos_id: int = 1, decoder_input_tokens: Array | None = None,
             rng: Array | None = None, temperature: float = 0.0, topk: int = 0, topp: float = 0.0,
             num_decodes: int = 1, encoder_segment_ids: Array | None = None
             ) -> tuple[Array, Array]:
  """Encodes, builds the cache and decodes with `temperature_sample` (greedy by default).

  Args:
    module: a `rec_t5x.network.Transformer`.
    params: its parameters.
    encoder_input_tokens: int [batch, enc_length].
    max_decode_length: number of tokens to generate.
    eos_id: end-of-sequence id.
    decoder_input_tokens: optional int [batch, max_decode_length] start id + prompt (default
      zeros: start id 0, no prompt).
    rng, temperature, topk, topp, num_decodes: see `temperature_sample`.
    encoder_segment_ids: unsupported in decoding; must be None (kept for an explicit error).

  Returns:
    (sequences [batch, num_decodes, max_decode_length], log_probs [batch, num_decodes]).
  """
  if encoder_segment_ids is not None:
    raise ValueError("generate: packed encoder inputs are not supported")
  batch = encoder_input_tokens.shape[0]
  if decoder_input_tokens is None:
    decoder_input_tokens = jnp.zeros((batch, max_decode_length), jnp.int32)
  elif decoder_input_tokens.shape != (batch, max_decode_length):
    raise ValueError(f"decoder_input_tokens has shape {decoder_input_tokens.shape}, expected "
                     f"{(batch, max_decode_length)}")
  encoded = module.apply({"params": params}, encoder_input_tokens, method="encode")
  cache = init_decoder_cache(module, params, encoded, encoder_input_tokens, max_decode_length)
  return temperature_sample(decoder_input_tokens, cache,
                            network_tokens_to_logits(module, params, max_decode_length), eos_id,
                            rng=rng, temperature=temperature, topk=topk, topp=topp,
                            num_decodes=num_decodes)
