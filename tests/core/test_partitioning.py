"""Tests for rec_t5x.partitioning: meshes, rules, shardings, divisibility checks, data layout."""
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np
import optax
import pytest

from rec_t5x import network
from rec_t5x import partitioning


def test_eight_simulated_devices():
  assert jax.device_count() == 8


@pytest.mark.parametrize("config,shape", [
    (partitioning.MeshConfig(), (8, 1)),
    (partitioning.MeshConfig(num_partitions=8), (1, 8)),
    (partitioning.MeshConfig(num_partitions=2), (4, 2)),
    (partitioning.MeshConfig(mesh_shape=(2, 4)), (2, 4)),
    (partitioning.MeshConfig(mesh_shape=(-1, 4)), (2, 4)),
])
def test_mesh_shapes(config, shape):
  mesh = partitioning.make_mesh(config)
  assert (mesh.shape["data"], mesh.shape["model"]) == shape
  assert mesh.axis_names == ("data", "model")


@pytest.mark.parametrize("config,message", [
    (partitioning.MeshConfig(num_partitions=3), "num_partitions=3 does not divide the 8"),
    (partitioning.MeshConfig(mesh_shape=(4, 4)), r"needs data\*model=16 devices but 8"),
    (partitioning.MeshConfig(mesh_shape=(-1, 3)), "model=3 does not divide the 8"),
])
def test_mesh_errors_name_what_does_not_divide(config, message):
  with pytest.raises(ValueError, match=message):
    partitioning.make_mesh(config)


@pytest.mark.parametrize("kwargs,field", [
    ({"num_partitions": 0}, "num_partitions=0"),
    ({"mesh_shape": (2, 0)}, "mesh_shape=\\(2, 0\\)"),
    ({"mesh_shape": (1, 2, 4)}, "mesh_shape"),
])
def test_mesh_config_validation(kwargs, field):
  with pytest.raises(ValueError, match=f"MeshConfig.{field}"):
    partitioning.MeshConfig(**kwargs)


def test_standard_rules_map_t5x_axes():
  p = partitioning.Partitioner(partitioning.MeshConfig(num_partitions=2))
  assert p.mesh_spec(P("batch", "length")) == P("data", None)
  assert p.mesh_spec(P("vocab", "embed")) == P("model", None)
  assert p.mesh_spec(P("embed", "mlp")) == P(None, "model")
  assert p.mesh_spec(P("embed", "joined_kv")) == P(None, "model")
  assert p.mesh_spec(P("heads", "relpos_buckets")) == P("model", None)
  assert p.mesh_spec(P("batch", "length", "heads", "kv")) == P("data", None, "model", None)


def test_rules_overrides_and_2d_parameter_partitioning():
  rules = partitioning.standard_logical_axis_rules(additional_rules=[("vocab", None)])
  p = partitioning.Partitioner(partitioning.MeshConfig(num_partitions=2), rules)
  assert p.mesh_spec(P("vocab", "embed")) == P(None, None)
  rules2 = partitioning.standard_logical_axis_rules(parameter_partitioning_dims=2)
  p2 = partitioning.Partitioner(partitioning.MeshConfig(num_partitions=2), rules2)
  assert p2.mesh_spec(P("embed", "mlp")) == P("data", "model")
  with pytest.raises(ValueError, match="parameter_partitioning_dims=3"):
    partitioning.standard_logical_axis_rules(parameter_partitioning_dims=3)


def test_network_parameter_shardings_golden():
  """Mesh specs of the T5 parameters on a (4, 2) mesh, written out by hand from T5X's rules."""
  config = network.T5Config(vocab_size=64, emb_dim=16, num_heads=4, head_dim=4, mlp_dim=32,
                            num_encoder_layers=1, num_decoder_layers=1)
  module = network.Transformer(config)
  tokens = jnp.ones((4, 6), jnp.int32)
  boxed = jax.eval_shape(lambda r: module.init(r, tokens, tokens, tokens), jax.random.PRNGKey(0))
  p = partitioning.Partitioner(partitioning.MeshConfig(num_partitions=2))
  specs = jax.tree.map(p.mesh_spec, partitioning.logical_specs(boxed)["params"],
                       is_leaf=lambda x: isinstance(x, P))
  golden = {
      "token_embedder/embedding": P("model", None),
      "encoder/layers_0/attention/query/kernel": P(None, "model"),
      "encoder/layers_0/attention/out/kernel": P("model", None),
      "encoder/layers_0/mlp/wi_0/kernel": P(None, "model"),
      "encoder/layers_0/mlp/wo/kernel": P("model", None),
      "encoder/layers_0/pre_attention_layer_norm/scale": P(None),
      "encoder/relpos_bias/rel_embedding": P("model", None),
      "decoder/layers_0/encoder_decoder_attention/key/kernel": P(None, "model"),
      "decoder/logits_dense/kernel": P(None, "model"),
      "decoder/decoder_norm/scale": P(None),
  }
  flat = {jax.tree_util.keystr(k, simple=True, separator="/"): v
          for k, v in jax.tree_util.tree_flatten_with_path(
              specs, is_leaf=lambda x: isinstance(x, P))[0]}
  for name, spec in golden.items():
    assert flat[name] == spec, name


