"""Flax linen building blocks of the T5 v1.1 / FLAN-T5 encoder-decoder.

Each block creates its parameters with the names and 2-D layouts of T5X's checkpoints (kernels are
`[in, out]` matrices, attention projections flattened to `[embed, heads * head_dim]`), so T5X
parameter trees load without renaming, and annotates every parameter with logical axis names from
`rec_t5x.axes` (`nn.with_logical_partitioning`) and every large activation with
`nn.with_logical_constraint`. Conventions that matter numerically:

  * no 1/sqrt(head_dim) scaling of q.k at run time: the factor is folded into the initialisation of
    the query kernel (as T5X does), so imported checkpoints are used as stored;
  * attention logits, softmax and RMSNorm are computed in float32 whatever the activation dtype;
  * masked attention scores get an additive -1e10 (`MASK_VALUE`);
  * relative-position buckets are exact integers (see `relative_position_bucket`).
"""
import functools
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rec_t5x import axes

Array = jax.Array
Initializer = Callable[..., Array]

MASK_VALUE = -1e10

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "linear": lambda x: x,
    "relu": nn.relu,
    "gelu": functools.partial(nn.gelu, approximate=True),  # tanh approximation (T5X, HF gelu_new)
    "gelu_exact": functools.partial(nn.gelu, approximate=False),  # erf GELU (HF "gelu")
    "silu": nn.silu,
    "swish": nn.silu,
    "tanh": jnp.tanh,
    "sigmoid": nn.sigmoid,
}

# Default initialisers (T5X's choices, so freshly initialised models train like T5X ones).
default_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
attention_kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
embedding_init = nn.initializers.normal(stddev=1.0)
relpos_init = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")


def _scaled(init: Initializer, factor: float) -> Initializer:
  """Returns `init` multiplied by `factor` (used to fold 1/sqrt(head_dim) into the query kernel)."""

  def scaled_init(key, shape, dtype=jnp.float32):
    return init(key, shape, dtype) * jnp.asarray(factor, dtype)

  return scaled_init


def hidden_dropout(rate: float, x: Array, enable_dropout: bool,
                   broadcast_dims: Sequence[int] = (-2,)) -> Array:
  """T5X-style dropout on hidden states (one mask shared along the length axis).

  Must be called inside a Flax module's compact method; needs a "dropout" rng when enabled.
  """
  return nn.Dropout(rate=rate, broadcast_dims=broadcast_dims)(x, deterministic=not enable_dropout)


# --------------------------------------------------------------------------------------------------
# Relative positions.


@functools.lru_cache(maxsize=None)
def _log_bucket_thresholds(max_exact: int, num_log_buckets: int,
                           max_distance: int) -> tuple[int, ...]:
  """Smallest integer distance that reaches each logarithmic bucket 1..num_log_buckets-1.

  A distance n >= max_exact falls into log bucket floor(log(n / max_exact) / log(max_distance /
  max_exact) * num_log_buckets), capped at num_log_buckets - 1. Reaching bucket k is equivalent to
  n**N * max_exact**k >= max_distance**k * max_exact**N (N = num_log_buckets), which Python's
  integers decide exactly. Float formulas depend on rounding at boundaries that are exact integers
  (16, 32, 64 for the encoder's 8 exact buckets and max distance 128); T5X adds an epsilon to be
  safe, integer arithmetic has no rounding to worry about.
  """
  thresholds = []
  for k in range(1, num_log_buckets):
    rhs = max_distance**k * max_exact**num_log_buckets
    lo, hi = max_exact, max(max_distance, max_exact) + 1  # the answer lies in (lo, hi]
    while lo + 1 < hi:
      mid = (lo + hi) // 2
      if mid**num_log_buckets * max_exact**k >= rhs:
        hi = mid
      else:
        lo = mid
    thresholds.append(hi)
  return tuple(thresholds)


