"""Tests for rec_t5x.sharding_plan and scripts/plan_sharding.py."""
import importlib.util
import math
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from rec_t5x import models
from rec_t5x import network
from rec_t5x import optimizers
from rec_t5x import partitioning
from rec_t5x import sharding_plan
from rec_t5x import trainer as trainer_lib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = network.T5Config(vocab_size=64, emb_dim=16, num_heads=4, head_dim=4, mlp_dim=32,
                        num_encoder_layers=1, num_decoder_layers=1)
# FLAN-T5 base (google/flan-t5-base has 247,577,856 parameters).
BASE = network.T5Config(vocab_size=32128, emb_dim=768, num_heads=12, head_dim=64, mlp_dim=2048,
                        num_encoder_layers=12, num_decoder_layers=12, dtype="bfloat16")


@pytest.mark.parametrize("text,expected", [
    ("data=16,model=4", {"data": 16, "model": 4}),
    ("model=2", {"data": 1, "model": 2}),
    (" data=8 ", {"data": 8, "model": 1}),
])
def test_parse_mesh(text, expected):
  assert sharding_plan.parse_mesh(text) == expected


@pytest.mark.parametrize("text", ["data=0", "batch=4", "data=2,data=4", "data", "", "model=x"])
def test_parse_mesh_rejects_naming_the_entry(text):
  with pytest.raises(ValueError, match="--mesh"):
    sharding_plan.parse_mesh(text)


@pytest.mark.parametrize("field,value", [("batch_size", 0), ("dtype", "float16"),
                                         ("parameter_partitioning_dims", 3),
                                         ("max_replicated_fraction", 1.5)])
def test_plan_config_validation_names_field(field, value):
  with pytest.raises(ValueError, match=f"PlanConfig.{field}="):
    sharding_plan.PlanConfig(**{field: value})


@pytest.mark.parametrize("mesh_shape,dims", [((4, 2), 1), ((2, 4), 2), ((8, 1), 2)])
def test_state_bytes_equal_jax_shard_shapes_of_the_trainer(mesh_shape, dims):
  """Parameters and Adafactor state per device equal what the Trainer's real shardings hold."""
  rules = partitioning.standard_logical_axis_rules(dims)
  partitioner = partitioning.Partitioner(partitioning.MeshConfig(mesh_shape=mesh_shape),
                                         logical_axis_rules=rules)
  shapes = {"encoder_input_tokens": (8, 6), "decoder_input_tokens": (8, 4)}
  trainer = trainer_lib.Trainer(models.EncoderDecoderModel(network.Transformer(TINY)),
                                optimizers.adafactor(optimizers.LearningRateConfig()),
                                partitioner, shapes)

  def per_device(tree):
    return sum(math.prod(leaf.sharding.shard_shape(leaf.shape)) * np.dtype(leaf.dtype).itemsize
               for leaf in jax.tree.leaves(tree))

  plan = sharding_plan.plan(TINY, dict(zip(partitioning.MESH_AXES, mesh_shape)),
                            sharding_plan.PlanConfig(batch_size=8,
                                                     parameter_partitioning_dims=dims))
  assert plan.param_bytes == per_device(trainer.abstract_state.params)
  assert plan.optimizer_bytes == per_device(trainer.abstract_state.opt_state)
  assert plan.num_params == sum(math.prod(p.shape) for p in jax.tree.leaves(
      trainer.abstract_state.params))


def test_flan_t5_base_parameter_count_and_model_sharding():
  plan = sharding_plan.plan(BASE, {"data": 16, "model": 4}, sharding_plan.PlanConfig())
  assert plan.num_params == 247_577_856
  embedding = next(p for p in plan.params if p.path == "token_embedder/embedding")
  assert embedding.mesh_axes == ("model", None) and embedding.shards == 4
  assert embedding.bytes_per_device == 32128 * 768 * 4 // 4
  assert plan.replicated_fraction < 0.001 and not plan.warnings  # only the norms' scales


@pytest.fixture(scope="module")
def data_parallel_base():
  """FLAN-T5 base on 8 devices, pure data parallelism (every parameter replicated)."""
  return sharding_plan.plan(BASE, {"data": 8, "model": 1}, sharding_plan.PlanConfig())


