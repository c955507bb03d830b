"""Tests for rec_t5x.checkpoint_import: the three fixture formats reproduce the reference."""
import functools
import json
import shutil

import flax.serialization
import jax
import numpy as np
import pytest
import safetensors.numpy
import tensorstore as ts

from rec_t5x import checkpoint_import
from rec_t5x import network
from rec_t5x.checkpoint_import import tree

_INPUTS = ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens",
           "decoder_loss_weights")


@pytest.fixture(scope="module")
def inputs(shared_fixtures):
  return {name: np.load(shared_fixtures / "inputs" / f"{name}.npy") for name in _INPUTS}


def _load(fixtures, fmt):
  """(params, config, reference directory) for one of the fixture checkpoints."""
  if fmt == "hf":
    params, config = checkpoint_import.load_hf(fixtures / "hf_t5")
    return params, config, fixtures / "hf_reference"
  config = checkpoint_import.t5x_config_from_json(fixtures / "t5x_config.json")
  loader = {"t5x_legacy": checkpoint_import.load_t5x_legacy,
            "t5x_orbax": checkpoint_import.load_t5x_orbax}[fmt]
  return loader(fixtures / fmt / "checkpoint_0"), config, fixtures / "t5x_reference"


@functools.lru_cache(maxsize=None)
def _forward(config):
  module = network.Transformer(config)

  @jax.jit
  def forward(params, encoder_tokens, decoder_inputs, decoder_targets):
    encoded = module.apply({"params": params}, encoder_tokens, method="encode")
    logits = module.apply({"params": params}, encoded, encoder_tokens, decoder_inputs,
                          decoder_targets, method="decode")
    return encoded, logits

  return forward


def _token_log_likelihood(logits, targets, weights):
  log_probs = jax.nn.log_softmax(np.asarray(logits, np.float64), axis=-1)
  return np.take_along_axis(np.asarray(log_probs), targets[..., None], axis=-1)[..., 0] * weights


@pytest.mark.parametrize("fmt", ["t5x_legacy", "t5x_orbax", "hf"])
def test_import_reproduces_reference_outputs(shared_fixtures, inputs, fmt):
  params, config, reference = _load(shared_fixtures, fmt)
  checkpoint_import.check_compatible(params, checkpoint_import.model_param_shapes(config))
  encoded, logits = _forward(config)(params, inputs["encoder_input_tokens"],
                                     inputs["decoder_input_tokens"],
                                     inputs["decoder_target_tokens"])
  valid_dec = inputs["decoder_target_tokens"] > 0
  valid_enc = inputs["encoder_input_tokens"] > 0
  ref_logits = np.load(reference / "logits.npy")
  ref_encoded = np.load(reference / "encoder_output.npy")
  assert logits.shape == ref_logits.shape and encoded.shape == ref_encoded.shape
  np.testing.assert_allclose(np.asarray(logits)[valid_dec], ref_logits[valid_dec], atol=1e-4,
                             rtol=0)
  np.testing.assert_allclose(np.asarray(encoded)[valid_enc], ref_encoded[valid_enc], atol=1e-4,
                             rtol=0)
  token_ll = _token_log_likelihood(logits, inputs["decoder_target_tokens"],
                                   inputs["decoder_loss_weights"])
  np.testing.assert_allclose(token_ll, np.load(reference / "token_log_likelihood.npy"), atol=1e-4,
                             rtol=0)
  np.testing.assert_allclose(token_ll.sum(-1), np.load(reference / "sum_log_likelihood.npy"),
                             atol=1e-3, rtol=0)


def test_legacy_and_orbax_imports_are_bit_identical(shared_fixtures):
  legacy = dict(tree.flatten(_load(shared_fixtures, "t5x_legacy")[0]))
  orbax = dict(tree.flatten(_load(shared_fixtures, "t5x_orbax")[0]))
  assert legacy.keys() == orbax.keys() and len(legacy) == 52
  for name, value in legacy.items():
    assert value.dtype == np.float32 and orbax[name].dtype == np.float32, name
    np.testing.assert_array_equal(value, orbax[name], err_msg=name)