def relative_position_bucket(relative_position: Array, *, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> Array:
  """Maps relative positions (key position - query position) to T5's relative-position buckets.

  Bidirectional (encoder): buckets [0, num_buckets/2) for keys at or before the query, the upper
  half for keys after it. Causal (decoder): all buckets over the distance to earlier keys; keys
  after the query map to bucket 0. Within each range, half the buckets are exact distances and the
  other half are logarithmically spaced up to `max_distance`; larger distances share the last one.

  Args:
    relative_position: int array of any shape, key position minus query position.
    bidirectional: True for the encoder, False for the causal decoder.
    num_buckets: total number of buckets (32 in T5).
    max_distance: distance at which the last bucket starts (128 in T5).

  Returns:
    int32 array of the same shape with values in [0, num_buckets).
  """
  distance = -jnp.asarray(relative_position, jnp.int32)  # > 0: key before the query
  offset = jnp.zeros_like(distance)
  if bidirectional:
    num_buckets //= 2
    offset = jnp.where(distance < 0, num_buckets, 0)
    distance = jnp.abs(distance)
  else:
    distance = jnp.maximum(distance, 0)
  max_exact = num_buckets // 2
  thresholds = jnp.asarray(_log_bucket_thresholds(max_exact, num_buckets - max_exact, max_distance),
                           jnp.int32)
  # compare_all: a handful of fused comparisons (the default binary-search loop compiles slowly).
  log_bucket = max_exact + jnp.searchsorted(thresholds, distance, side="right",
                                            method="compare_all").astype(jnp.int32)
  return offset + jnp.where(distance < max_exact, distance, log_bucket)


class RelativePositionBiases(nn.Module):
  """T5's learned relative-position bias, one table per stack, shared by all its layers.

  Attributes:
    num_buckets: number of relative-position buckets.
    max_distance: distance at which the last bucket starts.
    num_heads: attention heads (one bias per head and bucket).
    dtype: dtype of the returned bias.
  """
  num_buckets: int
  max_distance: int
  num_heads: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, query_positions: Array, key_positions: Array, *, bidirectional: bool) -> Array:
    """Position bias for attention logits.

    Args:
      query_positions: int [batch or 1, q_length] positions of the queries.
      key_positions: int [batch or 1, k_length] positions of the keys.
      bidirectional: whether keys after the query get their own buckets (encoder).

    Returns:
      [batch or 1, heads, q_length, k_length] bias.
    """
    table = self.param("rel_embedding",
                       nn.with_logical_partitioning(relpos_init, (axes.HEADS, axes.RELPOS_BUCKETS)),
                       (self.num_heads, self.num_buckets), jnp.float32)
    relative = key_positions[:, None, :] - query_positions[:, :, None]
    buckets = relative_position_bucket(relative, bidirectional=bidirectional,
                                       num_buckets=self.num_buckets, max_distance=self.max_distance)
    # One gather per head, stacked into [b, heads, q, k]: gathering [heads]-vectors per position
    # gives [b, q, k, heads], whose transpose (forward, and again for the table's gradient) is a
    # strided copy that costs more than the gathers on CPU (0.2 s per step at length 1024).
    table = jnp.asarray(table, self.dtype)
    return jnp.stack([jnp.take(table[h], buckets) for h in range(self.num_heads)], axis=1)


# --------------------------------------------------------------------------------------------------
# Masks.


def attention_mask(query_valid: Array, key_valid: Array, *, query_segment_ids: Array | None = None,
                   key_segment_ids: Array | None = None, causal: bool = False) -> Array:
  """Boolean attention mask built from token validity, packing segments and causality.

  Args:
    query_valid: bool [batch, q_length], True at non-padding queries.
    key_valid: bool [batch, k_length], True at non-padding keys.
    query_segment_ids: optional int [batch, q_length]; with `key_segment_ids`, queries only see keys
      of the same packed segment.
    key_segment_ids: optional int [batch, k_length].
    causal: if True, query i only sees keys j <= i (by index; packed segments are contiguous).

  Returns:
    bool [batch, 1, q_length, k_length].
  """
  mask = query_valid[:, :, None] & key_valid[:, None, :]
  if (query_segment_ids is None) != (key_segment_ids is None):
    raise ValueError("attention_mask: give both query_segment_ids and key_segment_ids or neither")
  if query_segment_ids is not None:
    mask &= query_segment_ids[:, :, None] == key_segment_ids[:, None, :]
  if causal:
    q_len, k_len = query_valid.shape[1], key_valid.shape[1]
    mask &= jnp.arange(q_len)[:, None] >= jnp.arange(k_len)[None, :]
  return mask[:, None, :, :]


def mask_to_bias(mask: Array) -> Array:
  """bool mask -> float32 additive bias (0 where True, MASK_VALUE where False), same shape."""
  return jnp.where(mask, 0.0, MASK_VALUE).astype(jnp.float32)


