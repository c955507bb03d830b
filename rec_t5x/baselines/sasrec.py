"""SASRec (Kang & McAuley, ICDM 2018) with RecBole-style cross-entropy over all items.

Network (Flax linen): item embedding (index 0 = padding, item i is token i + 1) plus a learned
position embedding, LayerNorm, dropout, then `num_blocks` post-LayerNorm Transformer blocks of
causal multi-head self-attention (`flax.linen.MultiHeadDotProductAttention`) and a GELU
feed-forward layer. The hidden state at position t scores every item by a dot product with the
shared item embedding table; the loss is softmax cross-entropy over the whole catalogue.

Training data ("every prefix position"): each user's training sequence is cut into windows of
`max_len` inputs, aligned to the end of the sequence and `window_stride` apart. Thanks to causal
attention, position j of a window predicts the next item from the items up to j, so one window
trains up to `max_len` prefixes at once. Every target position of every training sequence (all
but the first item) is trained exactly once per epoch: a window's loss mask keeps only the targets
that the next-later window does not cover, so each target sees at least `max_len - window_stride`
items of context (or the whole prefix near the start). RecBole instead materialises one sample
per prefix (loss only at its last position), which gives every target the full `max_len` context
at `max_len` times the compute; `window_stride` trades between the two (docs/baselines.md).

Evaluation: the last `max_len` items of the split's input prefix; the hidden state at the last
position scores all items.

`jax.jit` is applied here rather than through `rec_t5x.partitioning`: single device, no sharding.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

from flax import linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rec_t5x.baselines import common
from rec_t5x.baselines import evaluation
from rec_t5x.data import dataset as dataset_lib


@dataclasses.dataclass(frozen=True)
class SASRecConfig:
  """SASRec hyper-parameters (defaults: RecBole 1.2.1's SASRec defaults).

  Attributes:
    hidden_dim: embedding and hidden size.
    num_blocks: Transformer blocks.
    num_heads: attention heads (must divide hidden_dim).
    inner_dim: feed-forward hidden size.
    dropout: dropout on embeddings and block outputs, in [0, 1).
    attention_dropout: dropout on attention weights, in [0, 1).
    max_len: maximum input length (items of history).
    window_stride: distance between training windows, in [1, max_len] (None = max_len).
    layer_norm_eps: LayerNorm epsilon.
    init_std: standard deviation of the normal initialiser of embeddings and kernels.
  """
  hidden_dim: int = 64
  num_blocks: int = 2
  num_heads: int = 2
  inner_dim: int = 256
  dropout: float = 0.5
  attention_dropout: float = 0.5
  max_len: int = 50
  window_stride: int | None = None
  layer_norm_eps: float = 1e-12
  init_std: float = 0.02

  def __post_init__(self):
    for field in ("hidden_dim", "num_blocks", "num_heads", "inner_dim", "max_len"):
      value = getattr(self, field)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"SASRecConfig.{field} = {value!r}; expected an integer >= 1")
    if self.hidden_dim % self.num_heads:
      raise ValueError(f"SASRecConfig.num_heads = {self.num_heads} must divide hidden_dim = "
                       f"{self.hidden_dim}")
    for field in ("dropout", "attention_dropout"):
      value = getattr(self, field)
      if not 0.0 <= value < 1.0:
        raise ValueError(f"SASRecConfig.{field} = {value!r}; expected a float in [0, 1)")
    if self.window_stride is not None and not (
        isinstance(self.window_stride, int) and 1 <= self.window_stride <= self.max_len):
      raise ValueError(f"SASRecConfig.window_stride = {self.window_stride!r}; expected None or "
                       f"an integer in [1, max_len={self.max_len}]")
    for field in ("layer_norm_eps", "init_std"):
      value = getattr(self, field)
      if not (math.isfinite(value) and value > 0):
        raise ValueError(f"SASRecConfig.{field} = {value!r}; expected a finite float > 0")

  @property
  def stride(self) -> int:
    return self.max_len if self.window_stride is None else self.window_stride


class Block(nn.Module):
  """Post-LayerNorm Transformer block: causal self-attention, then a GELU feed-forward layer."""
  config: SASRecConfig

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, deterministic: bool) -> jax.Array:
    """Args: x float32 [batch, length, hidden]; mask bool [batch, 1, length, length].

    Returns: float32 [batch, length, hidden].
    """
    c = self.config
    init = nn.initializers.normal(c.init_std)
    attended = nn.MultiHeadDotProductAttention(
        num_heads=c.num_heads, qkv_features=c.hidden_dim, out_features=c.hidden_dim,
        dropout_rate=c.attention_dropout, kernel_init=init, name="attention")(
            x, x, mask=mask, deterministic=deterministic)
    attended = nn.Dropout(c.dropout)(attended, deterministic=deterministic)
    x = nn.LayerNorm(epsilon=c.layer_norm_eps, name="attention_norm")(x + attended)
    # tanh-approximate GELU: erf is 4x slower on CPU and the two differ by < 1e-3.
    hidden = nn.gelu(nn.Dense(c.inner_dim, kernel_init=init, name="mlp_in")(x), approximate=True)
    hidden = nn.Dense(c.hidden_dim, kernel_init=init, name="mlp_out")(hidden)
    hidden = nn.Dropout(c.dropout)(hidden, deterministic=deterministic)
    return nn.LayerNorm(epsilon=c.layer_norm_eps, name="mlp_norm")(x + hidden)


class SASRec(nn.Module):
  """The SASRec network; `__call__` encodes, `item_logits` scores the catalogue."""
  config: SASRecConfig
  num_items: int

  def setup(self):
    c = self.config
    init = nn.initializers.normal(c.init_std)
    self.item_embed = nn.Embed(self.num_items + 1, c.hidden_dim, embedding_init=init)
    self.position_embed = nn.Embed(c.max_len, c.hidden_dim, embedding_init=init)
    self.input_norm = nn.LayerNorm(epsilon=c.layer_norm_eps)
    self.input_dropout = nn.Dropout(c.dropout)
    self.blocks = [Block(c, name=f"block_{i}") for i in range(c.num_blocks)]

  def __call__(self, tokens: jax.Array, deterministic: bool = True) -> jax.Array:
    """Encodes left-aligned token windows.

    Args:
      tokens: int32 [batch, length] item index + 1, 0 = padding after the last item.
      deterministic: False applies dropout (needs a "dropout" rng).

    Returns:
      float32 [batch, length, hidden]; position t depends only on tokens[:, :t + 1].
    """
    positions = jnp.arange(tokens.shape[1])[None, :]
    x = self.item_embed(tokens) + self.position_embed(positions)
    x = self.input_dropout(self.input_norm(x), deterministic=deterministic)
    valid = tokens > 0
    mask = nn.combine_masks(nn.make_causal_mask(tokens), nn.make_attention_mask(valid, valid))
    for block in self.blocks:
      x = block(x, mask, deterministic)
    return x

  def item_logits(self, hidden: jax.Array) -> jax.Array:
    """float32 [..., num_items]: dot products with the item embeddings (padding row excluded)."""
    return hidden @ self.item_embed.embedding[1:].T


def training_windows(sequences: list[np.ndarray], max_len: int,
                     stride: int) -> dict[str, np.ndarray]:
  """Cuts training sequences into left-aligned windows (see the module docstring).

  Args:
    sequences: per user int [length] item indices (chronological training sequence).
    max_len: inputs per window.
    stride: distance between the ends of consecutive windows, in [1, max_len].

  Returns:
    {"tokens": int32 [windows, max_len] (item + 1, 0 = padding), "targets": int32 [windows,
     max_len] (next item index, 0 on padding), "mask": float32 [windows, max_len] (1 where the
     target is trained in this window)}. Each target position of each sequence has mask 1 in
    exactly one window.
  """
  tokens, targets, masks = [], [], []
  for seq in sequences:
    seq = np.asarray(seq, dtype=np.int64)
    end = len(seq)  # Exclusive end of the window's targets.
    while end >= 2:
      start = max(0, end - 1 - max_len)
      n = end - 1 - start
      first_trained = 1 if start == 0 else max(1, end - stride)
      row_tokens = np.zeros(max_len, np.int32)
      row_targets = np.zeros(max_len, np.int32)
      row_mask = np.zeros(max_len, np.float32)
      row_tokens[:n] = seq[start:end - 1] + 1
      row_targets[:n] = seq[start + 1:end]
      row_mask[:n] = (np.arange(start + 1, end) >= first_trained).astype(np.float32)
      tokens.append(row_tokens)
      targets.append(row_targets)
      masks.append(row_mask)
      if start == 0:
        break
      end -= stride
  if not tokens:
    raise ValueError("no training sequence has 2 or more items: SASRec has nothing to learn")
  return {"tokens": np.stack(tokens), "targets": np.stack(targets), "mask": np.stack(masks)}


def last_windows(prefixes: list[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray]:
  """The last `max_len` items of each prefix, left-aligned.

  Args:
    prefixes: per row int [length] item indices.
    max_len: window length.

  Returns:
    (tokens int32 [rows, max_len] item + 1 with 0 padding, lengths int32 [rows]; an empty prefix
    gives an all-padding row of length 0).
  """
  tokens = np.zeros((len(prefixes), max_len), np.int32)
  lengths = np.zeros(len(prefixes), np.int32)
  for r, prefix in enumerate(prefixes):
    tail = np.asarray(prefix[-max_len:], dtype=np.int64)
    tokens[r, :tail.size] = tail + 1
    lengths[r] = tail.size
  return tokens, lengths


def window_loss(params: Any, model: SASRec, batch: dict[str, jax.Array],
                rng: jax.Array) -> jax.Array:
  """Masked mean cross-entropy over all items of a [batch, max_len] window batch."""
  hidden = model.apply({"params": params}, batch["tokens"], deterministic=False,
                       rngs={"dropout": rng})
  logits = model.apply({"params": params}, hidden, method=SASRec.item_logits)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
  return jnp.sum(ce * batch["mask"]) / jnp.maximum(jnp.sum(batch["mask"]), 1.0)


def make_epoch_fn(model: SASRec, optimizer: optax.GradientTransformation):
  """A jitted `(params, opt_state, batches, rng) -> (params, opt_state, mean_loss)`.

  `batches` holds "tokens", "targets" int32 and "mask" float32, each [steps, batch, max_len];
  the steps run in order inside one `lax.scan`.
  """
  loss_and_grad = jax.value_and_grad(functools.partial(window_loss, model=model))

  def epoch(params, opt_state, batches, rng):

    def step(carry, inputs):
      params, opt_state = carry
      batch, index = inputs
      loss, grads = loss_and_grad(params, batch=batch, rng=jax.random.fold_in(rng, index))
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), loss

    steps = batches["tokens"].shape[0]
    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state),
                                               (batches, jnp.arange(steps)))
    return params, opt_state, jnp.mean(losses)

  return jax.jit(epoch, donate_argnums=(0, 1))


def make_encode_fn(model: SASRec):
  """A jitted `(params, tokens [rows, L], lengths [rows]) -> float32 [rows, hidden]`.

  The result is the hidden state at position `length - 1`, or zeros for an empty prefix.
  """

  @jax.jit
  def encode(params, tokens, lengths):
    hidden = model.apply({"params": params}, tokens)
    last = hidden[jnp.arange(tokens.shape[0]), jnp.maximum(lengths - 1, 0)]
    return jnp.where((lengths > 0)[:, None], last, 0.0)

  return encode


def make_score_fn(model: SASRec):
  """A jitted `(params, user_vectors [rows, hidden]) -> float32 [rows, num_items]`."""
  return jax.jit(lambda params, vectors: model.apply({"params": params}, vectors,
                                                      method=SASRec.item_logits))


def encode_prefixes(encode, params: Any, prefixes: list[np.ndarray], max_len: int,
                    batch_size: int) -> np.ndarray:
  """float32 [rows, hidden]: the last-position hidden state of each prefix, in fixed-size batches
  (the last one padded) so `encode` compiles once."""
  out = []
  for start in range(0, len(prefixes), batch_size):
    chunk = prefixes[start:start + batch_size]
    tokens, lengths = last_windows(chunk, max_len)
    pad = batch_size - len(chunk)
    if pad:
      tokens = np.concatenate([tokens, np.ones((pad, max_len), np.int32)])
      lengths = np.concatenate([lengths, np.full(pad, max_len, np.int32)])
    out.append(np.asarray(encode(params, jnp.asarray(tokens), jnp.asarray(lengths)))[:len(chunk)])
  return np.concatenate(out).astype(np.float32)


def make_scorer(encode, score, params: Any, split: evaluation.EvalSplit, max_len: int,
                batch_size: int) -> evaluation.Scorer:
  """Scores rows of `split` from the hidden state after its input prefix.

  Args:
    encode: from `make_encode_fn` (built once per model, so nothing recompiles per call).
    score: from `make_score_fn`.
    params: the network parameters.
    split: the split whose rows are scored.
    max_len: window length.
    batch_size: rows encoded at once.
  """

  def scorer(rows: np.ndarray) -> np.ndarray:
    vectors = encode_prefixes(encode, params, [split.prefix(int(r)) for r in rows], max_len,
                              batch_size)
    return np.asarray(score(params, jnp.asarray(vectors)))

  return scorer


def train(ds: dataset_lib.RecDataset, config: SASRecConfig, train_config: common.TrainConfig,
          log: common.Log = print) -> common.TrainedModel:
  """Trains SASRec on `ds` with early stopping.

  Args:
    ds: the dataset.
    config: network and windowing settings.
    train_config: optimisation and stopping settings; `batch_size` counts windows.
    log: progress lines.

  Returns:
    The `TrainedModel` with "user_embeddings" float32 [num_users, hidden] (hidden state after the
    test input prefix, i.e. train + validation item; the whole sequence for users that are not
    evaluated), "user_embeddings_validation" (after the training prefix) and "item_embeddings"
    float32 [num_items, hidden].
  """
  model = SASRec(config, ds.num_items)
  windows = training_windows([ds.train_sequence(u) for u in range(ds.num_users)],
                             config.max_len, config.stride)
  num_windows = len(windows["tokens"])
  log(f"sasrec: {num_windows} windows of {config.max_len}, "
      f"{int(windows['mask'].sum())} trained target positions")
  init_key = jax.random.key(train_config.seed)
  # XLA's RngBitGenerator ("rbg") makes dropout masks faster than threefry on CPU.
  dropout_key = jax.random.key(train_config.seed + 1, impl="rbg")
  params = jax.jit(model.init)(init_key, jnp.ones((1, config.max_len), jnp.int32))["params"]
  optimizer = optax.adam(train_config.learning_rate)
  epoch_fn = make_epoch_fn(model, optimizer)
  rng = np.random.default_rng(train_config.seed)
  validation = evaluation.make_split(ds, "validation")
  eval_batch = min(train_config.eval_batch_size, 256)
  encode, score = make_encode_fn(model), make_score_fn(model)

  def run_epoch(state, epoch):
    params, opt_state = state
    index, weights = common.shuffled_batches(num_windows, train_config.batch_size, rng)
    batches = {"tokens": jnp.asarray(windows["tokens"][index]),
               "targets": jnp.asarray(windows["targets"][index]),
               "mask": jnp.asarray(windows["mask"][index] * weights[..., None])}
    params, opt_state, loss = epoch_fn(params, opt_state, batches,
                                       jax.random.fold_in(dropout_key, epoch))
    return (params, opt_state), float(loss)

  def validate(params):
    scorer = make_scorer(encode, score, params, validation, config.max_len, eval_batch)
    return evaluation.evaluate(scorer, validation, ds.num_items, train_config.eval_batch_size,
                               train_config.top_n).metrics

  fit = common.fit((params, optimizer.init(params)), run_epoch, lambda s: s[0], validate,
                   train_config, log)
  test_prefixes = [ds.sequence(u)[:-1] if ds.test_item(u) is not None else ds.sequence(u)
                   for u in range(ds.num_users)]
  train_prefixes = [ds.train_sequence(u) for u in range(ds.num_users)]
  best = fit.params
  embeddings = {
      "user_embeddings": encode_prefixes(encode, best, test_prefixes, config.max_len, eval_batch),
      "user_embeddings_validation": encode_prefixes(encode, best, train_prefixes, config.max_len,
                                                    eval_batch),
      "item_embeddings": np.asarray(best["item_embed"]["embedding"][1:], np.float32),
  }
  return common.TrainedModel(
      name="sasrec", fit=fit, embeddings=embeddings,
      make_scorer=lambda split: make_scorer(encode, score, best, split, config.max_len,
                                            eval_batch))