def test_t5x_config_from_json_matches_the_fixture_values(shared_fixtures, tmp_path):
  raw = json.loads((shared_fixtures / "t5x_config.json").read_text())
  config = checkpoint_import.t5x_config_from_json(shared_fixtures / "t5x_config.json")
  for key, value in {**raw["T5Config"], **raw["fixed_in_network_code"]}.items():
    if key != "float32_attention_logits":
      assert getattr(config, key) == (tuple(value) if isinstance(value, list) else value), key
  flat = tmp_path / "flat.json"
  flat.write_text(json.dumps(raw["T5Config"]))
  assert checkpoint_import.t5x_config_from_json(flat) == config
  flat.write_text(json.dumps({**raw["T5Config"], "num_experts": 4}))
  with pytest.raises(ValueError, match="num_experts"):
    checkpoint_import.t5x_config_from_json(flat)
  with pytest.raises(FileNotFoundError, match="nope.json"):
    checkpoint_import.t5x_config_from_json(tmp_path / "nope.json")


@pytest.mark.parametrize("relative,fmt", [
    ("t5x_legacy/checkpoint_0", "t5x_legacy"), ("t5x_legacy/checkpoint_0/checkpoint", "t5x_legacy"),
    ("t5x_orbax/checkpoint_0", "t5x_orbax"), ("t5x_orbax/checkpoint_0/state", "t5x_orbax"),
    ("hf_t5", "hf"), ("hf_t5/model.safetensors", "hf"),
])
def test_detect_format(shared_fixtures, relative, fmt):
  assert checkpoint_import.detect_format(shared_fixtures / relative) == fmt


def test_detect_and_load_returns_config_only_for_hf(shared_fixtures):
  params, config = checkpoint_import.detect_and_load(shared_fixtures / "t5x_orbax" / "checkpoint_0")
  assert config is None and "logits_dense" in params["decoder"]
  params, config = checkpoint_import.detect_and_load(shared_fixtures / "hf_t5")
  hf_config = json.loads((shared_fixtures / "hf_t5" / "config.json").read_text())
  assert (config.vocab_size, config.emb_dim, config.num_heads, config.head_dim, config.mlp_dim,
          config.num_encoder_layers, config.num_decoder_layers) == (
              hf_config["vocab_size"], hf_config["d_model"], hf_config["num_heads"],
              hf_config["d_kv"], hf_config["d_ff"], hf_config["num_layers"],
              hf_config["num_decoder_layers"])
  assert config.mlp_activations == ("gelu", "linear") and not config.logits_via_embedding


def test_detect_errors_name_the_path(tmp_path):
  with pytest.raises(FileNotFoundError, match="missing_dir"):
    checkpoint_import.detect_and_load(tmp_path / "missing_dir")
  (tmp_path / "stuff.txt").write_text("x")
  with pytest.raises(ValueError, match="stuff.txt"):
    checkpoint_import.detect_format(tmp_path)


# --------------------------------------------------------------------------------------------------
# T5X legacy details and errors.


def _write_zarr(directory, array, chunks, dtype):
  spec = {"driver": "zarr", "kvstore": {"driver": "file", "path": str(directory)},
          "metadata": {"shape": list(array.shape), "chunks": list(chunks), "dtype": dtype,
                       "compressor": {"id": "gzip", "level": 1}, "dimension_separator": "."}}
  ts.open(spec, create=True).result().write(array).result()
  return {**spec, "kvstore": {"driver": "file", "path": directory.name + "/"}}


