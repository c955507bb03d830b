"""Memory plan of a sharded training step, from our partitioning rules, without allocating anything.

`plan(config, mesh, PlanConfig(...))` builds the model's parameter tree with `jax.eval_shape`
(shapes only), maps every parameter's logical axis names through
`partitioning.standard_logical_axis_rules` onto a ('data', 'model') mesh of the given sizes, derives
Adafactor's state and its specs with `optimizers.adafactor` and
`partitioning.optimizer_state_logical_specs` (exactly what `Trainer` uses), and adds up the bytes
each device holds. No devices are needed: the mesh is just two sizes, so a laptop can plan a
v5e-256 run. `scripts/plan_sharding.py` is the command-line front end.

Per device, during one training step:

  parameters   float32, sharded as the rules say (replicated over the mesh axes they do not use)
  gradients    the same shapes and shardings as the parameters (live together during the update)
  optimizer    Adafactor (T5X defaults): factored row / column second moments for parameters whose
               two largest dims are >= 128, a full second moment otherwise, no momentum
  activations  the estimate below

Activation model (what backpropagation keeps alive, no rematerialisation, no fusion credit). With
b = examples per device per microbatch = batch / (data * num_microbatches), activation itemsize a
(2 for bfloat16, 4 for float32), m = model-axis size, d = emb_dim, H = num_heads * head_dim,
h = num_heads, f = mlp_dim, n = number of MLP input projections, Le / Ld = input / target length:

  encoder layer, per input token:   4d*a              (2 RMSNorms: input and output)
                                  + (4H + 2n*f)*a / m (q, k, v, attention output; MLP
                                                       pre-activations, activations, product)
                                  + h*Le*(4 + a) / m  (attention logits in float32, weights in a)
  decoder layer, per target token:  6d*a + (6H + 2n*f)*a / m + h*(Ld + Le)*(4 + a) / m
                per input token:    2H*a / m          (cross-attention keys and values)
  once per example:                 (Le + Ld)*3d*a    (embeddings, final norms)
                                  + 4*(Le^2 + Ld^2 + Ld*Le)   (float32 attention masks)
                                  + Ld*V*8 / m        (float32 logits and their softmax)

The 'heads', 'mlp' and 'vocab' activation axes are sharded over 'model' by the standard rules, and
'batch' over 'data'. Dropout masks (one byte per element at each dropout site when dropout > 0)
and XLA's temporaries are not counted; compare with `compiled.memory_analysis()` on the real
hardware before a large run. This is a hand-written estimate because no library models T5X-style
sharded memory; the parameter and optimizer numbers are exact (checked against JAX's shard shapes
in tests/core/test_sharding_plan.py).
"""
import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from rec_t5x import models
from rec_t5x import network
from rec_t5x import optimizers
from rec_t5x import partitioning

ACTIVATION_ITEMSIZE = {"bfloat16": 2, "float32": 4}
GIB = 1024 ** 3

# Accelerator memory per device (GiB) of common slices, for `fits`. JAX on GPU preallocates 75% of
# the memory by default (XLA_PYTHON_CLIENT_MEM_FRACTION), so plan GPUs against 0.75 of this.
DEVICE_MEMORY_GIB = {"v4": 32, "v5e": 16, "v5p": 95, "v6e": 32, "a100-40gb": 40, "a100-80gb": 80,
                     "h100-80gb": 80, "h200": 141}


