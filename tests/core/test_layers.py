"""Tests for rec_t5x.layers against NumPy re-implementations of the T5 conventions."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rec_t5x import axes
from rec_t5x import layers


def _init(module, *args, seed=0, **kwargs):
  """Random float32 parameters for `module` without running its initialisers (fast on CPU).

  Returns (boxed, params): the `jax.eval_shape` tree (with logical axis names) and NumPy values.
  """
  boxed = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *args, **kwargs))["params"]
  rng = np.random.RandomState(seed)
  params = jax.tree.map(lambda s: rng.normal(0.0, 0.5, s.shape).astype(np.float32),
                        nn.unbox(boxed))
  return boxed, params


def _normal(shape, seed):
  """NumPy normal samples (jax.random would compile a kernel per shape on this CPU)."""
  return np.random.RandomState(seed).normal(size=shape).astype(np.float32)


def _float_bucket(relative: int, bidirectional: bool, num_buckets: int, max_distance: int) -> int:
  """Reference: T5's bucket formula in float64 with a small epsilon (as T5X guards boundaries)."""
  n = -relative
  offset = 0
  if bidirectional:
    num_buckets //= 2
    offset = num_buckets if n < 0 else 0
    n = abs(n)
  else:
    n = max(n, 0)
  max_exact = num_buckets // 2
  if n < max_exact:
    return offset + n
  log_part = math.log(n / max_exact + 1e-9) / math.log(max_distance / max_exact)
  return offset + min(max_exact + int(log_part * (num_buckets - max_exact)), num_buckets - 1)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (16, 64), (64, 300)])
def test_relative_position_bucket_matches_float_formula(bidirectional, num_buckets, max_distance):
  relative = np.arange(-1000, 1001)
  got = np.asarray(layers.relative_position_bucket(
      relative, bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance))
  want = [_float_bucket(int(r), bidirectional, num_buckets, max_distance) for r in relative]
  np.testing.assert_array_equal(got, want)
  assert got.min() >= 0 and got.max() == num_buckets - 1


def test_relative_position_bucket_documented_values():
  enc = lambda r: int(layers.relative_position_bucket(np.array(r), bidirectional=True,
                                                      num_buckets=32, max_distance=128))
  dec = lambda r: int(layers.relative_position_bucket(np.array(r), bidirectional=False,
                                                      num_buckets=32, max_distance=128))
  # Encoder: 8 exact buckets per side, keys after the query in 16..31, exact integer boundaries.
  assert [enc(r) for r in (0, -1, -7, -8, -15, -16, -32, -64, -127, -128, -139)] == [
      0, 1, 7, 8, 9, 10, 12, 14, 15, 15, 15]
  assert [enc(r) for r in (1, 7, 8, 16, 128, 500)] == [17, 23, 24, 26, 31, 31]
  # Decoder: 16 exact buckets, future keys in bucket 0, >= 128 in the last bucket.
  assert [dec(r) for r in (0, -1, -15, -16, -23, -127, -128, 5)] == [0, 1, 15, 16, 18, 31, 31, 0]


def test_relative_position_biases_gathers_the_table_per_head():
  module = layers.RelativePositionBiases(num_buckets=32, max_distance=128, num_heads=3)
  q_pos = jnp.array([[0, 1, 2], [5, 6, 7]])
  k_pos = jnp.array([[0, 1, 2, 3], [3, 4, 5, 20]])
  boxed, params = _init(module, q_pos, k_pos, bidirectional=True)
  table = params["rel_embedding"]
  assert boxed["rel_embedding"].names == (axes.HEADS, axes.RELPOS_BUCKETS)
  bias = np.asarray(module.apply({"params": params}, q_pos, k_pos, bidirectional=True))
  assert bias.shape == (2, 3, 3, 4)
  for b in range(2):
    for i in range(3):
      for j in range(4):
        bucket = _float_bucket(int(k_pos[b, j] - q_pos[b, i]), True, 32, 128)
        np.testing.assert_array_equal(bias[b, :, i, j], table[:, bucket])