def test_legacy_reads_chunk_grids_bfloat16_and_inline_arrays(tmp_path):
  rng = np.random.RandomState(0)
  kernel = rng.normal(size=(7, 11)).astype(np.float32)
  half = rng.normal(size=(4, 6)).astype(jax.numpy.bfloat16)
  inline = rng.normal(size=(3,)).astype(np.float32)
  target = {
      "encoder": {"kernel": _write_zarr(tmp_path / "target.encoder.kernel", kernel, (3, 5),
                                        "<f4")},
      "half": {"scale": _write_zarr(tmp_path / "target.half.scale", np.asarray(half), (2, 6),
                                    "bfloat16")},
      "inline": inline,
  }
  chunk_files = list((tmp_path / "target.encoder.kernel").glob("[0-9]*.[0-9]*"))
  assert len(chunk_files) == 9  # a 3 x 3 chunk grid with partial edge chunks
  state = {"version": 3, "optimizer": {"target": target, "state": {"step": np.array(0)}}}
  (tmp_path / "checkpoint").write_bytes(flax.serialization.msgpack_serialize(state))
  params = checkpoint_import.load_t5x_legacy(tmp_path)
  np.testing.assert_array_equal(params["encoder"]["kernel"], kernel)
  assert params["half"]["scale"].dtype == np.float32
  np.testing.assert_array_equal(params["half"]["scale"], np.asarray(half, np.float32))
  np.testing.assert_array_equal(params["inline"], inline)


def test_legacy_errors_name_file_and_parameter(shared_fixtures, tmp_path):
  with pytest.raises(FileNotFoundError, match="no_such_checkpoint"):
    checkpoint_import.load_t5x_legacy(tmp_path / "no_such_checkpoint")
  broken = tmp_path / "broken"
  broken.mkdir()
  (broken / "checkpoint").write_bytes(b"\xc1 not msgpack")
  with pytest.raises(ValueError, match="broken/checkpoint"):
    checkpoint_import.load_t5x_legacy(broken)
  (broken / "checkpoint").write_bytes(flax.serialization.msgpack_serialize({"params": {}}))
  with pytest.raises(ValueError, match="optimizer/target"):
    checkpoint_import.load_t5x_legacy(broken)
  copy = tmp_path / "copy"
  shutil.copytree(shared_fixtures / "t5x_legacy" / "checkpoint_0", copy)
  shutil.rmtree(copy / "target.encoder.layers_0.attention.query.kernel")
  with pytest.raises(ValueError, match="encoder/layers_0/attention/query/kernel"):
    checkpoint_import.load_t5x_legacy(copy)


def test_orbax_errors_name_the_path(tmp_path):
  with pytest.raises(FileNotFoundError, match="gone"):
    checkpoint_import.load_t5x_orbax(tmp_path / "gone")
  with pytest.raises(ValueError, match="not a T5X Orbax checkpoint"):
    checkpoint_import.load_t5x_orbax(tmp_path)


def test_check_compatible_names_parameter_and_both_shapes(shared_fixtures):
  params, config, _ = _load(shared_fixtures, "t5x_legacy")
  expected = checkpoint_import.model_param_shapes(config)
  bad = jax.tree.map(lambda x: x, params)
  bad["decoder"]["logits_dense"]["kernel"] = np.zeros((config.emb_dim, config.vocab_size + 1))
  del bad["encoder"]["encoder_norm"]
  bad["encoder"]["extra"] = {"kernel": np.zeros((2, 2))}
  with pytest.raises(ValueError) as info:
    checkpoint_import.check_compatible(bad, expected)
  message = str(info.value)
  assert (f"decoder/logits_dense/kernel: checkpoint shape ({config.emb_dim}, "
          f"{config.vocab_size + 1}) vs model shape ({config.emb_dim}, {config.vocab_size})"
          in message)
  assert "encoder/encoder_norm/scale: missing" in message
  assert "encoder/extra/kernel: in the checkpoint" in message
  checkpoint_import.check_compatible(params, jax.tree.map(lambda x: x.shape, params))


# --------------------------------------------------------------------------------------------------
# Hugging Face details and errors.


@pytest.fixture(scope="module")
def hf_tensors(shared_fixtures):
  return safetensors.numpy.load_file(str(shared_fixtures / "hf_t5" / "model.safetensors"))