@dataclasses.dataclass(frozen=True)
class PlanConfig:
  """The training-step shape to plan for.

  Attributes:
    batch_size: global examples per step (all processes).
    inputs_length: encoder tokens per example.
    targets_length: decoder tokens per example.
    dtype: activation dtype, one of ACTIVATION_ITEMSIZE (parameters are always float32).
    parameter_partitioning_dims: 1 shards parameters over 'model' only; 2 also shards their
      'embed' axis over 'data' (`partitioning.standard_logical_axis_rules`).
    num_microbatches: gradient accumulation inside a step (activations scale with 1/this).
    max_replicated_fraction: warn when more than this share of parameter elements is held whole
      by every device of a mesh with more than one device.
  """
  batch_size: int = 128
  inputs_length: int = 512
  targets_length: int = 128
  dtype: str = "bfloat16"
  parameter_partitioning_dims: int = 1
  num_microbatches: int = 1
  max_replicated_fraction: float = 0.02

  def __post_init__(self):
    for name in ("batch_size", "inputs_length", "targets_length", "num_microbatches"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"PlanConfig.{name}={value!r}: expected an integer >= 1")
    if self.dtype not in ACTIVATION_ITEMSIZE:
      raise ValueError(f"PlanConfig.dtype={self.dtype!r}: expected one of "
                       f"{sorted(ACTIVATION_ITEMSIZE)}")
    if self.parameter_partitioning_dims not in (1, 2):
      raise ValueError("PlanConfig.parameter_partitioning_dims="
                       f"{self.parameter_partitioning_dims!r}: expected 1 or 2")
    if not 0.0 <= self.max_replicated_fraction <= 1.0:
      raise ValueError(f"PlanConfig.max_replicated_fraction={self.max_replicated_fraction!r}: "
                       "expected a value in [0, 1]")


def parse_mesh(text: str) -> dict[str, int]:
  """'data=16,model=4' -> {'data': 16, 'model': 4}; a missing axis has size 1.

  Raises:
    ValueError: naming the entry that is not `axis=size` with axis in ('data', 'model'), size >= 1.
  """
  mesh = {axis: 1 for axis in partitioning.MESH_AXES}
  seen = set()
  for entry in filter(None, (e.strip() for e in text.split(","))):
    axis, sep, size = entry.partition("=")
    axis = axis.strip()
    if (not sep or axis not in partitioning.MESH_AXES or axis in seen
        or not size.strip().isdigit() or int(size) < 1):
      raise ValueError(f"--mesh entry {entry!r}: expected axis=size with axis one of "
                       f"{partitioning.MESH_AXES} (each once) and size >= 1, e.g. data=16,model=4")
    seen.add(axis)
    mesh[axis] = int(size)
  if not seen:
    raise ValueError(f"--mesh={text!r}: expected e.g. data=16,model=4")
  return mesh


@dataclasses.dataclass(frozen=True)
class LeafPlan:
  """One parameter (or optimizer-state array) on the mesh.

  Attributes:
    path: "encoder/layers_0/mlp/wi_0/kernel".
    shape: global shape.
    mesh_axes: mesh axes of each dimension (None = not sharded).
    shards: number of distinct pieces (product of the sizes of the mesh axes used).
    bytes_per_device: bytes one device holds (ceil-divided shard shape).
    divisible: whether every sharded dimension divides by its mesh axes.
  """
  path: str
  shape: tuple[int, ...]
  mesh_axes: tuple[Any, ...]
  shards: int
  bytes_per_device: int
  divisible: bool

  @property
  def size(self) -> int:
    return math.prod(self.shape)


@dataclasses.dataclass(frozen=True)
class Plan:
  """Bytes per device of one training step.

  Attributes:
    mesh: {'data': n, 'model': m}.
    config: the plan's PlanConfig.
    params: one LeafPlan per parameter.
    optimizer: one LeafPlan per optimizer-state array.
    activation_bytes: the activation estimate (module docstring) per device.
    warnings: human-readable problems (replicated share, indivisible dims, batch).
  """
  mesh: Mapping[str, int]
  config: PlanConfig
  params: tuple[LeafPlan, ...]
  optimizer: tuple[LeafPlan, ...]
  activation_bytes: int
  warnings: tuple[str, ...]

  @property
  def num_devices(self) -> int:
    return math.prod(self.mesh.values())

  @property
  def num_params(self) -> int:
    return sum(p.size for p in self.params)

  @property
  def param_bytes(self) -> int:
    return sum(p.bytes_per_device for p in self.params)

  @property
  def optimizer_bytes(self) -> int:
    return sum(p.bytes_per_device for p in self.optimizer)

  @property
  def total_bytes(self) -> int:
    """Parameters + gradients (same size) + optimizer state + activations."""
    return 2 * self.param_bytes + self.optimizer_bytes + self.activation_bytes

  @property
  def replicated(self) -> tuple[LeafPlan, ...]:
    """Parameters every device holds whole, biggest first (empty on a one-device mesh)."""
    if self.num_devices == 1:
      return ()
    return tuple(sorted((p for p in self.params if p.shards == 1), key=lambda p: -p.size))

  @property
  def replicated_fraction(self) -> float:
    return sum(p.size for p in self.replicated) / max(self.num_params, 1)