# --------------------------------------------------------------------------------------------------
# Dense layers, embeddings, norms.


def _materialize(x: Array) -> Array:
  """`x` computed as its own buffer: XLA may not fold a transpose inside into the consumer dot."""
  return jax.lax.optimization_barrier(x)


@jax.custom_vjp
def matmul(x: Array, kernel: Array) -> Array:
  """`x @ kernel` whose backward pass runs as plain row-major matrix products.

  Autodiff of `x @ kernel` gives `dx = dy @ kernel.T` and `dkernel = x.T @ dy`: products that
  contract a transposed operand. XLA:CPU hands those to a generic contraction about half as fast as
  the [M, K] x [K, N] products it sends to XNNPACK (measured on AVX2: 37 vs 74 GFLOP/s single
  core). The backward pass below transposes the smaller operand into a buffer of its own first, so
  every product is [M, K] x [K, N]; the results are the same up to float32 summation order.

  Args:
    x: [tokens, in].
    kernel: [in, out].

  Returns:
    [tokens, out].
  """
  return x @ kernel


def _matmul_fwd(x: Array, kernel: Array) -> tuple[Array, tuple[Array, Array]]:
  return x @ kernel, (x, kernel)


def _matmul_bwd(residuals: tuple[Array, Array], dy: Array) -> tuple[Array, Array]:
  """dx = dy @ kernel.T (a fast [M, K] x [N, K] product as is); dkernel = copy(x.T) @ dy."""
  x, kernel = residuals
  dx = dy @ kernel.T
  dkernel = _materialize(x.T) @ dy
  return dx.astype(x.dtype), dkernel.astype(kernel.dtype)


matmul.defvjp(_matmul_fwd, _matmul_bwd)


class Dense(nn.Module):
  """Linear map stored as a 2-D `[prod(in_dims), prod(features)]` kernel (T5X's layout), no bias.

  Computed as one 2-D `matmul` of the flattened input (see `matmul` for its backward pass).

  Attributes:
    features: output feature dims, e.g. `(heads, head_dim)` for a query projection.
    kernel_axes: logical names of the two kernel dims, e.g. `(EMBED, JOINED_KV)`.
    contract_dims: how many trailing input dims are contracted (2 for the attention output).
    kernel_init: initialiser of the 2-D kernel (fan-in = its first dim).
    dtype: computation dtype; the kernel is stored in float32 and cast.
  """
  features: tuple[int, ...]
  kernel_axes: tuple[str, str]
  contract_dims: int = 1
  kernel_init: Initializer = default_kernel_init
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """[..., *in_dims] -> [..., *features]."""
    batch_dims = x.shape[:x.ndim - self.contract_dims]
    in_size = int(np.prod(x.shape[x.ndim - self.contract_dims:]))
    kernel = self.param("kernel", nn.with_logical_partitioning(self.kernel_init, self.kernel_axes),
                        (in_size, int(np.prod(self.features))), jnp.float32)
    x2d = jnp.asarray(x, self.dtype).reshape((int(np.prod(batch_dims)), in_size))
    y = matmul(x2d, jnp.asarray(kernel, self.dtype))
    return y.reshape(batch_dims + tuple(self.features))


class Embed(nn.Module):
  """Token embedding table `[vocab, embed]`; `attend` reuses it as an output projection.

  Attributes:
    num_embeddings: vocabulary size.
    features: embedding width.
    dtype: dtype of the returned activations.
  """
  num_embeddings: int
  features: int
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    self.embedding = self.param(
        "embedding", nn.with_logical_partitioning(embedding_init, (axes.VOCAB, axes.EMBED)),
        (self.num_embeddings, self.features), jnp.float32)

  def __call__(self, ids: Array) -> Array:
    """int [...] -> [..., features] (no sqrt(d) scaling)."""
    return jnp.take(jnp.asarray(self.embedding, self.dtype), ids, axis=0)

  def attend(self, query: Array) -> Array:
    """[..., features] -> [..., num_embeddings] dot products with every embedding."""
    return jnp.einsum("...e,ve->...v", jnp.asarray(query, self.dtype),
                      jnp.asarray(self.embedding, self.dtype))