@pytest.fixture(scope="module")
def hf_config(shared_fixtures):
  return json.loads((shared_fixtures / "hf_t5" / "config.json").read_text())


def _write_hf(directory, tensors, config=None):
  directory.mkdir(parents=True, exist_ok=True)
  safetensors.numpy.save_file(dict(tensors), str(directory / "model.safetensors"))
  if config is not None:
    (directory / "config.json").write_text(json.dumps(config))
  return directory


def _assert_same_params(a, b):
  fa, fb = dict(tree.flatten(a)), dict(tree.flatten(b))
  assert fa.keys() == fb.keys()
  for name in fa:
    np.testing.assert_array_equal(fa[name], fb[name], err_msg=name)


def test_hf_mapping_transposes_kernels_and_relpos(shared_fixtures, hf_tensors):
  params, _ = checkpoint_import.load_hf(shared_fixtures / "hf_t5")
  np.testing.assert_array_equal(params["token_embedder"]["embedding"], hf_tensors["shared.weight"])
  np.testing.assert_array_equal(params["decoder"]["logits_dense"]["kernel"],
                                hf_tensors["lm_head.weight"].T)
  np.testing.assert_array_equal(
      params["decoder"]["layers_1"]["encoder_decoder_attention"]["value"]["kernel"],
      hf_tensors["decoder.block.1.layer.1.EncDecAttention.v.weight"].T)
  np.testing.assert_array_equal(
      params["encoder"]["relpos_bias"]["rel_embedding"],
      hf_tensors["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].T)
  np.testing.assert_array_equal(params["decoder"]["layers_0"]["pre_mlp_layer_norm"]["scale"],
                                hf_tensors["decoder.block.0.layer.2.layer_norm.weight"])


def test_hf_transformers4_config_spelling_means_the_same(shared_fixtures, hf_tensors, hf_config,
                                                         tmp_path):
  reference, _ = checkpoint_import.load_hf(shared_fixtures / "hf_t5")
  config = {k: v for k, v in hf_config.items() if k != "scale_decoder_outputs"}
  config["tie_word_embeddings"] = False
  params, t5_config = checkpoint_import.load_hf(_write_hf(tmp_path / "v4", hf_tensors, config))
  assert not t5_config.logits_via_embedding
  _assert_same_params(params, reference)


def test_hf_tied_rescaled_output_uses_the_embedding(hf_tensors, hf_config, tmp_path):
  tensors = {k: v for k, v in hf_tensors.items() if k != "lm_head.weight"}
  config = {k: v for k, v in hf_config.items() if k != "scale_decoder_outputs"}  # T5 1.0
  params, t5_config = checkpoint_import.load_hf(_write_hf(tmp_path / "t5_10", tensors, config))
  assert t5_config.logits_via_embedding and "logits_dense" not in params["decoder"]
  tensors["lm_head.weight"] = tensors["shared.weight"]  # an explicitly saved tied copy is fine
  params2, t5_config2 = checkpoint_import.load_hf(_write_hf(tmp_path / "t5_10b", tensors, config))
  assert t5_config2 == t5_config
  _assert_same_params(params2, params)


def test_hf_tied_unscaled_output_copies_the_embedding(hf_tensors, hf_config, tmp_path):
  tensors = {k: v for k, v in hf_tensors.items() if k != "lm_head.weight"}
  params, t5_config = checkpoint_import.load_hf(_write_hf(tmp_path / "tied", tensors, hf_config))
  assert not t5_config.logits_via_embedding
  np.testing.assert_array_equal(params["decoder"]["logits_dense"]["kernel"],
                                hf_tensors["shared.weight"].T)


def test_hf_rescaled_output_with_a_different_lm_head_is_an_error(hf_tensors, hf_config, tmp_path):
  config = {k: v for k, v in hf_config.items() if k != "scale_decoder_outputs"}
  with pytest.raises(ValueError, match="lm_head.weight differs from shared.weight"):
    checkpoint_import.load_hf(_write_hf(tmp_path / "bad", hf_tensors, config))


def test_hf_without_config_and_sharded(shared_fixtures, hf_tensors, tmp_path):
  reference, _ = checkpoint_import.load_hf(shared_fixtures / "hf_t5")
  lone = _write_hf(tmp_path / "lone", hf_tensors) / "model.safetensors"
  params, config = checkpoint_import.load_hf(lone)
  assert config is None
  _assert_same_params(params, reference)

  sharded = tmp_path / "sharded"
  sharded.mkdir()
  names = sorted(hf_tensors)
  weight_map = {}
  for i, part in enumerate((names[:20], names[20:])):
    file_name = f"model-0000{i + 1}-of-00002.safetensors"
    safetensors.numpy.save_file({k: hf_tensors[k] for k in part}, str(sharded / file_name))
    weight_map.update({k: file_name for k in part})
  (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
  shutil.copy(shared_fixtures / "hf_t5" / "config.json", sharded / "config.json")
  params, config = checkpoint_import.detect_and_load(sharded)
  assert config is not None
  _assert_same_params(params, reference)


def test_hf_unknown_and_missing_tensors_are_reported(hf_tensors, hf_config, tmp_path):
  extra = dict(hf_tensors)
  extra["encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"] = np.zeros((32, 2))
  extra["encoder.block.0.layer.0.SelfAttention.q_proj.weight"] = np.zeros((2, 2))
  with pytest.raises(ValueError, match="2 tensors.*block.0.layer.0.SelfAttention.q_proj.*"
                                       "block.1.layer.0.SelfAttention.relative_attention_bias"):
    checkpoint_import.load_hf(_write_hf(tmp_path / "extra", extra, hf_config))
  dropped = "decoder.block.1.layer.2.DenseReluDense.wo.weight"
  missing = {k: v for k, v in hf_tensors.items() if k != dropped}
  with pytest.raises(ValueError, match="decoder/layers_1/mlp/wo/kernel: missing"):
    checkpoint_import.load_hf(_write_hf(tmp_path / "missing", missing, hf_config))
  alias = dict(hf_tensors)
  alias["encoder.embed_tokens.weight"] = hf_tensors["shared.weight"] + 1.0
  with pytest.raises(ValueError, match="encoder.embed_tokens.weight' differs"):
    checkpoint_import.load_hf(_write_hf(tmp_path / "alias", alias, hf_config))
  broken = {k: v for k, v in hf_config.items() if k != "d_kv"}
  with pytest.raises(ValueError, match="config.json: missing T5 config key 'd_kv'"):
    checkpoint_import.load_hf(_write_hf(tmp_path / "noconf", hf_tensors, broken))
  with pytest.raises(FileNotFoundError, match="absent"):
    checkpoint_import.load_hf(tmp_path / "absent")


@pytest.mark.parametrize("fields,activations", [
    ({"feed_forward_proj": "gated-gelu"}, ("gelu", "linear")),
    ({"feed_forward_proj": "gated-gelu", "dense_act_fn": "gelu_new"}, ("gelu", "linear")),
    ({"feed_forward_proj": "relu"}, ("relu",)),
    ({"feed_forward_proj": "gated-silu"}, ("silu", "linear")),
    ({"feed_forward_proj": "gelu", "dense_act_fn": "gelu"}, ("gelu_exact",)),
])
def test_hf_activation_names(hf_config, fields, activations):
  config = {k: v for k, v in hf_config.items() if k not in ("feed_forward_proj", "dense_act_fn")}
  t5 = checkpoint_import.t5_config_from_hf({**config, **fields}, logits_via_embedding=False)
  assert t5.mlp_activations == activations


def test_hf_unsupported_activation_is_an_error(hf_config):
  config = {**hf_config, "feed_forward_proj": "gated-mish", "dense_act_fn": "mish"}
  with pytest.raises(ValueError, match="'mish'"):
    checkpoint_import.t5_config_from_hf(config, logits_via_embedding=False)
