"""Orbax checkpoints: save every N steps, keep the last K, exact resume, SIGTERM, initial weights.

Layout of a run's checkpoint directory (orbax `CheckpointManager`):

  <directory>/<step>/train_state/   TrainState (step, params, opt_state), OCDBT tensorstore arrays
  <directory>/<step>/input_state/   JSON: the input pipeline's position (optional)

`CheckpointManager.restore(abstract_state)` restores onto the shardings carried by the abstract
state (`Trainer.abstract_state`), so a checkpoint written on one mesh restores onto another.
The input-pipeline item is any JSON-serialisable value or `bytes` (e.g.
`input_pipeline.BatchIterator.get_state()`), one per process: every process passes its own, they are
gathered into one JSON file (base64) and each process gets its own back on restore (same number of
processes required).

`restore_initial(path, abstract_params)` loads only parameters for INITIAL_CHECKPOINT_PATH: our
own checkpoints (a run directory or one step of it), or, through
`checkpoint_import.detect_and_load`, T5X legacy, T5X Orbax and Hugging Face checkpoints. Missing / unexpected names and shape mismatches
are errors that name each parameter and both shapes.
"""
import base64
import json
import os
import pathlib
import signal
import threading
from typing import Any

import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

STATE_ITEM = "train_state"
INPUT_ITEM = "input_state"


def _to_bytes(value: Any) -> tuple[str, bytes]:
  if isinstance(value, (bytes, bytearray)):
    return "bytes", bytes(value)
  return "json", json.dumps(value).encode("utf-8")


def _gather_bytes(data: bytes) -> list[bytes]:
  """Every process's `data`, in process order (collective when there are several processes)."""
  if jax.process_count() == 1:
    return [data]
  lengths = multihost_utils.process_allgather(np.asarray([len(data)], np.int64)).reshape(-1)
  padded = np.zeros([int(lengths.max())], np.uint8)
  padded[:len(data)] = np.frombuffer(data, np.uint8)
  rows = multihost_utils.process_allgather(padded).reshape(len(lengths), -1)
  return [rows[i, :n].tobytes() for i, n in enumerate(lengths)]


def _encode_input_state(value: Any) -> dict[str, Any]:
  """JSON item holding each process's input state (base64), so per-process positions survive."""
  kind, data = _to_bytes(value)
  return {"kind": kind,
          "per_process": [base64.b64encode(d).decode("ascii") for d in _gather_bytes(data)]}


def _decode_input_state(item: dict[str, Any], source: str) -> Any:
  per_process = item["per_process"]
  if len(per_process) != jax.process_count():
    raise ValueError(f"{source}: the input state was saved by {len(per_process)} processes but "
                     f"{jax.process_count()} are running; the input position cannot be restored")
  data = base64.b64decode(per_process[jax.process_index()])
  return data if item["kind"] == "bytes" else json.loads(data.decode("utf-8"))


class SigtermFlag:
  """Context manager that turns SIGTERM into a flag the training loop polls.

  The loop checks `flag.requested(step)` after each step; when True it saves (force=True), waits
  for the write to finish and exits. With several processes the flag is agreed on by all of them
  (any process signalled -> all stop at the same step), so the collective save cannot deadlock.
  The previous handler is restored on exit.
  """

  def __init__(self):
    self._event = threading.Event()
    self._previous = None

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self._event.set()

  def __enter__(self) -> "SigtermFlag":
    self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    # None: the previous handler was not installed from Python; fall back to the default.
    signal.signal(signal.SIGTERM, signal.SIG_DFL if self._previous is None else self._previous)

  def requested(self) -> bool:
    """True once SIGTERM arrived here (or, with several processes, at any process)."""
    local = self._event.is_set()
    if jax.process_count() == 1:
      return local
    flags = multihost_utils.process_allgather(np.asarray(local, np.int32))
    return bool(np.any(flags))