def test_warns_about_replicated_parameters_listing_the_biggest(data_parallel_base):
  plan = data_parallel_base
  assert plan.replicated_fraction == 1.0
  (warning,) = plan.warnings
  assert warning.startswith("100.0% of the parameters are replicated on every device")
  assert "biggest: decoder/logits_dense/kernel (768, 32128)" in warning
  assert "token_embedder/embedding (32128, 768)" in warning
  fsdp = sharding_plan.plan(BASE, {"data": 8, "model": 1},
                            sharding_plan.PlanConfig(parameter_partitioning_dims=2))
  assert fsdp.replicated_fraction < 0.001 and not fsdp.warnings
  assert fsdp.param_bytes < plan.param_bytes / 7


def test_warns_about_indivisible_dimensions_and_batch():
  plan = sharding_plan.plan(TINY, {"data": 3, "model": 3}, sharding_plan.PlanConfig(batch_size=8))
  text = " ".join(plan.warnings)
  assert "parameters have dimensions the mesh does not divide" in text
  assert "biggest: decoder/logits_dense/kernel (16, 64) over (None, 'model')" in text
  assert "batch 8 is not divisible by data=3" in text


def test_activation_estimate_scales_with_batch_shards_microbatches_and_dtype():
  config = sharding_plan.PlanConfig(batch_size=64, inputs_length=128, targets_length=32,
                                    dtype="float32")
  one = sharding_plan.activation_bytes(BASE, config, {"data": 1, "model": 1})
  assert sharding_plan.activation_bytes(BASE, config, {"data": 4, "model": 1}) == one // 4
  micro = sharding_plan.PlanConfig(batch_size=64, inputs_length=128, targets_length=32,
                                   dtype="float32", num_microbatches=2)
  assert sharding_plan.activation_bytes(BASE, micro, {"data": 1, "model": 1}) == one // 2
  bf16 = sharding_plan.PlanConfig(batch_size=64, inputs_length=128, targets_length=32)
  half = sharding_plan.activation_bytes(BASE, bf16, {"data": 1, "model": 1})
  assert one / 2 < half < one  # float32 logits, masks and attention scores stay float32
  sharded = sharding_plan.activation_bytes(BASE, config, {"data": 1, "model": 4})
  assert one / 4 < sharded < one  # the 'embed'-axis activations are not split over 'model'


def test_format_plan_reports_totals_and_fit(data_parallel_base):
  plan = data_parallel_base
  text = sharding_plan.format_plan(plan, "base", device_memory_gib=16)
  assert "247.6M parameters; mesh data=8,model=1 (8 devices)" in text
  assert f"total                       {plan.total_bytes / 2**30:8.3f} GiB" in text
  assert "in 16 GiB per device" in text
  assert plan.total_bytes == 2 * plan.param_bytes + plan.optimizer_bytes + plan.activation_bytes


def test_command_line_prints_the_plan_of_the_gin_model(tmp_path, data_parallel_base):
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  result = subprocess.run(
      [sys.executable, str(REPO_ROOT / "scripts" / "plan_sharding.py"), "--model", "base", "--mesh",
       "data=8", "--batch", "128", "--inputs", "512", "--targets", "128", "--dtype",
       "bfloat16", "--device", "v5e"], cwd=tmp_path, env=env, capture_output=True, text=True,
      timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert sharding_plan.format_plan(data_parallel_base, "base", 16) in result.stdout
  assert "decoder/logits_dense/kernel" in result.stdout


def _script():
  spec = importlib.util.spec_from_file_location("plan_sharding",
                                                REPO_ROOT / "scripts" / "plan_sharding.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("argv,message", [
    (["--model", "base", "--mesh", "data=4,pipeline=2"], "--mesh entry 'pipeline=2'"),
    (["--model", "base", "--mesh", "data=4", "--device", "tpu9"], "--device='tpu9': expected one"),
    (["--model", "base", "--mesh", "data=4", "--batch", "0"], "PlanConfig.batch_size=0"),
])
def test_command_line_rejects_bad_arguments(capsys, argv, message):
  assert _script().main(argv) == 2
  assert message in capsys.readouterr().err
