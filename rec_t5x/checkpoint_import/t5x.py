"""T5X checkpoints -> our parameter tree (identical to T5X's `target`, so no renaming).

Two on-disk formats:
  * legacy (`use_orbax=False`, the published FLAN-T5 checkpoints): a flax msgpack index `checkpoint`
    whose array leaves are either inline (flax's ndarray ext type, decoded by
    `flax.serialization.msgpack_restore`) or TensorStore specs of zarr v2 arrays beside it, read
    with tensorstore (any chunk grid, gzip, bfloat16 ...). Only `optimizer/target` is read.
  * Orbax (T5X's default): `checkpoint_N/state` is a `PyTreeCheckpointHandler` item; we restore just
    its `target` subtree as numpy arrays with plain orbax-checkpoint.
Floating parameters are returned as float32 numpy arrays. Paths are local directories (copy a
gs:// checkpoint first, e.g. with `gsutil -m cp -r`).
"""
import json
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import flax.serialization
import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts

from rec_t5x import network
from rec_t5x.checkpoint_import import tree

Params = tree.Params


def _legacy_index_file(path: str | os.PathLike) -> pathlib.Path:
  path = pathlib.Path(path)
  index = path / "checkpoint" if path.is_dir() else path
  if not index.is_file():
    raise FileNotFoundError(f"T5X legacy checkpoint index not found: {index} (expected a directory "
                            "holding a msgpack file named 'checkpoint', or that file)")
  return index


def _is_tensorstore_spec(value: Any) -> bool:
  return isinstance(value, Mapping) and "driver" in value


def _absolute_spec(spec: Mapping[str, Any], checkpoint_dir: pathlib.Path) -> dict[str, Any]:
  """Resolves the checkpoint-relative kvstore path of a T5X TensorStore spec."""
  spec = dict(spec)
  kvstore = spec.get("kvstore", {"driver": "file"})
  if isinstance(kvstore, str):
    return spec  # already a URL such as "file:///abs/path/" or "gs://bucket/path/"
  kvstore = dict(kvstore)
  relative = kvstore.get("path", "")
  if "path" in spec:  # older specs put the array path at the top level
    relative = os.path.join(relative, spec.pop("path"))
  if kvstore.get("driver", "file") == "file" and not os.path.isabs(relative):
    kvstore["path"] = str(checkpoint_dir / relative)
  spec["kvstore"] = kvstore
  return spec


def _read_arrays(specs: dict[str, dict[str, Any]], index: pathlib.Path) -> dict[str, np.ndarray]:
  """Opens and reads all TensorStore arrays concurrently; errors name the parameter and spec."""
  opened = {name: ts.open(spec, read=True) for name, spec in specs.items()}
  reads = {}
  for name, future in opened.items():
    try:
      reads[name] = future.result().read()
    except Exception as e:  # tensorstore raises ValueError / RuntimeError subclasses
      raise ValueError(f"{index}: cannot open array for parameter '{name}' "
                       f"(spec {specs[name]}): {e}") from e
  arrays = {}
  for name, future in reads.items():
    try:
      arrays[name] = future.result()
    except Exception as e:
      raise ValueError(f"{index}: cannot read array for parameter '{name}' "
                       f"(spec {specs[name]}): {e}") from e
  return arrays


def load_t5x_legacy(path: str | os.PathLike) -> Params:
  """Reads `optimizer/target` of a T5X legacy checkpoint.

  Args:
    path: the `checkpoint_N` directory, or its `checkpoint` msgpack file.

  Returns:
    nested {name: ... np.ndarray} parameter tree (float32 for floating arrays).

  Raises:
    FileNotFoundError: naming the missing index file.
    ValueError: naming the file (and parameter) that cannot be decoded or read.
  """
  index = _legacy_index_file(path)
  try:
    state = flax.serialization.msgpack_restore(index.read_bytes())
  except Exception as e:
    raise ValueError(f"{index}: not a flax msgpack checkpoint index: {e}") from e
  target = state.get("optimizer", {}).get("target") if isinstance(state, Mapping) else None
  if not isinstance(target, Mapping):
    keys = sorted(state) if isinstance(state, Mapping) else type(state).__name__
    raise ValueError(f"{index}: expected a T5X train state with 'optimizer/target', found {keys}")
  flat = dict(tree.flatten_until(target, _is_tensorstore_spec))
  specs = {name: _absolute_spec(leaf, index.parent) for name, leaf in flat.items()
           if _is_tensorstore_spec(leaf)}
  arrays = _read_arrays(specs, index)
  params = {name: tree.as_float32(arrays.get(name, leaf)) for name, leaf in flat.items()}
  return tree.unflatten(params)


