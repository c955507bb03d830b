"""Device mesh, logical axis rules, shardings, and the one place that calls `jax.jit`.

Layers name the axes of every parameter and activation with `rec_t5x.axes` constants. This module
maps those logical names onto a 2-D `('data', 'model')` device mesh (T5X's standard rules by
default), derives shardings for parameters, for optax Adafactor's state and for batches, checks
before compiling that the mesh divides the model's dimensions, and wraps step functions with
`jax.jit(in_shardings=..., out_shardings=..., donate_argnums=...)`.

Typical use:

  partitioner = Partitioner(MeshConfig(num_partitions=2))
  partitioner.check_model_dims(num_heads=8, mlp_dim=1024, vocab_size=32128, global_batch_size=64)
  param_specs = logical_specs(jax.eval_shape(init_with_boxes, rng))     # logical PartitionSpecs
  step = partitioner.partition(fn, in_shardings=..., out_shardings=..., donate_argnums=(0,))
"""
import collections
import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import numpy as np
import optax
# `_factored_dims` is optax's own choice of which two axes Adafactor factors; we reuse it (optax is
# pinned in setup.py) so the derived v_row / v_col specs cannot disagree with optax's state.
from optax._src import factorized as optax_factorized

from rec_t5x import axes

DATA_AXIS = "data"
MODEL_AXIS = "model"
MESH_AXES = (DATA_AXIS, MODEL_AXIS)