class CheckpointManager:
  """Saves and restores train states (plus the input position) with orbax.

  Args:
    directory: run checkpoint directory (created).
    save_every: save when step % save_every == 0 (and whenever `save(..., force=True)`).
    keep: keep the newest `keep` checkpoints; None keeps all.
    async_save: write in a background thread (arrays are copied to host before `save` returns).
  """

  def __init__(self, directory: str | os.PathLike, save_every: int, keep: int | None = None,
               async_save: bool = True):
    if save_every < 1:
      raise ValueError(f"CheckpointManager.save_every={save_every}: expected >= 1")
    if keep is not None and keep < 1:
      raise ValueError(f"CheckpointManager.keep={keep}: expected >= 1 or None")
    self.directory = pathlib.Path(directory).absolute()
    self.save_every = save_every
    self.keep = keep
    options = ocp.CheckpointManagerOptions(save_interval_steps=save_every, max_to_keep=keep,
                                           enable_async_checkpointing=async_save, create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=(STATE_ITEM, INPUT_ITEM))

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def should_save(self, step: int) -> bool:
    return step % self.save_every == 0 and step not in self._manager.all_steps()

  def save(self, step: int, state: Any, input_state: Any = None, force: bool = False) -> bool:
    """Saves `state` (a TrainState) at `step` when due (or forced); returns whether it saved.

    Args:
      step: the state's step.
      state: TrainState; its arrays may be sharded over any mesh.
      input_state: this process's JSON-serialisable value or bytes (input iterator position).
      force: save even if step % save_every != 0 (SIGTERM, end of training).
    """
    if step in self._manager.all_steps():
      return False
    if not force and step % self.save_every:
      return False
    items = {STATE_ITEM: ocp.args.StandardSave(state)}
    if input_state is not None:
      items[INPUT_ITEM] = ocp.args.JsonSave(_encode_input_state(input_state))
    return self._manager.save(step, args=ocp.args.Composite(**items), force=True)

  def restore(self, abstract_state: Any, step: int | None = None,
              restore_input: bool = True) -> tuple[Any, Any]:
    """Restores the state (and input position) of `step` (default: latest).

    Args:
      abstract_state: TrainState of jax.ShapeDtypeStruct with target shardings
        (`Trainer.abstract_state`); arrays are placed on those shardings.
      step: which step; default the latest.
      restore_input: also restore the input pipeline position. Pass False to restore a
        checkpoint written by a different number of processes (each process saved its own
        shard's position, so positions do not carry over to another process count).

    Returns:
      (state, input_state or None).

    Raises:
      FileNotFoundError: no checkpoint (or not that step) in the directory.
    """
    steps = self.all_steps()
    if step is None:
      if not steps:
        raise FileNotFoundError(f"no checkpoint in {self.directory}")
      step = steps[-1]
    elif step not in steps:
      raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory}; have {steps}")
    items = {STATE_ITEM: ocp.args.StandardRestore(abstract_state)}
    has_input = restore_input and (self.directory / str(step) / INPUT_ITEM).exists()
    if has_input:
      items[INPUT_ITEM] = ocp.args.JsonRestore()
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    input_state = (_decode_input_state(restored[INPUT_ITEM], str(self.directory / str(step)))
                   if has_input else None)
    return restored[STATE_ITEM], input_state

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()

  def __enter__(self) -> "CheckpointManager":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _our_state_dir(path: pathlib.Path) -> pathlib.Path | None:
  """The `train_state` directory when `path` is one of our runs or steps, else None."""
  if (path / STATE_ITEM).is_dir():
    return path / STATE_ITEM
  if path.name == STATE_ITEM and path.is_dir() and (path.parent / STATE_ITEM).exists():
    return path
  steps = [int(p.name) for p in path.iterdir() if p.name.isdigit() and (p / STATE_ITEM).is_dir()] \
      if path.is_dir() else []
  if steps:
    return path / str(max(steps)) / STATE_ITEM
  return None