def test_attention_mask_combines_padding_segments_and_causality():
  valid = jnp.array([[True, True, True, False]])
  segments = jnp.array([[1, 1, 2, 0]])
  mask = np.asarray(layers.attention_mask(valid, valid, query_segment_ids=segments,
                                          key_segment_ids=segments, causal=True))[0, 0]
  want = np.array([[1, 0, 0, 0],
                   [1, 1, 0, 0],
                   [0, 0, 1, 0],
                   [0, 0, 0, 0]], bool)
  np.testing.assert_array_equal(mask, want)
  with pytest.raises(ValueError, match="segment_ids"):
    layers.attention_mask(valid, valid, query_segment_ids=segments)
  bias = np.asarray(layers.mask_to_bias(jnp.array([True, False])))
  np.testing.assert_array_equal(bias, np.array([0.0, -1e10], np.float32))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_rms_norm_matches_numpy_and_computes_in_float32(dtype):
  x = _normal((2, 3, 16), 0) * 5.0
  module = layers.RmsNorm(epsilon=1e-6, dtype=dtype)
  boxed, _ = _init(module, x)
  scale = np.random.RandomState(0).uniform(0.5, 1.5, 16).astype(np.float32)
  out = module.apply({"params": {"scale": scale}}, jnp.asarray(x, dtype))
  assert out.dtype == dtype
  assert boxed["scale"].names == (axes.EMBED,)
  x32 = np.asarray(jnp.asarray(x, dtype), np.float32)
  want = x32 / np.sqrt(np.mean(x32**2, axis=-1, keepdims=True) + 1e-6) * scale
  np.testing.assert_allclose(np.asarray(out, np.float32),
                             np.asarray(jnp.asarray(want, dtype), np.float32), rtol=1e-6, atol=1e-6)


def _gelu_tanh(x):
  return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def test_gated_mlp_is_wo_of_gelu_wi0_times_wi1():
  x = _normal((2, 5, 8), 0)
  module = layers.MlpBlock(intermediate_dim=12, activations=("gelu", "linear"))
  boxed, p = _init(module, x)
  assert sorted(p) == ["wi_0", "wi_1", "wo"]
  assert boxed["wi_0"]["kernel"].names == (axes.EMBED, axes.MLP)
  assert boxed["wo"]["kernel"].names == (axes.MLP, axes.EMBED)
  xn = np.asarray(x)
  want = (_gelu_tanh(xn @ p["wi_0"]["kernel"]) * (xn @ p["wi_1"]["kernel"])) @ p["wo"]["kernel"]
  np.testing.assert_allclose(np.asarray(module.apply({"params": p}, x)), want, rtol=1e-5,
                             atol=1e-5)


def test_single_activation_mlp_names_its_projection_wi():
  module = layers.MlpBlock(intermediate_dim=6, activations=("relu",))
  x = jnp.ones((1, 2, 4))
  _, p = _init(module, x)
  assert sorted(p) == ["wi", "wo"]
  want = np.maximum(np.asarray(x) @ p["wi"]["kernel"], 0.0) @ p["wo"]["kernel"]
  np.testing.assert_allclose(np.asarray(module.apply({"params": p}, x)), want, rtol=1e-6)


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_attention_has_no_runtime_scaling_and_masks_with_bias():
  heads, head_dim, embed = 2, 4, 8
  xq = _normal((2, 3, embed), 0)
  xkv = _normal((2, 5, embed), 1)
  key_valid = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
  mask = layers.attention_mask(jnp.ones((2, 3), bool), key_valid)
  extra = _normal((1, heads, 3, 5), 2)
  bias = layers.mask_to_bias(mask) + extra
  module = layers.MultiHeadDotProductAttention(num_heads=heads, head_dim=head_dim)
  boxed, p = _init(module, xq, xkv, bias)
  assert boxed["query"]["kernel"].names == (axes.EMBED, axes.JOINED_KV)
  assert boxed["out"]["kernel"].names == (axes.JOINED_KV, axes.EMBED)
  assert p["query"]["kernel"].shape == (embed, heads * head_dim)
  assert p["out"]["kernel"].shape == (heads * head_dim, embed)

  q = (np.asarray(xq) @ p["query"]["kernel"]).reshape(2, 3, heads, head_dim)
  k = (np.asarray(xkv) @ p["key"]["kernel"]).reshape(2, 5, heads, head_dim)
  v = (np.asarray(xkv) @ p["value"]["kernel"]).reshape(2, 5, heads, head_dim)
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) + np.asarray(bias)
  weights = _softmax(logits)
  assert np.all(weights[0, :, :, 3:] == 0.0)  # padded keys get exactly no weight
  out = np.einsum("bhqk,bkhd->bqhd", weights, v).reshape(2, 3, heads * head_dim)
  want = out @ p["out"]["kernel"]
  np.testing.assert_allclose(np.asarray(module.apply({"params": p}, xq, xkv, bias)), want,
                             rtol=1e-5, atol=1e-5)