LogicalRules = Sequence[tuple[str, str | tuple[str, ...] | None]]


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Shape of the ('data', 'model') device mesh.

  Attributes:
    num_partitions: size of the 'model' axis (model parallelism); the 'data' axis takes the rest
      of the devices. Ignored when `mesh_shape` is given.
    mesh_shape: explicit (data, model) sizes; `data = -1` means "all remaining devices".
  """
  num_partitions: int = 1
  mesh_shape: tuple[int, int] | None = None

  def __post_init__(self):
    if not isinstance(self.num_partitions, int) or self.num_partitions < 1:
      raise ValueError(f"MeshConfig.num_partitions={self.num_partitions!r}: expected an integer "
                       ">= 1")
    if self.mesh_shape is not None:
      shape = tuple(self.mesh_shape)
      ok = (len(shape) == 2 and all(isinstance(s, int) for s in shape) and shape[1] >= 1
            and (shape[0] >= 1 or shape[0] == -1))
      if not ok:
        raise ValueError(f"MeshConfig.mesh_shape={self.mesh_shape!r}: expected (data, model) with "
                         "model >= 1 and data >= 1 or data == -1")
      object.__setattr__(self, "mesh_shape", shape)


def resolve_mesh_shape(config: MeshConfig, num_devices: int) -> tuple[int, int]:
  """(data, model) sizes for `num_devices` devices.

  Raises:
    ValueError: naming the size that does not divide, or the product that does not match.
  """
  if config.mesh_shape is None:
    model = config.num_partitions
    if num_devices % model:
      raise ValueError(f"MeshConfig.num_partitions={model} does not divide the {num_devices} "
                       f"available devices")
    return num_devices // model, model
  data, model = config.mesh_shape
  if data == -1:
    if num_devices % model:
      raise ValueError(f"MeshConfig.mesh_shape={config.mesh_shape}: model={model} does not divide "
                       f"the {num_devices} available devices")
    data = num_devices // model
  if data * model != num_devices:
    raise ValueError(f"MeshConfig.mesh_shape={config.mesh_shape} needs data*model={data * model} "
                     f"devices but {num_devices} are available")
  return data, model


def make_mesh(config: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ('data', 'model') mesh over `devices` (default: all devices of all processes)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = resolve_mesh_shape(config, len(devices))
  try:
    grid = mesh_utils.create_device_mesh(shape, devices)
  except (ValueError, NotImplementedError, AssertionError):
    # Topology-aware placement is only known for some TPU slices; plain order is right elsewhere.
    grid = np.asarray(devices, dtype=object).reshape(shape)
  return Mesh(grid, MESH_AXES)


def standard_logical_axis_rules(
    parameter_partitioning_dims: int = 1,
    additional_rules: LogicalRules = ()) -> tuple[tuple[str, Any], ...]:
  """T5X's standard mapping from logical axis names to mesh axes.

  Args:
    parameter_partitioning_dims: 1 shards parameters over 'model' only (model parallelism, data
      parallel copies of the weights); 2 also shards the 'embed' axis of parameters over 'data'
      (fully sharded data parallelism, as T5X's `parameter_partitioning_dims=2`).
    additional_rules: rules placed first, so they override the standard ones (gin binds these).

  Returns:
    Rules `((logical_name, mesh_axis or None), ...)`, in priority order.
  """
  if parameter_partitioning_dims not in (1, 2):
    raise ValueError(f"parameter_partitioning_dims={parameter_partitioning_dims}: expected 1 or 2")
  rules = [
      (axes.BATCH, DATA_AXIS),
      (axes.VOCAB, MODEL_AXIS),
      (axes.MLP, MODEL_AXIS),
      (axes.HEADS, MODEL_AXIS),
      (axes.JOINED_KV, MODEL_AXIS),
      (axes.KV, None),
      (axes.EMBED, DATA_AXIS if parameter_partitioning_dims == 2 else None),
      (axes.RELPOS_BUCKETS, None),
      (axes.LENGTH, None),
      (axes.LAYERS, None),
      ("abspos_buckets", None),
      ("stack", None),
      ("mlp_activations", None),
  ]
  for rule in additional_rules:
    if len(rule) != 2 or not isinstance(rule[0], str):
      raise ValueError(f"additional_rules entry {rule!r}: expected (logical_name, mesh_axis|None)")
  return tuple(tuple(r) for r in additional_rules) + tuple(rules)


def logical_specs(boxed_tree: Any) -> Any:
  """Logical PartitionSpecs of a tree whose leaves are `nn.LogicallyPartitioned` boxes.

  Unannotated leaves get `PartitionSpec()` (replicated). Works on `jax.eval_shape` outputs.
  """
  return nn.get_partition_spec(boxed_tree)


def _spec_names(spec: PartitionSpec, rank: int) -> tuple[Any, ...]:
  names = tuple(spec)
  return names + (None,) * (rank - len(names))


def optimizer_state_logical_specs(abstract_opt_state: Any, abstract_params: Any,
                                  param_specs: Any) -> Any:
  """Logical PartitionSpecs for an optax state, derived from the parameters' specs.

  Rules: Adafactor's `FactoredState.v` has the parameter's shape (parameter's spec) or is a [1]
  placeholder (replicated); `v_row` drops the parameter's largest factored axis and `v_col` the
  second largest (optax's `_factored_dims`), so they keep the remaining logical names. Any other
  sub-tree with the parameters' structure (momentum, accumulated gradients) takes the parameter
  specs where shapes match. Everything else (step counts, empty states) is replicated.

  Args:
    abstract_opt_state: `jax.eval_shape(tx.init, abstract_params)`.
    abstract_params: parameter tree of arrays / ShapeDtypeStructs (unboxed).
    param_specs: logical PartitionSpecs with the structure of `abstract_params`.

  Returns:
    A tree with the structure of `abstract_opt_state` whose leaves are PartitionSpecs.
  """
  params_def = jax.tree.structure(abstract_params)
  flat_params = params_def.flatten_up_to(abstract_params)
  flat_specs = params_def.flatten_up_to(param_specs)

  def like_params(subtree, derive):
    flat = params_def.flatten_up_to(subtree)
    out = [derive(leaf, p, s) for leaf, p, s in zip(flat, flat_params, flat_specs)]
    return params_def.unflatten(out)

  def same_shape(leaf, param, spec):
    return spec if tuple(leaf.shape) == tuple(param.shape) else PartitionSpec()

  def factored(which):
    def derive(leaf, param, spec):
      if leaf.ndim != param.ndim - 1 or param.ndim < 2:
        return PartitionSpec()
      # A reduced-rank leaf means optax factored this parameter over its two largest axes.
      d1, d0 = optax_factorized._factored_dims(  # pylint: disable=protected-access
          tuple(param.shape), True, 0)
      dropped = d0 if which == "v_row" else d1  # optax: v_row drops d0, v_col drops d1.
      kept = [i for i in range(param.ndim) if i != dropped]
      if tuple(leaf.shape) != tuple(param.shape[i] for i in kept):
        return PartitionSpec()  # A [1] placeholder of an unfactored parameter.
      names = _spec_names(spec, param.ndim)
      return PartitionSpec(*(names[i] for i in kept))
    return derive

  def walk(node):
    if isinstance(node, optax.FactoredState):
      return optax.FactoredState(
          count=PartitionSpec(),
          v_row=like_params(node.v_row, factored("v_row")),
          v_col=like_params(node.v_col, factored("v_col")),
          v=like_params(node.v, same_shape))
    if node is None:
      return None
    if jax.tree.structure(node) == params_def and params_def.num_leaves > 0:
      return like_params(node, same_shape)
    if isinstance(node, tuple) and hasattr(node, "_fields"):
      return type(node)(*[walk(child) for child in node])
    if isinstance(node, (tuple, list)):
      return type(node)(walk(child) for child in node)
    if isinstance(node, Mapping):
      return type(node)({k: walk(v) for k, v in node.items()})
    if hasattr(node, "shape"):
      return PartitionSpec()
    raise TypeError(f"optimizer state node of type {type(node).__name__} is not supported; "
                    "expected optax NamedTuple states, tuples, dicts or arrays")

  return walk(abstract_opt_state)


@dataclasses.dataclass(frozen=True)
class DataLayout:
  """How this process's slice of each global batch is chosen.

  Attributes:
    global_batch_size: examples per step over all processes.
    batch_size_per_process: examples this process feeds per step.
    shard_id: index of this process's data shard (processes that share the data-parallel rows of
      the mesh, because the model axis spans them, share a shard id and read the same data).
    num_shards: number of distinct data shards.
  """
  global_batch_size: int
  batch_size_per_process: int
  shard_id: int
  num_shards: int

  @property
  def shard_info(self):
    """`seqio.ShardInfo` for `seqio.get_dataset(..., shard_info=...)`."""
    import seqio  # pylint: disable=g-import-not-at-top  (TensorFlow import, only when asked)
    return seqio.ShardInfo(index=self.shard_id, num_shards=self.num_shards)


def data_layout_from_grid(process_grid: np.ndarray, process_index: int,
                          global_batch_size: int) -> DataLayout:
  """DataLayout from the process index of every device in a [data, model] mesh grid.

  Args:
    process_grid: int [data, model], the process index of each mesh device.
    process_index: this process.
    global_batch_size: examples per step; must be divisible by the 'data' axis size.
  """
  num_data = process_grid.shape[0]
  if global_batch_size % num_data:
    raise ValueError(f"global batch size {global_batch_size} is not divisible by the 'data' mesh "
                     f"axis of size {num_data}")
  rows_of = collections.defaultdict(set)
  for row in range(num_data):
    for p in process_grid[row]:
      rows_of[int(p)].add(row)
  if process_index not in rows_of:
    raise ValueError(f"process {process_index} owns no device of the mesh")
  distinct = sorted({tuple(sorted(r)) for r in rows_of.values()})
  for a in distinct:
    for b in distinct:
      if a != b and set(a) & set(b):
        raise ValueError(f"unsupported mesh layout: processes share only some data rows ({a} vs "
                         f"{b})")
  mine = tuple(sorted(rows_of[process_index]))
  return DataLayout(global_batch_size=global_batch_size,
                    batch_size_per_process=global_batch_size * len(mine) // num_data,
                    shard_id=distinct.index(mine), num_shards=len(distinct))


class PartitionedFunction:
  """A jitted function that runs under the partitioner's mesh and logical axis rules.

  Attributes:
    num_traces: how many times the wrapped function was traced (= compiled), for tests and logs.
  """

  def __init__(self, fn, jitted_factory, mesh, rules):
    self.num_traces = 0
    self._mesh = mesh
    self._rules = rules

    def counted(*args, **kwargs):
      self.num_traces += 1
      return fn(*args, **kwargs)

    self._jitted = jitted_factory(counted)

  def __call__(self, *args, **kwargs):
    with jax.set_mesh(self._mesh), nn.logical_axis_rules(self._rules):
      return self._jitted(*args, **kwargs)

  def lower(self, *args, **kwargs):
    with jax.set_mesh(self._mesh), nn.logical_axis_rules(self._rules):
      return self._jitted.lower(*args, **kwargs)


class Partitioner:
  """Owns the mesh and the logical axis rules; maps logical specs to shardings; jits functions.

  Args:
    mesh_config: mesh shape; default: all devices on 'data' (pure data parallelism).
    logical_axis_rules: default `standard_logical_axis_rules()`.
    devices: devices to use; default all.
    compiler_options: XLA options for every compilation, e.g.
      {"xla_backend_optimization_level": 0} cuts CPU compile time about 3x (tests).
  """

  def __init__(self, mesh_config: MeshConfig | None = None,
               logical_axis_rules: LogicalRules | None = None,
               devices: Sequence[jax.Device] | None = None,
               compiler_options: Mapping[str, Any] | None = None):
    self.mesh_config = mesh_config or MeshConfig()
    self.compiler_options = dict(compiler_options or {})
    self.mesh = make_mesh(self.mesh_config, devices)
    self.logical_axis_rules = tuple(
        standard_logical_axis_rules() if logical_axis_rules is None else logical_axis_rules)

  @property
  def data_size(self) -> int:
    return self.mesh.shape[DATA_AXIS]

  @property
  def model_size(self) -> int:
    return self.mesh.shape[MODEL_AXIS]

  # Logical -> mesh.

  def mesh_spec(self, logical_spec: PartitionSpec) -> PartitionSpec:
    """Mesh-axis PartitionSpec of a logical PartitionSpec (unknown names -> replicated)."""
    return nn.logical_to_mesh_axes(tuple(logical_spec), self.logical_axis_rules)

  def sharding(self, logical_spec: PartitionSpec) -> NamedSharding:
    return NamedSharding(self.mesh, self.mesh_spec(logical_spec))

  def shardings(self, logical_spec_tree: Any) -> Any:
    """NamedShardings for a tree of logical PartitionSpecs (None leaves stay None)."""
    return jax.tree.map(self.sharding, logical_spec_tree,
                        is_leaf=lambda x: isinstance(x, PartitionSpec))

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, PartitionSpec())

  @property
  def batch_sharding(self) -> NamedSharding:
    """Sharding of every batch feature: leading (batch) axis over the mesh axis of 'batch'."""
    return self.sharding(PartitionSpec(axes.BATCH))

  def batch_shardings(self, batch: Mapping[str, Any]) -> dict[str, NamedSharding]:
    return {k: self.batch_sharding for k in batch}

  # Checks before compiling.

  def _mesh_axes_size(self, mesh_axes: Any) -> int:
    if mesh_axes is None:
      return 1
    names = (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes)
    return math.prod(self.mesh.shape[n] for n in names)

  def _axis_size(self, logical_name: str) -> tuple[int, Any]:
    mesh_axes = self.mesh_spec(PartitionSpec(logical_name))[0]
    return self._mesh_axes_size(mesh_axes), mesh_axes

  def check_divisible(self, dims: Mapping[str, int]) -> None:
    """Checks that each logical dimension is divisible by the mesh axes it is sharded over.

    Args:
      dims: logical axis name -> size, e.g. {"heads": 8, "mlp": 1024, "batch": 64}.

    Raises:
      ValueError: listing every dimension that does not divide, with both numbers.
    """
    problems = []
    for name, size in dims.items():
      shards, mesh_axes = self._axis_size(name)
      if size % shards:
        problems.append(f"{name}={size} is not divisible by mesh axis {mesh_axes!r} of size "
                        f"{shards}")
    if problems:
      raise ValueError(f"mesh {dict(self.mesh.shape)} does not fit the model: "
                       + "; ".join(problems))

  def check_model_dims(self, *, num_heads: int, mlp_dim: int, vocab_size: int,
                       global_batch_size: int) -> None:
    """`check_divisible` for the T5 dimensions that the standard rules shard."""
    self.check_divisible({axes.HEADS: num_heads, axes.MLP: mlp_dim, axes.VOCAB: vocab_size,
                          axes.BATCH: global_batch_size})

  def check_params_divisible(self, abstract_params: Any, param_specs: Any) -> None:
    """Checks every parameter dimension against the mesh axes its logical name maps to.

    Raises:
      ValueError: naming each parameter path, its shape, the axis and the mesh size.
    """
    problems = []
    flat, _ = jax.tree_util.tree_flatten_with_path(abstract_params)
    spec_def = jax.tree.structure(abstract_params)
    specs = spec_def.flatten_up_to(param_specs)
    for (path, leaf), spec in zip(flat, specs):
      names = _spec_names(spec, len(leaf.shape))
      for dim, name, mesh_axes in zip(leaf.shape, names, self.mesh_spec(PartitionSpec(*names))):
        shards = self._mesh_axes_size(mesh_axes)
        if dim % shards:
          problems.append(f"{jax.tree_util.keystr(path)} shape {tuple(leaf.shape)}: axis "
                          f"{name}={dim} not divisible by mesh axis {mesh_axes!r} of size {shards}")
    if problems:
      raise ValueError(f"mesh {dict(self.mesh.shape)} does not divide the parameters: "
                       + "; ".join(problems))

  # Input layout.

  def data_layout(self, global_batch_size: int, process_index: int | None = None) -> DataLayout:
    """This process's share of each global batch (for `seqio.ShardInfo`)."""
    grid = np.vectorize(lambda d: d.process_index, otypes=[int])(self.mesh.devices)
    index = jax.process_index() if process_index is None else process_index
    return data_layout_from_grid(grid, index, global_batch_size)

  def shard_batch(self, local_batch: Mapping[str, np.ndarray],
                  global_batch_size: int | None = None) -> dict[str, jax.Array]:
    """Global batch arrays from this process's rows (`DataLayout.batch_size_per_process`).

    Args:
      local_batch: feature -> [local_batch, ...] numpy arrays.
      global_batch_size: default local size * number of data shards.

    Returns:
      feature -> [global_batch, ...] jax.Array sharded along 'batch'.
    """
    local_batch = {name: np.asarray(value) for name, value in local_batch.items()}
    if global_batch_size is None and local_batch:
      num_shards = self.data_layout(self.data_size).num_shards
      global_batch_size = next(iter(local_batch.values())).shape[0] * num_shards
    if global_batch_size is not None and global_batch_size % self.data_size:
      raise ValueError(f"global batch size {global_batch_size} is not divisible by the 'data' "
                       f"mesh axis of size {self.data_size}")
    return {name: jax.make_array_from_process_local_data(
                self.batch_sharding, value, (global_batch_size,) + value.shape[1:])
            for name, value in local_batch.items()}

  # Compilation.

  def partition(self, fn: Callable[..., Any], in_shardings: Any, out_shardings: Any,
                donate_argnums: Sequence[int] = (),
                static_argnums: Sequence[int] = ()) -> PartitionedFunction:
    """`jax.jit(fn)` with shardings, traced under this mesh and these logical axis rules.

    Args:
      fn: a pure function.
      in_shardings / out_shardings: NamedSharding trees (see `shardings`), as for `jax.jit`.
      donate_argnums: arguments whose buffers the output may reuse (the train state).
      static_argnums: hashable arguments that select a trace.

    Returns:
      A PartitionedFunction; calling it with a batch of a new shape traces again (`num_traces`).
    """
    def factory(counted):
      return jax.jit(counted, in_shardings=in_shardings, out_shardings=out_shardings,
                     donate_argnums=tuple(donate_argnums), static_argnums=tuple(static_argnums),
                     compiler_options=self.compiler_options or None)
    return PartitionedFunction(fn, factory, self.mesh, self.logical_axis_rules)