def _path(key_path) -> str:
  return jax.tree_util.keystr(key_path, simple=True, separator="/")


def _leaf_plans(abstract: Any, specs: Any, rules, mesh: Mapping[str, int]) -> tuple[LeafPlan, ...]:
  """LeafPlans of a tree of ShapeDtypeStructs with matching logical PartitionSpecs."""
  flat, treedef = jax.tree_util.tree_flatten_with_path(abstract)
  flat_specs = treedef.flatten_up_to(specs)
  out = []
  for (key_path, leaf), spec in zip(flat, flat_specs):
    shape = tuple(int(s) for s in leaf.shape)
    names = tuple(spec) + (None,) * (len(shape) - len(tuple(spec)))
    mesh_axes = tuple(nn.logical_to_mesh_axes(names, rules))
    shard_shape, shards, divisible = [], 1, True
    for dim, axes_ in zip(shape, mesh_axes):
      group = () if axes_ is None else ((axes_,) if isinstance(axes_, str) else tuple(axes_))
      n = math.prod(mesh[a] for a in group)
      shards *= n
      divisible &= dim % n == 0
      shard_shape.append(-(-dim // n))
    out.append(LeafPlan(_path(key_path), shape, mesh_axes, shards,
                        math.prod(shard_shape) * np.dtype(leaf.dtype).itemsize, divisible))
  return tuple(out)


def activation_bytes(config: network.T5Config, plan_config: PlanConfig,
                     mesh: Mapping[str, int]) -> int:
  """Activation bytes per device of one microbatch (the model in the module docstring)."""
  c, p = config, plan_config
  a = ACTIVATION_ITEMSIZE[p.dtype]
  m = mesh["model"]
  b = -(-p.batch_size // (mesh["data"] * p.num_microbatches))
  le, ld = p.inputs_length, p.targets_length
  d, h, f, n = c.emb_dim, c.num_heads, c.mlp_dim, len(c.mlp_activations)
  joined = c.num_heads * c.head_dim
  encoder_token = 4 * d * a + (4 * joined + 2 * n * f) * a / m + h * le * (4 + a) / m
  decoder_token = 6 * d * a + (6 * joined + 2 * n * f) * a / m + h * (ld + le) * (4 + a) / m
  cross_kv = 2 * joined * a / m
  per_example = (c.num_encoder_layers * le * encoder_token
                 + c.num_decoder_layers * (ld * decoder_token + le * cross_kv)
                 + (le + ld) * 3 * d * a
                 + 4 * (le * le + ld * ld + ld * le)
                 + ld * c.vocab_size * 8 / m)
  return int(b * per_example)


def _abstract_params(config: network.T5Config):
  model = models.EncoderDecoderModel(network.Transformer(config))
  shapes = {"encoder_input_tokens": (1, 1), "decoder_input_tokens": (1, 1)}
  boxed = jax.eval_shape(lambda rng: model.get_initial_variables(rng, shapes),
                         jax.random.PRNGKey(0))
  return nn.unbox(boxed)["params"], partitioning.logical_specs(boxed)["params"]


def _warnings(plan_params, replicated, fraction, config: PlanConfig,
              mesh: Mapping[str, int]) -> list[str]:
  warnings = []
  if fraction > config.max_replicated_fraction:
    biggest = ", ".join(f"{p.path} {p.shape} ({p.size / 1e6:.1f}M)" for p in replicated[:5])
    warnings.append(
        f"{fraction:.1%} of the parameters are replicated on every device (more than "
        f"{config.max_replicated_fraction:.0%}); biggest: {biggest}. Shard them with a 'model' "
        "axis > 1 (NUM_PARTITIONS) or parameter_partitioning_dims=2 (embed over 'data').")
  bad = sorted((p for p in plan_params if not p.divisible), key=lambda p: -p.size)
  if bad:  # The optimizer state's specs follow the parameters', so its arrays are not listed.
    listed = "; ".join(f"{p.path} {p.shape} over {p.mesh_axes}" for p in bad[:5])
    warnings.append(f"{len(bad)} parameters have dimensions the mesh does not divide (the Trainer "
                    f"refuses these before compiling); biggest: {listed}")
  rows = mesh["data"] * config.num_microbatches
  if config.batch_size % rows:
    warnings.append(f"batch {config.batch_size} is not divisible by data={mesh['data']} x "
                    f"num_microbatches={config.num_microbatches}")
  return warnings


def plan(config: network.T5Config, mesh: Mapping[str, int], plan_config: PlanConfig) -> Plan:
  """Bytes per device of a training step of `config` on `mesh` (nothing is allocated).

  Args:
    config: the network.
    mesh: {'data': n, 'model': m} (`parse_mesh`).
    plan_config: batch, lengths, dtype, partitioning dims.

  Returns:
    The Plan (see its properties for totals and `format_plan` for a report).
  """
  mesh = {axis: int(mesh.get(axis, 1)) for axis in partitioning.MESH_AXES}
  rules = partitioning.standard_logical_axis_rules(plan_config.parameter_partitioning_dims)
  abstract_params, param_specs = _abstract_params(config)
  tx = optimizers.adafactor(optimizers.LearningRateConfig()).tx
  abstract_opt = jax.eval_shape(tx.init, abstract_params)
  opt_specs = partitioning.optimizer_state_logical_specs(abstract_opt, abstract_params, param_specs)
  params = _leaf_plans(abstract_params, param_specs, rules, mesh)
  opt = _leaf_plans(abstract_opt, opt_specs, rules, mesh)
  draft = Plan(mesh, plan_config, params, opt, 0, ())
  warnings = _warnings(params, draft.replicated, draft.replicated_fraction, plan_config, mesh)
  return dataclasses.replace(draft, activation_bytes=activation_bytes(config, plan_config, mesh),
                             warnings=tuple(warnings))


def _gib(num_bytes: float) -> str:
  return f"{num_bytes / GIB:8.3f} GiB"


def format_plan(result: Plan, name: str = "", device_memory_gib: float | None = None) -> str:
  """A plain-text report: per-device bytes by kind, the largest parameters and the warnings."""
  c = result.config
  mesh = ",".join(f"{k}={v}" for k, v in result.mesh.items())
  lines = [f"model {name or '?'}: {result.num_params / 1e6:,.1f}M parameters; mesh {mesh} "
           f"({result.num_devices} devices); batch {c.batch_size} (per data shard "
           f"{c.batch_size / result.mesh['data']:g}, microbatches {c.num_microbatches}), inputs "
           f"{c.inputs_length}, targets {c.targets_length}, activations {c.dtype}, "
           f"parameter_partitioning_dims={c.parameter_partitioning_dims}",
           "per device:",
           f"  parameters (float32)        {_gib(result.param_bytes)}",
           f"  gradients (float32)         {_gib(result.param_bytes)}",
           f"  Adafactor state             {_gib(result.optimizer_bytes)}",
           f"  activations (estimate)      {_gib(result.activation_bytes)}",
           f"  total                       {_gib(result.total_bytes)}"]
  if device_memory_gib:
    share = result.total_bytes / (device_memory_gib * GIB)
    verdict = "fits" if share <= 1 else "does NOT fit"
    lines.append(f"  {verdict} in {device_memory_gib:g} GiB per device ({share:.0%} used)")
  lines.append(f"replicated on every device: {result.replicated_fraction:.2%} of the parameters")
  lines.extend(f"WARNING: {w}" for w in result.warnings)
  return "\n".join(lines)