def test_query_kernel_init_folds_in_one_over_sqrt_head_dim():
  head_dim = 16
  module = layers.MultiHeadDotProductAttention(num_heads=16, head_dim=head_dim)
  x = jnp.ones((1, 1, 256))
  init = jax.jit(lambda key: module.init(key, x, x, jnp.zeros((1, 1, 1, 1))))
  p = nn.unbox(init(jax.random.PRNGKey(0))["params"])
  ratio = np.std(p["key"]["kernel"]) / np.std(p["query"]["kernel"])
  assert abs(ratio - np.sqrt(head_dim)) < 0.05 * np.sqrt(head_dim)


def test_dense_contracts_trailing_dims_of_a_2d_kernel():
  module = layers.Dense((6,), (axes.JOINED_KV, axes.EMBED), contract_dims=2)
  x = _normal((2, 3, 4, 5), 0)
  _, params = _init(module, x)
  kernel = params["kernel"]
  assert kernel.shape == (20, 6)
  np.testing.assert_allclose(np.asarray(module.apply({"params": params}, x)),
                             np.asarray(x).reshape(2, 3, 20) @ kernel, rtol=1e-5, atol=1e-5)


def test_embed_lookup_and_attend_share_the_table():
  module = layers.Embed(num_embeddings=10, features=4)
  ids = jnp.array([[1, 9, 0]])
  boxed, params = _init(module, ids)
  variables = {"params": params}
  table = params["embedding"]
  assert boxed["embedding"].names == (axes.VOCAB, axes.EMBED)
  np.testing.assert_array_equal(np.asarray(module.apply(variables, ids)), table[[[1, 9, 0]]])
  query = np.ones((1, 4), np.float32)
  np.testing.assert_allclose(np.asarray(module.apply(variables, query, method="attend")),
                             query @ table.T, rtol=1e-6)


def test_mlp_dropout_only_when_enabled_and_reproducible():
  module = layers.MlpBlock(intermediate_dim=32, dropout_rate=0.5)
  x = _normal((2, 4, 8), 0)
  variables = {"params": _init(module, x)[1]}
  plain = module.apply(variables, x)
  np.testing.assert_array_equal(plain, module.apply(variables, x, enable_dropout=False))
  drop = lambda seed: module.apply(variables, x, enable_dropout=True,
                                   rngs={"dropout": jax.random.PRNGKey(seed)})
  assert not np.allclose(drop(0), plain)
  np.testing.assert_array_equal(drop(0), drop(0))
  assert not np.allclose(drop(0), drop(1))


def _reference_grads(fn, *args):
  return jax.grad(lambda *a: jnp.sum(jnp.sin(fn(*a))), argnums=tuple(range(len(args))))(*args)


@pytest.mark.parametrize("name, custom, reference, shapes", [
    ("matmul", layers.matmul, lambda x, k: x @ k, [(6, 5), (5, 3)]),
    ("attention_scores", layers.attention_scores,
     lambda q, k: jnp.einsum("bhqd,bhkd->bhqk", q, k), [(2, 3, 4, 5), (2, 3, 6, 5)]),
    ("attention_values", layers.attention_values,
     lambda w, v: jnp.einsum("bhqk,bhkd->bhqd", w, v), [(2, 3, 4, 6), (2, 3, 6, 5)]),
    ("softmax", layers.softmax, lambda x: jax.nn.softmax(x, axis=-1), [(2, 3, 4, 7)]),
])
def test_custom_vjp_products_match_autodiff(name, custom, reference, shapes):
  rng = np.random.default_rng(0)
  args = [jnp.asarray(rng.standard_normal(s), jnp.float32) for s in shapes]
  np.testing.assert_allclose(custom(*args), reference(*args), rtol=1e-5, atol=1e-6, err_msg=name)
  for got, want in zip(_reference_grads(custom, *args), _reference_grads(reference, *args)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=name)
