"""Tests for rec_t5x.network: config validation, parameter tree, packing, positions, dtypes, gin."""
import dataclasses
import functools
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rec_t5x import axes
from rec_t5x import checkpoint_import
from rec_t5x import network

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fixture_model(shared_fixtures):
  """(config, params, inputs) of the T5X fixture checkpoint."""
  config = checkpoint_import.t5x_config_from_json(shared_fixtures / "t5x_config.json")
  params = checkpoint_import.load_t5x_legacy(shared_fixtures / "t5x_legacy" / "checkpoint_0")
  inputs = {name: np.load(shared_fixtures / "inputs" / f"{name}.npy")
            for name in ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens")}
  return config, params, inputs


def _small_config(**overrides) -> network.T5Config:
  fields = dict(vocab_size=40, emb_dim=16, num_heads=2, head_dim=4, mlp_dim=24,
                num_encoder_layers=2, num_decoder_layers=2, dropout_rate=0.3)
  fields.update(overrides)
  return network.T5Config(**fields)


def _boxed_params(config):
  tokens = jnp.ones((1, 1), jnp.int32)
  return jax.eval_shape(lambda: network.Transformer(config).init(
      jax.random.PRNGKey(0), tokens, tokens, tokens))["params"]


def _random_params(config, seed=0):
  rng = np.random.RandomState(seed)
  return jax.tree.map(lambda s: rng.normal(0.0, 0.3, s.shape).astype(np.float32),
                      nn.unbox(_boxed_params(config)))


@pytest.mark.parametrize("field,value,match", [
    ("vocab_size", 0, "vocab_size=0"),
    ("num_heads", 2.5, "num_heads=2.5"),
    ("mlp_activations", ("gelu", "bogus"), "mlp_activations.*bogus"),
    ("mlp_activations", (), "mlp_activations"),
    ("mlp_activations", "gelu", "mlp_activations"),
    ("dropout_rate", 1.0, "dropout_rate=1.0"),
    ("dtype", "float16", "dtype='float16'"),
    ("relpos_num_buckets", 7, "relpos_num_buckets=7"),
    ("relpos_max_distance", 8, "relpos_max_distance=8"),
    ("layer_norm_epsilon", 0.0, "layer_norm_epsilon=0.0"),
    ("logits_via_embedding", 1, "logits_via_embedding=1"),
])
def test_config_rejects_bad_values_naming_the_field(field, value, match):
  with pytest.raises(ValueError, match=match):
    _small_config(**{field: value})


def test_config_accepts_a_list_of_activations_and_freezes_it():
  config = _small_config(mlp_activations=["gelu", "linear"])
  assert config.mlp_activations == ("gelu", "linear")
  assert config.activation_dtype == jnp.float32
  with pytest.raises(dataclasses.FrozenInstanceError):
    config.emb_dim = 3  # type: ignore[misc]


_EXPECTED_AXES = {
    "embedding": (axes.VOCAB, axes.EMBED),
    "query": (axes.EMBED, axes.JOINED_KV), "key": (axes.EMBED, axes.JOINED_KV),
    "value": (axes.EMBED, axes.JOINED_KV), "out": (axes.JOINED_KV, axes.EMBED),
    "wi_0": (axes.EMBED, axes.MLP), "wi_1": (axes.EMBED, axes.MLP), "wo": (axes.MLP, axes.EMBED),
    "rel_embedding": (axes.HEADS, axes.RELPOS_BUCKETS), "scale": (axes.EMBED,),
    "logits_dense": (axes.EMBED, axes.VOCAB),
}


def test_parameter_tree_and_logical_axes_equal_t5x(fixture_model):
  config, params, _ = fixture_model
  boxed = _boxed_params(config)
  flat_boxed = dict(checkpoint_import.tree.flatten_until(
      boxed, lambda x: isinstance(x, nn.Partitioned)))
  assert {p: tuple(v.value.shape) for p, v in flat_boxed.items()} == {
      p: v.shape for p, v in checkpoint_import.tree.flatten(params)}
  for path, box in flat_boxed.items():
    parts = path.split("/")
    owner = parts[-1] if parts[-1] in ("embedding", "rel_embedding", "scale") else parts[-2]
    assert box.names == _EXPECTED_AXES[owner], path


@functools.lru_cache(maxsize=None)
def _jit_apply(config):
  """`Transformer(config).apply` under jit, shared by the tests (one compilation per signature)."""
  return jax.jit(network.Transformer(config).apply,
                 static_argnames=("method", "enable_dropout", "decode", "max_decode_length",
                                  "mutable"))


def _logits(config, params, *args):
  return np.asarray(_jit_apply(config)({"params": params}, *args))


def test_packed_rows_give_the_logits_of_each_sequence_alone(fixture_model):
  config, params, inputs = fixture_model
  enc, dec_in, dec_tgt = (inputs[k] for k in ("encoder_input_tokens", "decoder_input_tokens",
                                              "decoder_target_tokens"))
  enc_len = (enc > 0).sum(1)
  dec_len = (dec_tgt > 0).sum(1)
  rows = [1, 2]  # pack examples 1 and 2 into one row, with padding after the pair
  packed = {k: np.zeros((1, 80 if k.startswith("e") else 24), np.int32)
            for k in ("e_tok", "e_seg", "e_pos", "d_in", "d_tgt", "d_seg", "d_pos")}
  e0 = d0 = 0
  for seg, row in enumerate(rows, start=1):
    le, ld = enc_len[row], dec_len[row]
    packed["e_tok"][0, e0:e0 + le] = enc[row, :le]
    packed["e_seg"][0, e0:e0 + le] = seg
    packed["e_pos"][0, e0:e0 + le] = np.arange(le)
    packed["d_in"][0, d0:d0 + ld] = dec_in[row, :ld]
    packed["d_tgt"][0, d0:d0 + ld] = dec_tgt[row, :ld]
    packed["d_seg"][0, d0:d0 + ld] = seg
    packed["d_pos"][0, d0:d0 + ld] = np.arange(ld)
    e0, d0 = e0 + le, d0 + ld
  alone = _logits(config, params, enc, dec_in, dec_tgt)
  together = _logits(config, params, packed["e_tok"], packed["d_in"], packed["d_tgt"],
                     packed["e_seg"], packed["d_seg"], packed["e_pos"], packed["d_pos"])
  d0 = 0
  for row in rows:
    ld = dec_len[row]
    np.testing.assert_allclose(together[0, d0:d0 + ld], alone[row, :ld], atol=1e-5, rtol=0)
    d0 += ld


def test_relative_positions_come_from_the_given_positions():
  config = _small_config()
  params = _random_params(config)
  rng = np.random.RandomState(1)
  enc = rng.randint(2, 40, (2, 12)).astype(np.int32)
  dec = rng.randint(2, 40, (2, 6)).astype(np.int32)
  apply = _jit_apply(config)
  encode = lambda positions: np.asarray(apply({"params": params}, enc, None, positions,
                                              method="encode"))
  base = np.asarray(apply({"params": params}, enc, method="encode"))
  arange = np.broadcast_to(np.arange(12, dtype=np.int32), (2, 12))
  np.testing.assert_allclose(encode(arange), base, atol=1e-6)  # default positions = arange
  np.testing.assert_allclose(encode(arange + 7), base, atol=1e-5)  # only differences matter
  spread = arange * 20  # distances beyond the exact buckets change the bias
  assert np.abs(encode(spread) - base).max() > 1e-3
  dec_pos = np.broadcast_to(np.arange(6, dtype=np.int32), (2, 6))
  logits = lambda pos: np.asarray(apply({"params": params}, enc, dec, dec, decoder_positions=pos))
  assert np.abs(logits(dec_pos * 20) - logits(dec_pos)).max() > 1e-3


def test_decode_steps_reproduce_teacher_forced_logits(fixture_model):
  config, params, inputs = fixture_model
  enc, dec_in = inputs["encoder_input_tokens"], inputs["decoder_input_tokens"]
  ones = np.ones_like(dec_in)  # every decoder position valid: only the causal mask applies
  apply = _jit_apply(config)
  full = np.asarray(apply({"params": params}, enc, dec_in, ones))
  encoded = apply({"params": params}, enc, method="encode")
  length = dec_in.shape[1]
  _, variables = apply({"params": params}, encoded, enc, dec_in[:, :1], ones[:, :1],
                       decode=True, max_decode_length=length, method="decode", mutable=("cache",))

  def step(cache, token):
    logits, new = apply({"params": params, "cache": cache}, None, None, token, token,
                        decode=True, max_decode_length=length, method="decode",
                        mutable=("cache",))
    return logits[:, 0], new["cache"]

  cache = variables["cache"]
  for i in range(length):
    step_logits, cache = step(cache, dec_in[:, i:i + 1])
    np.testing.assert_allclose(np.asarray(step_logits), full[:, i], atol=1e-5, rtol=0)
  assert int(cache["decoder"]["cache_index"]) == length


def test_decode_errors_are_explicit(fixture_model):
  config, params, inputs = fixture_model
  module = network.Transformer(config)
  tokens = inputs["decoder_input_tokens"]
  with pytest.raises(ValueError, match="decoder_target_tokens has shape"):
    module.apply({"params": params}, inputs["encoder_input_tokens"], tokens, tokens[:, :3])
  with pytest.raises(ValueError, match="packed inputs"):
    module.apply({"params": params}, None, inputs["encoder_input_tokens"], tokens, tokens,
                 decoder_segment_ids=np.ones_like(tokens), decode=True, method="decode",
                 mutable=["cache"])


def test_bfloat16_activations_run_close_to_float32(fixture_model):
  config, params, inputs = fixture_model
  args = [inputs[k] for k in ("encoder_input_tokens", "decoder_input_tokens",
                              "decoder_target_tokens")]
  f32 = _logits(config, params, *args)
  bf16 = _logits(dataclasses.replace(config, dtype="bfloat16"), params, *args)
  assert bf16.dtype == np.float32 and np.all(np.isfinite(bf16))
  valid = args[2] > 0
  assert 0.0 < np.abs(bf16 - f32)[valid].max() < 0.05 * np.abs(f32[valid]).max()


def test_logits_via_embedding_uses_the_scaled_embedding():
  config = _small_config(logits_via_embedding=True)
  params = _random_params(config)
  assert "logits_dense" not in params["decoder"]
  untied = dataclasses.replace(config, logits_via_embedding=False)
  params_untied = jax.tree.map(lambda x: x, params)
  emb = params["token_embedder"]["embedding"]
  params_untied["decoder"]["logits_dense"] = {"kernel": emb.T / np.sqrt(config.emb_dim)}
  tokens = np.random.RandomState(0).randint(1, 40, (2, 5)).astype(np.int32)
  np.testing.assert_allclose(_logits(config, params, tokens, tokens, tokens),
                             _logits(untied, params_untied, tokens, tokens, tokens),
                             atol=1e-5, rtol=1e-5)


def test_dropout_is_applied_only_when_enabled():
  config = _small_config()
  params = _random_params(config)
  tokens = np.random.RandomState(1).randint(2, 40, (2, 12)).astype(np.int32)
  positions = np.broadcast_to(np.arange(12, dtype=np.int32), (2, 12))
  apply = _jit_apply(config)
  plain = np.asarray(apply({"params": params}, tokens, None, positions, method="encode"))
  dropped = lambda seed: np.asarray(apply({"params": params}, tokens, None, positions,
                                          enable_dropout=True, method="encode",
                                          rngs={"dropout": jax.random.PRNGKey(seed)}))
  assert np.abs(dropped(0) - plain).max() > 1e-3
  np.testing.assert_array_equal(dropped(0), dropped(0))
  assert np.abs(dropped(0) - dropped(1)).max() > 1e-3


_GIN_DIMS = {  # FLAN-T5 sizes: d_model, heads, head_dim, d_ff, layers per stack
    "tiny": (128, 4, 32, 512, 2), "small": (512, 6, 64, 1024, 8),
    "base": (768, 12, 64, 2048, 12), "large": (1024, 16, 64, 2816, 24),
    "xl": (2048, 32, 64, 5120, 24), "xxl": (4096, 64, 64, 10240, 24),
}

# Parsed in a subprocess started outside the checkout: the repository's top-level `gin/` package
# would otherwise shadow the gin-config library on sys.path.
_GIN_SCRIPT = textwrap.dedent("""
    import dataclasses, json, sys
    import gin
    from rec_t5x import network
    out = {}
    for path in sys.argv[1:]:
      for bindings in ([], ["NUM_EMBEDDINGS = 1000"]):
        gin.clear_config()
        gin.parse_config_files_and_bindings([path], bindings)
        module = gin.get_configurable(network.Transformer)()
        assert isinstance(module, network.Transformer), type(module)
        out.setdefault(path, []).append(dataclasses.asdict(module.config))
    print(json.dumps(out))
""")


def test_model_gin_files_parse_and_bind_flan_t5_dimensions(tmp_path):
  files = [str(REPO_ROOT / "gin" / "models" / f"t5_1_1_{name}.gin") for name in _GIN_DIMS]
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  result = subprocess.run([sys.executable, "-c", _GIN_SCRIPT, *files], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  configs = json.loads(result.stdout.strip().splitlines()[-1])
  for name, (d_model, heads, head_dim, d_ff, layers) in _GIN_DIMS.items():
    default, overridden = configs[str(REPO_ROOT / "gin" / "models" / f"t5_1_1_{name}.gin")]
    assert default["vocab_size"] == 32128 and overridden["vocab_size"] == 1000
    got = (default["emb_dim"], default["num_heads"], default["head_dim"], default["mlp_dim"],
           default["num_encoder_layers"], default["num_decoder_layers"])
    assert got == (d_model, heads, head_dim, d_ff, layers, layers), name
    assert tuple(default["mlp_activations"]) == ("gelu", "linear")
    assert default["logits_via_embedding"] is False and default["dropout_rate"] == 0.0


def test_small_config_has_flan_t5_small_parameter_count():
  d_model, heads, head_dim, d_ff, layers = _GIN_DIMS["small"]
  config = network.T5Config(vocab_size=32128, emb_dim=d_model, num_heads=heads, head_dim=head_dim,
                            mlp_dim=d_ff, num_encoder_layers=layers, num_decoder_layers=layers)
  shapes = checkpoint_import.model_param_shapes(config)
  assert sum(int(np.prod(s)) for s in shapes.values()) == 76_961_152  # google/flan-t5-small
