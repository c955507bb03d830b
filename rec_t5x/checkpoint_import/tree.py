"""Parameter-tree helpers shared by the importers: flat paths, float32 casting, shape checks."""
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rec_t5x import network

Params = dict[str, Any]  # nested {name: {...: np.ndarray}} in T5X's layout


def flatten_until(tree: Mapping[str, Any], is_leaf: Callable[[Any], bool],
                  prefix: str = "") -> Iterator[tuple[str, Any]]:
  """Like `flatten`, but mappings for which `is_leaf` is true are yielded as leaves."""
  for key in sorted(tree):
    value = tree[key]
    path = f"{prefix}/{key}" if prefix else str(key)
    if isinstance(value, Mapping) and not is_leaf(value):
      yield from flatten_until(value, is_leaf, path)
    else:
      yield path, value


def flatten(tree: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
  """Yields ("encoder/layers_0/attention/query/kernel", leaf) pairs in sorted order."""
  yield from flatten_until(tree, lambda _: False)


def unflatten(flat: Mapping[str, Any]) -> Params:
  """Inverse of `flatten`: {"a/b": x} -> {"a": {"b": x}}."""
  tree: Params = {}
  for path, value in flat.items():
    node = tree
    *parents, leaf = path.split("/")
    for name in parents:
      node = node.setdefault(name, {})
    node[leaf] = value
  return tree


def as_float32(array: Any) -> np.ndarray:
  """Checkpoint array -> numpy; floating dtypes (bfloat16, float16, ...) become float32."""
  array = np.asarray(array)
  if np.issubdtype(array.dtype, np.floating) or array.dtype.name == "bfloat16":
    return array.astype(np.float32)
  return array


def model_param_shapes(config: network.T5Config) -> dict[str, tuple[int, ...]]:
  """{"path": shape} of the parameters `network.Transformer(config)` creates (no allocation)."""
  tokens = jnp.ones((1, 1), jnp.int32)
  variables = jax.eval_shape(
      lambda: network.Transformer(config).init(jax.random.PRNGKey(0), tokens, tokens, tokens))
  return {path: tuple(leaf.shape) for path, leaf in flatten(nn.unbox(variables["params"]))}


def _shape_of(value: Any) -> tuple[int, ...]:
  if isinstance(value, (tuple, list)):
    return tuple(int(d) for d in value)
  return tuple(value.shape)


def check_compatible(params: Mapping[str, Any], expected_shapes: Mapping[str, Any]) -> None:
  """Raises ValueError unless `params` has exactly the expected parameters and shapes.

  Args:
    params: nested parameter tree (arrays or anything with `.shape`).
    expected_shapes: nested tree or flat {"a/b/c": ...} of shapes (tuples) or shaped values (e.g.
      `jax.eval_shape` output, or `model_param_shapes(config)`).

  Raises:
    ValueError: naming every missing or unexpected parameter and every shape mismatch as
      "path: checkpoint shape (...) vs model shape (...)".
  """
  got = {path: _shape_of(v) for path, v in flatten(nn.unbox(params))}
  if expected_shapes and all("/" in k for k in expected_shapes):
    want = {path: _shape_of(v) for path, v in expected_shapes.items()}
  else:
    want = {path: _shape_of(v) for path, v in flatten(nn.unbox(expected_shapes))}
  problems = [f"{p}: checkpoint shape {got[p]} vs model shape {want[p]}"
              for p in sorted(got.keys() & want.keys()) if got[p] != want[p]]
  problems += [f"{p}: missing from the checkpoint (model shape {want[p]})"
               for p in sorted(want.keys() - got.keys())]
  problems += [f"{p}: in the checkpoint (shape {got[p]}) but not in the model"
               for p in sorted(got.keys() - want.keys())]
  if problems:
    listed = "\n  ".join(problems[:50])
    more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
    raise ValueError(f"checkpoint does not fit the model ({len(problems)} problems):\n  "
                     f"{listed}{more}")