class RmsNorm(nn.Module):
  """Root-mean-square norm without mean subtraction or bias, computed in float32.

  `y = x * rsqrt(mean(x**2, -1) + epsilon) * scale`, returned in `dtype`.

  Attributes:
    epsilon: added to the mean square.
    dtype: dtype of the output.
  """
  epsilon: float = 1e-6
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """[..., embed] -> [..., embed]."""
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, (axes.EMBED,)),
                       (x.shape[-1],), jnp.float32)
    x = jnp.asarray(x, jnp.float32)
    y = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.epsilon)
    return jnp.asarray(y * jnp.asarray(scale, jnp.float32), self.dtype)


# --------------------------------------------------------------------------------------------------
# Attention products with row-major backward passes.
#
# Autodiff of the two attention products needs `key`- and `value`-gradients that contract the
# query axis of both operands ([k, q] x [q, d] with q leading in memory), which XLA:CPU runs about
# half as fast as [m, k] x [k, n] products (measured: 73 vs 39 ms for [2, 6, 1024, 64] heads on one
# AVX2 core). The custom VJPs below compute those gradients transposed, from a copied [d, q]
# operand, and transpose the small [d, k] result back.


def _swap_last(x: Array) -> Array:
  return jnp.swapaxes(x, -1, -2)


@jax.custom_vjp
def softmax(logits: Array) -> Array:
  """Softmax over the last axis, with the one-pass gradient `y * (g - sum(g * y))`.

  `jax.nn.softmax`'s autodiff goes through the normalising division and reads the [b, h, q, k]
  tensors more often; at length 1024 the attention is bound by those passes over memory (fwd+bwd
  143 vs 175 ms for [2, 6, 1024, 1024] on one core).

  Args:
    logits: float array [..., n].

  Returns:
    Probabilities of the same shape and dtype.
  """
  unnormalized = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
  return unnormalized * (1.0 / jnp.sum(unnormalized, axis=-1, keepdims=True))


def _softmax_fwd(logits: Array) -> tuple[Array, Array]:
  probs = softmax(logits)
  return probs, probs


def _softmax_bwd(probs: Array, d_probs: Array) -> tuple[Array]:
  return (probs * (d_probs - jnp.sum(d_probs * probs, axis=-1, keepdims=True)),)


softmax.defvjp(_softmax_fwd, _softmax_bwd)


@jax.custom_vjp
def attention_scores(query: Array, key: Array) -> Array:
  """`q . k` logits, float32.

  Args:
    query: [batch, heads, q_length, head_dim].
    key: [batch, heads, k_length, head_dim].

  Returns:
    float32 [batch, heads, q_length, k_length].
  """
  return jnp.einsum("bhqd,bhkd->bhqk", query, key, preferred_element_type=jnp.float32)


def _scores_fwd(query: Array, key: Array) -> tuple[Array, tuple[Array, Array]]:
  return attention_scores(query, key), (query, key)


def _scores_bwd(residuals: tuple[Array, Array], d_logits: Array) -> tuple[Array, Array]:
  query, key = residuals
  d_logits = d_logits.astype(key.dtype)
  d_query = jnp.einsum("bhqk,bhkd->bhqd", d_logits, key)
  d_key_t = jnp.einsum("bhdq,bhqk->bhdk", _materialize(_swap_last(query)), d_logits)
  return d_query.astype(query.dtype), _swap_last(_materialize(d_key_t)).astype(key.dtype)


attention_scores.defvjp(_scores_fwd, _scores_bwd)


@jax.custom_vjp
def attention_values(weights: Array, value: Array) -> Array:
  """Attention-weighted values.

  Args:
    weights: [batch, heads, q_length, k_length].
    value: [batch, heads, k_length, head_dim].

  Returns:
    [batch, heads, q_length, head_dim].
  """
  return jnp.einsum("bhqk,bhkd->bhqd", weights, value)


def _values_fwd(weights: Array, value: Array) -> tuple[Array, tuple[Array, Array]]:
  return attention_values(weights, value), (weights, value)


def _values_bwd(residuals: tuple[Array, Array], d_out: Array) -> tuple[Array, Array]:
  weights, value = residuals
  d_weights = jnp.einsum("bhqd,bhkd->bhqk", d_out, value)
  d_value_t = jnp.einsum("bhdq,bhqk->bhdk", _materialize(_swap_last(d_out)), weights)
  return d_weights.astype(weights.dtype), _swap_last(_materialize(d_value_t)).astype(value.dtype)