def _flat(tree: Any) -> dict[str, Any]:
  return {jax.tree_util.keystr(path, simple=True, separator="/"): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def check_params_match(loaded: Any, abstract_params: Any, source: str) -> None:
  """Raises ValueError listing missing / unexpected parameter names and shape mismatches.

  Args:
    loaded: tree of arrays (or metadata with `.shape`) read from a checkpoint.
    abstract_params: the model's parameter tree (arrays or ShapeDtypeStructs).
    source: checkpoint path, for the message.
  """
  have, want = _flat(loaded), _flat(abstract_params)
  problems = [f"missing parameter {k} (model shape {tuple(want[k].shape)})"
              for k in sorted(want.keys() - have.keys())]
  problems += [f"unexpected parameter {k} (checkpoint shape {tuple(have[k].shape)})"
               for k in sorted(have.keys() - want.keys())]
  problems += [f"shape mismatch for {k}: checkpoint {tuple(have[k].shape)} vs model "
               f"{tuple(want[k].shape)}"
               for k in sorted(want.keys() & have.keys())
               if tuple(have[k].shape) != tuple(want[k].shape)]
  if problems:
    raise ValueError(f"initial checkpoint {source} does not fit the model:\n  " +
                     "\n  ".join(problems))


def _restore_our_params(state_dir: pathlib.Path, abstract_params: Any) -> Any:
  """Parameters only from one of our `train_state` items, placed as `abstract_params` says."""
  checkpointer = ocp.PyTreeCheckpointer()
  metadata = checkpointer.metadata(state_dir).item_metadata.tree
  if "params" not in metadata:
    raise ValueError(f"{state_dir} has no 'params' entry (top level: {sorted(metadata)})")
  check_params_match(metadata["params"], abstract_params, str(state_dir))

  def restore_args(leaf):
    sharding = getattr(leaf, "sharding", None)
    if sharding is None:
      return ocp.RestoreArgs(restore_type=np.ndarray, dtype=leaf.dtype)
    return ocp.ArrayRestoreArgs(sharding=sharding, global_shape=leaf.shape, dtype=leaf.dtype)

  target = {"params": abstract_params}
  restored = checkpointer.restore(
      state_dir, args=ocp.args.PyTreeRestore(
          item=target, restore_args=jax.tree.map(restore_args, target), partial_restore=True))
  return restored["params"]


def restore_initial(path: str | os.PathLike, abstract_params: Any) -> Any:
  """Parameters for INITIAL_CHECKPOINT_PATH, checked against the model and placed on its shardings.

  Args:
    path: one of our run directories / step directories, or a T5X legacy / T5X Orbax /
      Hugging Face checkpoint (recognised by `checkpoint_import.detect_and_load`).
    abstract_params: the model's parameter tree of jax.ShapeDtypeStruct (with `sharding` to place
      the arrays; e.g. `Trainer.abstract_state.params`).

  Returns:
    Parameter tree with the structure, dtypes and shardings of `abstract_params`.

  Raises:
    FileNotFoundError: `path` does not exist.
    ValueError: names or shapes differ (each parameter named with both shapes).
  """
  path = pathlib.Path(path)
  if not path.exists():
    raise FileNotFoundError(f"initial checkpoint {path} does not exist")
  state_dir = _our_state_dir(path)
  if state_dir is not None:
    return _restore_our_params(state_dir, abstract_params)
  from rec_t5x import checkpoint_import  # pylint: disable=g-import-not-at-top
  loaded, _ = checkpoint_import.detect_and_load(str(path))
  check_params_match(loaded, abstract_params, str(path))
  have = _flat(loaded)

  def place(key_path, leaf):
    value = np.asarray(have[jax.tree_util.keystr(key_path, simple=True, separator="/")], leaf.dtype)
    sharding = getattr(leaf, "sharding", None)
    if sharding is None:
      return jax.numpy.asarray(value)
    # Every process holds the whole array; each device takes its slice (works multi-process).
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

  return jax.tree_util.tree_map_with_path(place, abstract_params)