def test_check_model_dims_names_heads_and_numbers():
  p = partitioning.Partitioner(partitioning.MeshConfig(num_partitions=8))
  with pytest.raises(ValueError, match=r"heads=4 is not divisible by mesh axis 'model' of size 8"):
    p.check_model_dims(num_heads=4, mlp_dim=64, vocab_size=64, global_batch_size=8)
  with pytest.raises(ValueError, match=r"mlp=12 .*vocab=100 .*size 8"):
    p.check_model_dims(num_heads=8, mlp_dim=12, vocab_size=100, global_batch_size=8)
  p.check_model_dims(num_heads=8, mlp_dim=64, vocab_size=64, global_batch_size=3)  # data size 1
  p_data = partitioning.Partitioner(partitioning.MeshConfig(num_partitions=2))
  with pytest.raises(ValueError, match=r"batch=6 is not divisible by mesh axis 'data' of size 4"):
    p_data.check_model_dims(num_heads=8, mlp_dim=64, vocab_size=64, global_batch_size=6)


def test_check_params_divisible_names_parameter():
  p = partitioning.Partitioner(partitioning.MeshConfig(num_partitions=8))
  params = {"mlp": {"wi": jax.ShapeDtypeStruct((16, 12), jnp.float32)}}
  specs = {"mlp": {"wi": P("embed", "mlp")}}
  with pytest.raises(ValueError, match=r"\['mlp'\]\['wi'\] shape \(16, 12\): axis mlp=12 not "
                                       r"divisible by mesh axis 'model' of size 8"):
    p.check_params_divisible(params, specs)


def test_adafactor_state_specs_follow_factored_params():
  """v_row drops the largest axis, v_col the second largest (optax's convention), checked here
  by hand for a [256, 128] kernel: v_row [128] keeps 'mlp', v_col [256] keeps 'embed'."""
  params = {"wide": jnp.ones((256, 128)), "tall": jnp.ones((128, 512)), "small": jnp.ones((8, 16)),
            "scale": jnp.ones((128,))}
  specs = {"wide": P("embed", "mlp"), "tall": P("embed", "vocab"), "small": P("embed", "mlp"),
           "scale": P("embed")}
  tx = optax.adafactor(learning_rate=0.1)
  abstract_state = jax.eval_shape(tx.init, params)
  state_specs = partitioning.optimizer_state_logical_specs(abstract_state, params, specs)
  factored = state_specs[0]
  assert isinstance(factored, optax.FactoredState)
  assert factored.v_row["wide"] == P("mlp") and abstract_state[0].v_row["wide"].shape == (128,)
  assert factored.v_col["wide"] == P("embed") and abstract_state[0].v_col["wide"].shape == (256,)
  assert factored.v_row["tall"] == P("embed") and factored.v_col["tall"] == P("vocab")
  assert factored.v["wide"] == P()  # [1] placeholder
  assert factored.v["small"] == P("embed", "mlp")  # not factored: full second moment
  assert factored.v_row["small"] == P() and factored.count == P()

  # The shardings are usable: initialise the state directly into them on a (2, 4) mesh.
  p = partitioning.Partitioner(partitioning.MeshConfig(mesh_shape=(2, 4)))
  shardings = p.shardings(state_specs)
  state = p.partition(tx.init, in_shardings=None, out_shardings=shardings)(params)
  assert state[0].v_row["wide"].sharding.spec == P("model")
  assert state[0].v_col["tall"].sharding.spec == P("model")
  assert state[0].v_col["wide"].sharding.spec == P(None)


def test_momentum_state_takes_param_specs():
  params = {"w": jnp.ones((4, 8))}
  tx = optax.adafactor(learning_rate=0.1, momentum=0.9)
  abstract_state = jax.eval_shape(tx.init, params)
  state_specs = partitioning.optimizer_state_logical_specs(abstract_state, params,
                                                           {"w": P("embed", "mlp")})
  leaves = jax.tree.leaves(state_specs, is_leaf=lambda x: isinstance(x, P))
  assert leaves.count(P("embed", "mlp")) == 2  # v and the momentum accumulator


def test_partition_traces_once_and_shards_batch():
  p = partitioning.Partitioner(partitioning.MeshConfig(num_partitions=2))
  fn = p.partition(lambda x: jnp.sum(x, axis=1), in_shardings=p.batch_sharding,
                   out_shardings=p.batch_sharding)
  batch = p.shard_batch({"x": np.arange(32, dtype=np.float32).reshape(8, 4)})
  assert batch["x"].sharding.spec == P("data")
  for _ in range(3):
    out = fn(batch["x"])
  np.testing.assert_array_equal(np.asarray(out), np.arange(32).reshape(8, 4).sum(1))
  assert fn.num_traces == 1
  with pytest.raises(ValueError, match="global batch size 6 is not divisible by the 'data'"):
    p.shard_batch({"x": np.zeros((6, 2))})


def test_data_layout_single_process():
  p = partitioning.Partitioner(partitioning.MeshConfig(num_partitions=2))
  layout = p.data_layout(16)
  assert layout == partitioning.DataLayout(16, 16, 0, 1)
  with pytest.raises(ValueError, match="global batch size 6 is not divisible by the 'data' mesh "
                                       "axis of size 4"):
    p.data_layout(6)


def test_data_layout_multi_process_grids():
  # Two processes, each owning two data rows of a (4, 2) mesh: two shards.
  grid = np.array([[0, 0], [0, 0], [1, 1], [1, 1]])
  assert partitioning.data_layout_from_grid(grid, 1, 16) == partitioning.DataLayout(16, 8, 1, 2)
  # Four processes; the model axis spans two processes per row: they share a shard.
  grid = np.array([[0, 0, 1, 1], [2, 2, 3, 3]])
  layouts = [partitioning.data_layout_from_grid(grid, i, 8) for i in range(4)]
  assert [(l.shard_id, l.num_shards, l.batch_size_per_process) for l in layouts] == [
      (0, 2, 4), (0, 2, 4), (1, 2, 4), (1, 2, 4)]
  with pytest.raises(ValueError, match="share only some data rows"):
    partitioning.data_layout_from_grid(np.array([[0, 0], [0, 1], [1, 1]]), 0, 6)