attention_values.defvjp(_values_fwd, _values_bwd)


# --------------------------------------------------------------------------------------------------
# MLP and attention.


class MlpBlock(nn.Module):
  """Transformer MLP; two activations give the gated form `wo(act0(wi_0 x) * act1(wi_1 x))`.

  With one activation the input projection is named `wi` (T5 1.0), with several `wi_0`, `wi_1`, ...
  (T5 v1.1: `("gelu", "linear")`, i.e. `wi_0` goes through GELU and `wi_1` is the linear branch).

  Attributes:
    intermediate_dim: hidden width (`mlp_dim`).
    activations: names from `ACTIVATIONS`, one per input projection.
    dropout_rate: dropout on the hidden activations.
    dtype: computation dtype.
  """
  intermediate_dim: int
  activations: tuple[str, ...] = ("gelu", "linear")
  dropout_rate: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, enable_dropout: bool = False) -> Array:
    """[batch, length, embed] -> [batch, length, embed]."""
    hidden = None
    for idx, name in enumerate(self.activations):
      dense_name = "wi" if len(self.activations) == 1 else f"wi_{idx}"
      h = Dense((self.intermediate_dim,), (axes.EMBED, axes.MLP), dtype=self.dtype,
                name=dense_name)(x)
      h = ACTIVATIONS[name](h)
      hidden = h if hidden is None else hidden * h
    hidden = nn.with_logical_constraint(hidden, (axes.BATCH, axes.LENGTH, axes.ACT_MLP))
    hidden = hidden_dropout(self.dropout_rate, hidden, enable_dropout)
    out = Dense((x.shape[-1],), (axes.MLP, axes.EMBED), dtype=self.dtype, name="wo")(hidden)
    return nn.with_logical_constraint(out, (axes.BATCH, axes.LENGTH, axes.ACT_EMBED))


def _query_group(query_rows: int, key_rows: int) -> int:
  """Query rows per key row in cross-attention decoding (1 when the cache was tiled like the queries).

  Raises:
    ValueError: when the query rows are not a whole multiple of the cached encoder rows.
  """
  if query_rows % key_rows:
    raise ValueError(f"cross-attention decode: {query_rows} query rows are not a multiple of the "
                     f"{key_rows} cached encoder rows (expected rows = examples x beams, beams "
                     "consecutive)")
  return query_rows // key_rows


