"""T5 v1.1 / FLAN-T5 encoder-decoder network (Flax linen) with T5X's parameter tree.

`Transformer(config)` is the network of the "Network contract" in docs/architecture.md:

    logits = Transformer(cfg).apply({"params": p}, encoder_input_tokens, decoder_input_tokens,
                                    decoder_target_tokens, ...)          # [batch, length, vocab]
    encoded = ...apply(..., method="encode")
    logits, vars = ...apply({"params": p, "cache": c}, ..., decode=True, max_decode_length=L,
                            method="decode", mutable=["cache"])

Parameter paths are T5X's (`token_embedder/embedding`, `encoder/layers_0/attention/query/kernel`,
`encoder/relpos_bias/rel_embedding`, `decoder/logits_dense/kernel`, ...). Masks come from the token
ids (0 = padding) and, for packed rows, the segment ids; relative positions come from the given
positions (`arange` when absent). See `rec_t5x.decoding` for cached generation.
"""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rec_t5x import axes
from rec_t5x import layers

Array = jax.Array

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Hyper-parameters of the network (T5X's `T5Config` fields plus the constants T5X hard-codes).

  Attributes:
    vocab_size: rows of the embedding / columns of the logits (32128 for FLAN-T5).
    emb_dim: model width (d_model).
    num_heads: attention heads.
    head_dim: width per head (heads * head_dim need not equal emb_dim).
    mlp_dim: hidden width of the MLP (d_ff).
    num_encoder_layers: encoder blocks.
    num_decoder_layers: decoder blocks.
    mlp_activations: one name per MLP input projection, from `layers.ACTIVATIONS`;
      ("gelu", "linear") is T5 v1.1's gated GELU (tanh approximation).
    dropout_rate: dropout everywhere (embeddings, residuals, MLP hidden, attention weights).
    logits_via_embedding: tie the output layer to the embedding, scaled by 1/sqrt(emb_dim) (T5 1.0);
      False gives the separate `decoder/logits_dense` of T5 v1.1.
    dtype: activation dtype, "float32" or "bfloat16" (parameters are always float32).
    relpos_num_buckets: relative-position buckets per stack.
    relpos_max_distance: distance at which the last relative-position bucket starts.
    layer_norm_epsilon: RMSNorm epsilon.
  """
  vocab_size: int
  emb_dim: int
  num_heads: int
  head_dim: int
  mlp_dim: int
  num_encoder_layers: int
  num_decoder_layers: int
  mlp_activations: tuple[str, ...] = ("gelu", "linear")
  dropout_rate: float = 0.0
  logits_via_embedding: bool = False
  dtype: str = "float32"
  relpos_num_buckets: int = 32
  relpos_max_distance: int = 128
  layer_norm_epsilon: float = 1e-6

  def __post_init__(self):
    for name in ("vocab_size", "emb_dim", "num_heads", "head_dim", "mlp_dim", "num_encoder_layers",
                 "num_decoder_layers"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"T5Config.{name}={value!r}: expected an integer >= 1")
    activations = self.mlp_activations
    if (isinstance(activations, str) or not isinstance(activations, (tuple, list))
        or not activations):
      raise ValueError(f"T5Config.mlp_activations={activations!r}: expected a non-empty tuple of "
                       f"names from {sorted(layers.ACTIVATIONS)}")
    unknown = [a for a in activations if a not in layers.ACTIVATIONS]
    if unknown:
      raise ValueError(f"T5Config.mlp_activations={activations!r}: unknown {unknown}; allowed: "
                       f"{sorted(layers.ACTIVATIONS)}")
    object.__setattr__(self, "mlp_activations", tuple(activations))
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f"T5Config.dropout_rate={self.dropout_rate!r}: expected 0 <= rate < 1")
    if not isinstance(self.logits_via_embedding, bool):
      raise ValueError(f"T5Config.logits_via_embedding={self.logits_via_embedding!r}: expected a "
                       "bool")
    if self.dtype not in _DTYPES:
      raise ValueError(f"T5Config.dtype={self.dtype!r}: expected one of {sorted(_DTYPES)}")
    if (isinstance(self.relpos_num_buckets, bool) or not isinstance(self.relpos_num_buckets, int)
        or self.relpos_num_buckets < 4 or self.relpos_num_buckets % 2):
      raise ValueError(f"T5Config.relpos_num_buckets={self.relpos_num_buckets!r}: expected an even "
                       "integer >= 4")
    if (isinstance(self.relpos_max_distance, bool) or not isinstance(self.relpos_max_distance, int)
        or self.relpos_max_distance <= self.relpos_num_buckets // 2):
      raise ValueError(f"T5Config.relpos_max_distance={self.relpos_max_distance!r}: expected an "
                       f"integer > relpos_num_buckets / 2 = {self.relpos_num_buckets // 2}")
    if not self.layer_norm_epsilon > 0.0:
      raise ValueError(f"T5Config.layer_norm_epsilon={self.layer_norm_epsilon!r}: expected > 0")

  @property
  def activation_dtype(self) -> jnp.dtype:
    """The jnp dtype named by `dtype`."""
    return _DTYPES[self.dtype]


def _check_same_shape(reference_name: str, reference: Array, **others: Array | None) -> None:
  for name, value in others.items():
    if value is not None and tuple(value.shape) != tuple(reference.shape):
      raise ValueError(f"{name} has shape {tuple(value.shape)}, expected the shape of "
                       f"{reference_name} {tuple(reference.shape)}")


def _positions(tokens: Array, positions: Array | None) -> Array:
  """Given positions, or `arange(length)` shared by the batch ([1, length])."""
  if positions is not None:
    return positions
  return jnp.arange(tokens.shape[1], dtype=jnp.int32)[None, :]


def _relpos(config: T5Config) -> layers.RelativePositionBiases:
  return layers.RelativePositionBiases(num_buckets=config.relpos_num_buckets,
                                       max_distance=config.relpos_max_distance,
                                       num_heads=config.num_heads, name="relpos_bias")


def _attention(config: T5Config, name: str, cross: bool = False):
  return layers.MultiHeadDotProductAttention(
      num_heads=config.num_heads, head_dim=config.head_dim, dropout_rate=config.dropout_rate,
      cross_attention=cross, dtype=config.activation_dtype, name=name)


def _mlp(config: T5Config) -> layers.MlpBlock:
  return layers.MlpBlock(intermediate_dim=config.mlp_dim, activations=config.mlp_activations,
                         dropout_rate=config.dropout_rate, dtype=config.activation_dtype,
                         name="mlp")


def _norm(config: T5Config, name: str) -> layers.RmsNorm:
  return layers.RmsNorm(epsilon=config.layer_norm_epsilon, dtype=config.activation_dtype,
                        name=name)


def _constrain(x: Array) -> Array:
  return nn.with_logical_constraint(x, (axes.BATCH, axes.LENGTH, axes.ACT_EMBED))


class EncoderLayer(nn.Module):
  """Pre-norm self-attention + MLP block of the encoder."""
  config: T5Config

  @nn.compact
  def __call__(self, x: Array, attention_bias: Array, *, enable_dropout: bool) -> Array:
    """[batch, length, embed] -> same; `attention_bias` [batch or 1, heads, length, length]."""
    cfg = self.config
    h = _norm(cfg, "pre_attention_layer_norm")(x)
    h = _attention(cfg, "attention")(h, h, attention_bias, enable_dropout=enable_dropout)
    x = x + layers.hidden_dropout(cfg.dropout_rate, h, enable_dropout)
    h = _norm(cfg, "pre_mlp_layer_norm")(x)
    h = _mlp(cfg)(h, enable_dropout=enable_dropout)
    x = x + layers.hidden_dropout(cfg.dropout_rate, h, enable_dropout)
    return _constrain(x)


class DecoderLayer(nn.Module):
  """Pre-norm causal self-attention + cross-attention + MLP block of the decoder."""
  config: T5Config

  @nn.compact
  def __call__(self, x: Array, encoded: Array | None, self_bias: Array, cross_bias: Array, *,
               enable_dropout: bool, decode: bool, cache_index: Array | None,
               max_decode_length: int | None) -> Array:
    """[batch, length, embed] -> same (see `Decoder` for the biases and decode arguments)."""
    cfg = self.config
    drop = lambda h: layers.hidden_dropout(cfg.dropout_rate, h, enable_dropout)
    h = _norm(cfg, "pre_self_attention_layer_norm")(x)
    h = _attention(cfg, "self_attention")(h, h, self_bias, enable_dropout=enable_dropout,
                                          decode=decode, cache_index=cache_index,
                                          max_decode_length=max_decode_length)
    x = x + drop(h)
    h = _norm(cfg, "pre_cross_attention_layer_norm")(x)
    h = _attention(cfg, "encoder_decoder_attention", cross=True)(
        h, encoded, cross_bias, enable_dropout=enable_dropout, decode=decode)
    x = x + drop(h)
    h = _norm(cfg, "pre_mlp_layer_norm")(x)
    x = x + drop(_mlp(cfg)(h, enable_dropout=enable_dropout))
    return _constrain(x)


class Encoder(nn.Module):
  """Embedding, encoder layers sharing one relative-position table, final norm."""
  config: T5Config
  shared_embedding: nn.Module

  @nn.compact
  def __call__(self, encoder_input_tokens: Array, encoder_segment_ids: Array | None = None,
               encoder_positions: Array | None = None, *, enable_dropout: bool = False) -> Array:
    """int [batch, length] -> [batch, length, embed] in the activation dtype."""
    cfg = self.config
    positions = _positions(encoder_input_tokens, encoder_positions)
    valid = encoder_input_tokens > 0
    mask = layers.attention_mask(valid, valid, query_segment_ids=encoder_segment_ids,
                                 key_segment_ids=encoder_segment_ids)
    bias = layers.mask_to_bias(mask) + _relpos(cfg)(positions, positions, bidirectional=True)
    x = self.shared_embedding(encoder_input_tokens.astype(jnp.int32))
    x = _constrain(layers.hidden_dropout(cfg.dropout_rate, x, enable_dropout))
    for i in range(cfg.num_encoder_layers):
      x = EncoderLayer(cfg, name=f"layers_{i}")(x, bias, enable_dropout=enable_dropout)
    x = _norm(cfg, "encoder_norm")(x)
    return _constrain(layers.hidden_dropout(cfg.dropout_rate, x, enable_dropout))


class Decoder(nn.Module):
  """Embedding, decoder layers sharing one relative-position table, final norm, logits.

  In decode mode the decoder keeps `cache_index` (next position) and `encoder_valid` (bool [batch,
  encoder_length]) in the "cache" collection next to the attention caches, so decode steps need
  neither the encoder output nor the encoder tokens.
  """
  config: T5Config
  shared_embedding: nn.Module

  def _full_biases(self, encoder_input_tokens, decoder_target_tokens, encoder_segment_ids,
                   decoder_segment_ids, decoder_positions):
    positions = _positions(decoder_target_tokens, decoder_positions)
    target_valid = decoder_target_tokens > 0
    self_mask = layers.attention_mask(target_valid, target_valid, causal=True,
                                      query_segment_ids=decoder_segment_ids,
                                      key_segment_ids=decoder_segment_ids)
    self_bias = (layers.mask_to_bias(self_mask)
                 + _relpos(self.config)(positions, positions, bidirectional=False))
    cross_mask = layers.attention_mask(target_valid, encoder_input_tokens > 0,
                                       query_segment_ids=decoder_segment_ids,
                                       key_segment_ids=encoder_segment_ids)
    return self_bias, layers.mask_to_bias(cross_mask)

  def _step_biases(self, cache_index, max_decode_length):
    """Biases for one decode step at position `cache_index`: [1, h, 1, max_len], [b, 1, 1, enc]."""
    key_positions = jnp.arange(max_decode_length, dtype=jnp.int32)[None, :]
    self_bias = (layers.mask_to_bias(key_positions <= cache_index)[:, None, None, :]
                 + _relpos(self.config)(cache_index[None, None], key_positions,
                                        bidirectional=False))
    encoder_valid = self.get_variable("cache", "encoder_valid")
    return self_bias, layers.mask_to_bias(encoder_valid)[:, None, None, :]

  @nn.compact
  def __call__(self, encoded: Array | None, encoder_input_tokens: Array | None,
               decoder_input_tokens: Array, decoder_target_tokens: Array,
               encoder_segment_ids: Array | None = None, decoder_segment_ids: Array | None = None,
               decoder_positions: Array | None = None, *, enable_dropout: bool = False,
               decode: bool = False, max_decode_length: int | None = None) -> Array:
    """Decoder logits; see `Transformer.decode` for the arguments. Returns float32 [b, l, vocab]."""
    cfg = self.config
    stepping = decode and self.has_variable("cache", "cache_index")
    cache_index = None
    if decode:
      index_var = self.variable("cache", "cache_index", lambda: jnp.zeros((), jnp.int32))
      if not stepping and encoder_input_tokens is not None:
        self.variable("cache", "encoder_valid", lambda: encoder_input_tokens > 0)
    if stepping:
      if max_decode_length is None:
        raise ValueError("decode step needs max_decode_length (the length of the cache)")
      cache_index = index_var.value
      index_var.value = cache_index + 1
      self_bias, cross_bias = self._step_biases(cache_index, max_decode_length)
    else:
      if encoded is None or encoder_input_tokens is None:
        raise ValueError("decoder: encoded and encoder_input_tokens are required outside decode "
                         "steps")
      if decode and max_decode_length is None:
        max_decode_length = decoder_input_tokens.shape[1]
      self_bias, cross_bias = self._full_biases(encoder_input_tokens, decoder_target_tokens,
                                                encoder_segment_ids, decoder_segment_ids,
                                                decoder_positions)

    x = self.shared_embedding(decoder_input_tokens.astype(jnp.int32))
    x = _constrain(layers.hidden_dropout(cfg.dropout_rate, x, enable_dropout))
    for i in range(cfg.num_decoder_layers):
      x = DecoderLayer(cfg, name=f"layers_{i}")(
          x, encoded, self_bias, cross_bias, enable_dropout=enable_dropout, decode=decode,
          cache_index=cache_index, max_decode_length=max_decode_length)
    x = _norm(cfg, "decoder_norm")(x)
    x = layers.hidden_dropout(cfg.dropout_rate, x, enable_dropout)
    if cfg.logits_via_embedding:
      logits = self.shared_embedding.attend(x) / np.sqrt(cfg.emb_dim)  # T5X's scaling
    else:
      logits = layers.Dense((cfg.vocab_size,), (axes.EMBED, axes.VOCAB),
                            dtype=cfg.activation_dtype, name="logits_dense")(x)
    logits = nn.with_logical_constraint(logits, (axes.BATCH, axes.LENGTH, axes.ACT_VOCAB))
    return logits.astype(jnp.float32)


class Transformer(nn.Module):
  """T5 v1.1 / FLAN-T5 encoder-decoder (see the module docstring).

  Attributes:
    config: the hyper-parameters.
  """
  config: T5Config

  def setup(self):
    cfg = self.config
    self.token_embedder = layers.Embed(cfg.vocab_size, cfg.emb_dim, dtype=cfg.activation_dtype)
    self.encoder = Encoder(cfg, self.token_embedder)
    self.decoder = Decoder(cfg, self.token_embedder)

  def encode(self, encoder_input_tokens: Array, encoder_segment_ids: Array | None = None,
             encoder_positions: Array | None = None, *, enable_dropout: bool = False) -> Array:
    """Runs the encoder.

    Args:
      encoder_input_tokens: int [batch, enc_length], 0 = padding.
      encoder_segment_ids: optional int [batch, enc_length] for packed rows (0 = padding).
      encoder_positions: optional int [batch, enc_length] positions within each packed segment.
      enable_dropout: apply dropout (needs a "dropout" rng).

    Returns:
      [batch, enc_length, emb_dim] in the activation dtype.
    """
    _check_same_shape("encoder_input_tokens", encoder_input_tokens,
                      encoder_segment_ids=encoder_segment_ids, encoder_positions=encoder_positions)
    return self.encoder(encoder_input_tokens, encoder_segment_ids, encoder_positions,
                        enable_dropout=enable_dropout)

  def decode(self, encoded: Array | None, encoder_input_tokens: Array | None,
             decoder_input_tokens: Array, decoder_target_tokens: Array,
             encoder_segment_ids: Array | None = None, decoder_segment_ids: Array | None = None,
             decoder_positions: Array | None = None, *, enable_dropout: bool = False,
             decode: bool = False, max_decode_length: int | None = None) -> Array:
    """Runs the decoder on the encoder output.

    Teacher forcing (`decode=False`): masks come from `decoder_target_tokens` (0 = padding), causal
    order, segment ids, and the encoder tokens. With `decode=True` and `mutable=["cache"]`:
    the first call (no "cache" collection yet) creates the cache for `max_decode_length` positions
    (default: the decoder input length) from `encoded`/`encoder_input_tokens`; later calls take one
    token per row ([batch, 1]), need `max_decode_length`, and may pass None for `encoded` and
    `encoder_input_tokens` (the cache holds what they provide). Packing is not supported in decode
    mode.

    Args:
      encoded: [batch, enc_length, emb_dim] encoder output (None in decode steps).
      encoder_input_tokens: int [batch, enc_length] (None in decode steps).
      decoder_input_tokens: int [batch, dec_length], the targets shifted right (start id 0).
      decoder_target_tokens: int [batch, dec_length]; only used for masks.
      encoder_segment_ids: optional int [batch, enc_length].
      decoder_segment_ids: optional int [batch, dec_length].
      decoder_positions: optional int [batch, dec_length] positions within each packed segment.
      enable_dropout: apply dropout (needs a "dropout" rng).
      decode: incremental decoding with the "cache" collection.
      max_decode_length: length of the decoding cache.

    Returns:
      float32 logits [batch, dec_length, vocab_size].
    """
    _check_same_shape("decoder_input_tokens", decoder_input_tokens,
                      decoder_target_tokens=decoder_target_tokens,
                      decoder_segment_ids=decoder_segment_ids, decoder_positions=decoder_positions)
    if encoder_input_tokens is not None:
      _check_same_shape("encoder_input_tokens", encoder_input_tokens,
                        encoder_segment_ids=encoder_segment_ids)
    if decode and (encoder_segment_ids is not None or decoder_segment_ids is not None):
      raise ValueError("decode=True does not support packed inputs (segment ids)")
    return self.decoder(encoded, encoder_input_tokens, decoder_input_tokens, decoder_target_tokens,
                        encoder_segment_ids, decoder_segment_ids, decoder_positions,
                        enable_dropout=enable_dropout, decode=decode,
                        max_decode_length=max_decode_length)

  def __call__(self, encoder_input_tokens: Array, decoder_input_tokens: Array,
               decoder_target_tokens: Array, encoder_segment_ids: Array | None = None,
               decoder_segment_ids: Array | None = None, encoder_positions: Array | None = None,
               decoder_positions: Array | None = None, *, enable_dropout: bool = False,
               decode: bool = False) -> Array:
    """Teacher-forced logits, float32 [batch, dec_length, vocab_size] (see `encode`, `decode`)."""
    _check_same_shape("decoder_input_tokens", decoder_input_tokens,
                      decoder_target_tokens=decoder_target_tokens,
                      decoder_segment_ids=decoder_segment_ids, decoder_positions=decoder_positions)
    encoded = self.encode(encoder_input_tokens, encoder_segment_ids, encoder_positions,
                          enable_dropout=enable_dropout)
    return self.decode(encoded, encoder_input_tokens, decoder_input_tokens, decoder_target_tokens,
                       encoder_segment_ids, decoder_segment_ids, decoder_positions,
                       enable_dropout=enable_dropout, decode=decode)