def _orbax_state_dir(path: str | os.PathLike) -> pathlib.Path:
  path = pathlib.Path(path)
  if not path.is_dir():
    raise FileNotFoundError(f"T5X Orbax checkpoint directory not found: {path}")
  for candidate in (path / "state", path):
    if (candidate / "_METADATA").is_file() or (candidate / "manifest.ocdbt").is_file():
      return candidate
  raise ValueError(f"{path}: not a T5X Orbax checkpoint (no state/_METADATA or manifest.ocdbt)")


def load_t5x_orbax(path: str | os.PathLike) -> Params:
  """Restores the `target` subtree of a T5X Orbax checkpoint as numpy arrays.

  Args:
    path: the `checkpoint_N` directory (holding `state/`) or the `state` directory itself.

  Returns:
    nested parameter tree (float32 for floating arrays).
  """
  state_dir = _orbax_state_dir(path)
  checkpointer = ocp.PyTreeCheckpointer()
  try:
    metadata = checkpointer.metadata(state_dir)
  except Exception as e:
    raise ValueError(f"{state_dir}: cannot read Orbax metadata: {e}") from e
  metadata = getattr(metadata, "item_metadata", metadata)
  metadata = getattr(metadata, "tree", metadata)
  if not isinstance(metadata, Mapping) or "target" not in metadata:
    keys = sorted(metadata) if isinstance(metadata, Mapping) else type(metadata).__name__
    raise ValueError(f"{state_dir}: expected a T5X train state with 'target', found {keys}")
  item = {"target": metadata["target"]}
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
  try:
    restored = checkpointer.restore(state_dir, args=ocp.args.PyTreeRestore(
        item=item, restore_args=restore_args, partial_restore=True))
  except Exception as e:
    raise ValueError(f"{state_dir}: Orbax restore of 'target' failed: {e}") from e
  return tree.unflatten({p: tree.as_float32(v) for p, v in tree.flatten(restored["target"])})


_T5X_FIELDS = {
    "vocab_size", "emb_dim", "num_heads", "head_dim", "mlp_dim", "num_encoder_layers",
    "num_decoder_layers", "mlp_activations", "dropout_rate", "logits_via_embedding", "dtype",
}
_FIXED_FIELDS = {"relpos_num_buckets", "relpos_max_distance", "layer_norm_epsilon"}


def t5x_config_from_json(path: str | os.PathLike) -> network.T5Config:
  """Builds a T5Config from a JSON file of T5X `T5Config` values.

  Accepts either a flat object of T5Config fields or the fixture layout
  `{"T5Config": {...}, "fixed_in_network_code": {...}, <other metadata>}`. T5X's
  `float32_attention_logits` is accepted and has no effect (our attention logits are always
  float32); any other unknown field is an error.

  Args:
    path: the JSON file.

  Returns:
    the T5Config.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"T5X config JSON not found: {path}")
  try:
    data = json.loads(path.read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f"{path}: cannot parse JSON: {e}") from e
  if "T5Config" in data:
    fields = {**data["T5Config"], **data.get("fixed_in_network_code", {})}
  else:
    fields = dict(data)
  fields.pop("float32_attention_logits", None)
  unknown = sorted(set(fields) - _T5X_FIELDS - _FIXED_FIELDS)
  if unknown:
    raise ValueError(f"{path}: unknown T5Config fields {unknown}; known: "
                     f"{sorted(_T5X_FIELDS | _FIXED_FIELDS)}")
  if "mlp_activations" in fields:
    fields["mlp_activations"] = tuple(fields["mlp_activations"])
  try:
    return network.T5Config(**fields)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{path}: {e}") from e