class MultiHeadDotProductAttention(nn.Module):
  """Multi-head attention on `[batch, length, heads, kv]`, with optional incremental decoding.

  Decode mode (`decode=True`) keeps a "cache" collection:
    * self-attention (`cross_attention=False`): `cached_key`/`cached_value` [batch, max_length,
      heads, head_dim]; each step writes its key/value at `cache_index` and attends to all cached
      positions (the caller's `attention_bias` masks positions after `cache_index`).
    * cross-attention (`cross_attention=True`): the projected encoder keys/values, computed once
      when the cache is created and reused at every step (the key/value kernels are not applied
      again). Steps may feed `n` times as many query rows as the cache holds (beam search: rows
      b*n .. b*n+n-1 are the hypotheses of example b); they attend to their example's one copy of
      the keys/values, and `attention_bias` then has the cache's batch (or 1).
  The first call in decode mode (cache absent) creates the cache and computes normally.

  Attributes:
    num_heads: number of heads.
    head_dim: width per head.
    dropout_rate: dropout on the attention weights.
    cross_attention: whether keys/values come from the encoder (static during decoding).
    dtype: computation dtype (logits and softmax are float32).
  """
  num_heads: int
  head_dim: int
  dropout_rate: float = 0.0
  cross_attention: bool = False
  dtype: jnp.dtype = jnp.float32

  def _project(self, name: str, x: Array, init: Initializer) -> Array:
    out = Dense((self.num_heads, self.head_dim), (axes.EMBED, axes.JOINED_KV), kernel_init=init,
                dtype=self.dtype, name=name)(x)
    return nn.with_logical_constraint(out, (axes.BATCH, axes.LENGTH, axes.ACT_HEADS, axes.ACT_KV))

  @nn.compact
  def __call__(self, inputs_q: Array, inputs_kv: Array | None, attention_bias: Array, *,
               enable_dropout: bool = False, decode: bool = False, cache_index: Array | None = None,
               max_decode_length: int | None = None) -> Array:
    """Attends from `inputs_q` to `inputs_kv`.

    Args:
      inputs_q: [batch, q_length, embed].
      inputs_kv: [batch, k_length, embed]; may be None for cross-attention decode steps (cached).
      attention_bias: float32 additive bias broadcastable to [batch, heads, q_length, k_length]
        (mask and relative positions combined).
      enable_dropout: apply dropout to the attention weights.
      decode: incremental decoding with the "cache" collection (see class docstring).
      cache_index: int32 scalar, position written by a self-attention decode step.
      max_decode_length: cache length created by the first self-attention decode call.

    Returns:
      [batch, q_length, embed] in `dtype`.
    """
    query = self._project("query", inputs_q, _scaled(attention_kernel_init, self.head_dim**-0.5))
    if decode and self.cross_attention:
      key, value = self._cross_attention_kv(inputs_kv)
    else:
      key = self._project("key", inputs_kv, attention_kernel_init)
      value = self._project("value", inputs_kv, attention_kernel_init)
      if decode:
        key, value = self._self_attention_cache(key, value, cache_index, max_decode_length)

    query_rows, query_length = query.shape[:2]
    group = _query_group(query_rows, key.shape[0]) if decode and self.cross_attention else 1
    # Rows b*group .. b*group+group-1 (e.g. the beams of example b) share example b's keys / values:
    # fold them into the query length instead of tiling the encoder-sized cache.
    query = query.reshape((query_rows // group, group * query_length) + query.shape[2:])
    heads_first = lambda x: jnp.transpose(x, (0, 2, 1, 3))  # [b, l, h, d] -> [b, h, l, d]
    logits = attention_scores(heads_first(query), heads_first(key))
    weights = softmax(logits + attention_bias).astype(self.dtype)
    weights = nn.Dropout(rate=self.dropout_rate)(weights, deterministic=not enable_dropout)
    out = heads_first(attention_values(weights, heads_first(value)))  # [b, q, h, d]
    out = out.reshape((query_rows, query_length) + out.shape[2:])
    out = nn.with_logical_constraint(out, (axes.BATCH, axes.LENGTH, axes.ACT_HEADS, axes.ACT_KV))
    out = Dense((inputs_q.shape[-1],), (axes.JOINED_KV, axes.EMBED), contract_dims=2,
                kernel_init=attention_kernel_init, dtype=self.dtype, name="out")(out)
    return nn.with_logical_constraint(out, (axes.BATCH, axes.LENGTH, axes.ACT_EMBED))

  def _cross_attention_kv(self, inputs_kv: Array | None) -> tuple[Array, Array]:
    """Encoder keys/values: projected once into the cache, then read back at every step."""
    if self.has_variable("cache", "cached_key"):
      return (self.get_variable("cache", "cached_key"), self.get_variable("cache", "cached_value"))
    if inputs_kv is None:
      raise ValueError("cross-attention decode: the cache is empty, so the encoder output is "
                       "needed")
    key = self._project("key", inputs_kv, attention_kernel_init)
    value = self._project("value", inputs_kv, attention_kernel_init)
    self.variable("cache", "cached_key", lambda: key)
    self.variable("cache", "cached_value", lambda: value)
    return key, value

  def _self_attention_cache(self, key: Array, value: Array, cache_index: Array | None,
                            max_decode_length: int | None) -> tuple[Array, Array]:
    """Writes one step's key/value into the cache and returns the whole cache."""
    initialized = self.has_variable("cache", "cached_key")
    batch = key.shape[0]
    if max_decode_length is None:
      raise ValueError("self-attention decode needs max_decode_length (the cache length)")
    shape = (batch, max_decode_length, self.num_heads, self.head_dim)
    cached_key = self.variable("cache", "cached_key", jnp.zeros, shape, key.dtype)
    cached_value = self.variable("cache", "cached_value", jnp.zeros, shape, value.dtype)
    if not initialized:  # creating the cache: attend normally over the given inputs
      return key, value
    if key.shape[1] != 1:
      raise ValueError(f"decode step expects one token per row, got length {key.shape[1]}")
    if cached_key.value.shape[1] != max_decode_length:
      raise ValueError(f"max_decode_length={max_decode_length} differs from the cache length "
                       f"{cached_key.value.shape[1]}")
    start = (0, cache_index, 0, 0)
    cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, key, start)
    cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, value, start)
    return cached_key.value, cached_value.value
