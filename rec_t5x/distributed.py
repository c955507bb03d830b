"""Multi-process runs on JAX's distributed runtime: start-up, cross-process checks, gathers.

One JAX process runs per host (Cloud TPU VM worker, GPU node) or per GPU (SLURM / Open MPI with one
task per GPU). `initialize` joins them before any JAX computation:

  from rec_t5x import distributed
  info = distributed.initialize("10.0.0.1:8476", process_count=4, process_index=rank)
  seed = distributed.broadcast_seed(args.seed)   # equal everywhere, else ProcessMismatchError

Where JAX detects the cluster (Cloud TPU VMs, SLURM, Open MPI), call `initialize()` with no address,
count or index and let `jax.distributed.initialize` fill them in; anywhere else pass all three.
CPU processes exchange data through gloo (`jax_cpu_collectives_implementation`), which is how the
tests run several processes on localhost.

Failures say what went wrong instead of hanging or aborting with a C++ trace:
- a coordinator that cannot be reached within `initialization_timeout` raises
  `CoordinatorUnreachableError` naming the address and the timeout (a TCP probe before JAX's own
  connect, which would abort the process);
- processes that never join: after the timeout a watchdog prints which process waited for whom at
  which address and exits with status `EXIT_INIT_TIMEOUT` (JAX would abort a moment later anyway);
- a peer that dies mid-run: collectives fail (gloo reports a reset connection; the coordination
  service stops processes whose peers miss heartbeats for `heartbeat_timeout` seconds);
  `peer_failures()` turns such errors into `PeerProcessError` naming this process and the likely
  cause.

Evaluation over sharded data: each process scores its own examples; `gather_rows` collects the
per-example results of all processes (in process order, ragged row counts allowed) and
`sum_across_processes` adds metric sums, so metrics are computed once over all examples. Values
travel as bytes (`allgather_bytes`), which keeps int64 / float64 exact without `jax_enable_x64`.
Every function here except `initialize` is a collective: all processes must call it, in the same
order.
"""
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Iterator

import jax
from jax.experimental import multihost_utils
import numpy as np

EXIT_INIT_TIMEOUT = 75  # EX_TEMPFAIL: the processes did not all join within the timeout.
_PROBE_INTERVAL_S = 0.25
_WATCHDOG_GRACE_S = 5  # JAX's own deadline is this much later than ours.

# Messages of errors raised when another process has gone away (gloo transport, coordination
# service, gRPC status names).
_PEER_FAILURE_PATTERNS = re.compile(
    r"gloo|connection reset|connection refused|broken pipe|socket closed|heartbeat|"
    r"coordination service|UNAVAILABLE|DEADLINE_EXCEEDED|task .* (died|failed|crashed)",
    re.IGNORECASE)


class CoordinatorUnreachableError(ConnectionError):
  """The coordinator (process 0's JAX distributed service) did not answer within the timeout."""


class PeerProcessError(RuntimeError):
  """A cross-process operation failed because another process exited, crashed or was preempted."""


class ProcessMismatchError(ValueError):
  """A value that must be equal on every process differs; the message names the processes."""


@dataclasses.dataclass(frozen=True)
class DistributedInfo:
  """Where this process stands after `initialize`.

  Attributes:
    process_index: this process, 0..process_count-1.
    process_count: number of JAX processes.
    local_device_count: devices of this process.
    device_count: devices of all processes.
    coordinator_address: "host:port" of the coordinator as given; None when JAX detected it.
  """
  process_index: int
  process_count: int
  local_device_count: int
  device_count: int
  coordinator_address: str | None


def _check_args(coordinator_address, process_count, process_index, initialization_timeout,
                heartbeat_timeout) -> None:
  if coordinator_address is not None:
    host, sep, port = str(coordinator_address).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
      raise ValueError(f"coordinator_address={coordinator_address!r}: expected 'host:port' with a "
                       "port in 1..65535, e.g. '10.0.0.1:8476'")
  if process_count is not None and (isinstance(process_count, bool)
                                    or not isinstance(process_count, int) or process_count < 1):
    raise ValueError(f"process_count={process_count!r}: expected an integer >= 1")
  if process_index is not None:
    upper = process_count - 1 if process_count is not None else None
    if (isinstance(process_index, bool) or not isinstance(process_index, int) or process_index < 0
        or (upper is not None and process_index > upper)):
      allowed = f"0..{upper}" if upper is not None else ">= 0"
      raise ValueError(f"process_index={process_index!r}: expected an integer in {allowed}")
  for name, value in (("initialization_timeout", initialization_timeout),
                      ("heartbeat_timeout", heartbeat_timeout)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"{name}={value!r}: expected an integer number of seconds >= 1")


def wait_for_coordinator(coordinator_address: str, timeout: float) -> float:
  """Waits until a TCP connection to `coordinator_address` succeeds; returns the seconds waited.

  JAX's client aborts the whole process (a C++ fatal error) when it cannot register with the
  coordinator in time; probing first turns the common mistakes (wrong address, process 0 not
  started, firewall) into a Python exception.

  Raises:
    CoordinatorUnreachableError: naming the address, the timeout and the last socket error.
  """
  host, _, port = coordinator_address.rpartition(":")
  host = host.strip("[]")  # "[::1]:1234" -> "::1"
  start = time.monotonic()
  last_error: OSError | None = None
  while True:
    try:
      with socket.create_connection((host, int(port)), timeout=min(2.0, max(timeout, 0.1))):
        return time.monotonic() - start
    except OSError as e:
      last_error = e
    if time.monotonic() - start >= timeout:
      raise CoordinatorUnreachableError(
          f"could not reach the JAX coordinator at {coordinator_address} within "
          f"initialization_timeout={timeout:g} s (last error: {last_error}). Check that process 0 "
          "is running and listening there (its --coordinator_address must name this host:port), "
          "that every process uses the same address, and that no firewall blocks the port.")
    time.sleep(_PROBE_INTERVAL_S)


def _start_watchdog(coordinator_address: str | None, process_index: int | None,
                    process_count: int | None, timeout: int, delay: float) -> threading.Timer:
  """Prints a clear message and exits when joining is not done after `delay` seconds.

  The timer cannot raise in the main thread (it is blocked inside JAX's C++ connect), and JAX
  aborts the process shortly after this deadline, so exiting with a message is the clearest
  outcome; it is cancelled as soon as `jax.distributed.initialize` returns.
  """
  def expire():
    who = f"process {process_index}" if process_index is not None else "this process"
    total = f"{process_count} processes" if process_count is not None else "all processes"
    where = coordinator_address or "(auto-detected)"
    print(f"rec_t5x.distributed: {who} waited initialization_timeout={timeout:g} s for {total} to "
          f"join the JAX distributed runtime at coordinator {where} and gave up. Start every "
          "process (same --coordinator_address and --process_count, distinct --process_index) or "
          "raise the timeout.", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(EXIT_INIT_TIMEOUT)  # pylint: disable=protected-access

  timer = threading.Timer(delay, expire)
  timer.daemon = True
  timer.start()
  return timer


def _info(coordinator_address: str | None) -> DistributedInfo:
  return DistributedInfo(process_index=jax.process_index(), process_count=jax.process_count(),
                         local_device_count=jax.local_device_count(),
                         device_count=jax.device_count(), coordinator_address=coordinator_address)


def initialize(coordinator_address: str | None = None, process_count: int | None = None,
               process_index: int | None = None, initialization_timeout: int = 300,
               local_device_ids: Sequence[int] | None = None, heartbeat_timeout: int = 100,
               cpu_collectives: str = "gloo") -> DistributedInfo:
  """Joins this process to the others through `jax.distributed.initialize`.

  Call it first, before anything touches JAX devices. Explicit arguments win; those left None are
  detected by JAX on Cloud TPU VMs (all workers of a slice), under SLURM (`srun`) and Open MPI
  (`mpirun`), and otherwise raise a ValueError.

  Args:
    coordinator_address: "host:port" of process 0 (the coordinator service runs there).
    process_count: number of processes.
    process_index: this process, 0..process_count-1 (process 0 hosts the coordinator).
    initialization_timeout: seconds to wait for the coordinator and for all processes to join.
    local_device_ids: restrict this process to these local accelerators (e.g. one GPU per
      process); None lets JAX decide.
    heartbeat_timeout: seconds without a heartbeat after which a process counts as dead and the
      others are stopped.
    cpu_collectives: cross-process collectives on CPU: "gloo" (default) or "mpi".

  Returns:
    DistributedInfo of this process.

  Raises:
    ValueError: malformed arguments (naming the parameter), or nothing given and no cluster
      environment detected.
    CoordinatorUnreachableError: the coordinator did not answer within the timeout.
    RuntimeError: called twice, or after JAX already created its devices.
  """
  _check_args(coordinator_address, process_count, process_index, initialization_timeout,
              heartbeat_timeout)
  if cpu_collectives not in ("gloo", "mpi"):
    raise ValueError(f"cpu_collectives={cpu_collectives!r}: expected 'gloo' or 'mpi'")
  if jax.distributed.is_initialized():
    raise RuntimeError("rec_t5x.distributed.initialize was already called in this process "
                       f"(process {jax.process_index()} of {jax.process_count()})")
  deadline = time.monotonic() + initialization_timeout
  if coordinator_address is not None and process_index not in (None, 0):
    wait_for_coordinator(coordinator_address, initialization_timeout)
  jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
  remaining = max(1.0, deadline - time.monotonic())
  watchdog = _start_watchdog(coordinator_address, process_index, process_count,
                             initialization_timeout, remaining)
  try:
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=process_count,
        process_id=process_index, local_device_ids=local_device_ids,
        initialization_timeout=int(remaining) + _WATCHDOG_GRACE_S,
        heartbeat_timeout_seconds=heartbeat_timeout)
  except ValueError as e:
    raise ValueError(
        f"jax.distributed.initialize could not configure the run ({e}). Pass coordinator_address, "
        "process_count and process_index (--coordinator_address/--process_count/--process_index), "
        "or launch on a Cloud TPU VM, under SLURM (srun) or Open MPI (mpirun) where JAX detects "
        "them.") from e
  except RuntimeError as e:
    if "already initialized" in str(e) or "before" in str(e):
      raise RuntimeError(f"{e}: call rec_t5x.distributed.initialize before any JAX computation "
                         "(jax.devices(), creating arrays, jit), e.g. first thing in main()."
                         ) from e
    raise
  finally:
    watchdog.cancel()
  return _info(coordinator_address)


@contextlib.contextmanager
def peer_failures() -> Iterator[None]:
  """Re-raises errors caused by another process going away as `PeerProcessError`.

  Wrap a training or evaluation loop in it; single-process runs and unrelated errors pass through.
  """
  try:
    yield
  except (jax.errors.JaxRuntimeError, RuntimeError) as e:
    if (jax.process_count() == 1 or isinstance(e, PeerProcessError)
        or not _PEER_FAILURE_PATTERNS.search(str(e))):
      raise
    first_line = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
    raise PeerProcessError(
        f"process {jax.process_index()} of {jax.process_count()}: an operation across processes "
        f"failed, most likely because another process exited, crashed or was preempted (see the "
        f"logs of the other processes for the first error). Restart all processes; training "
        f"resumes from the latest checkpoint. Cause: {first_line}") from e


def exit_after_peer_failure(error: BaseException, exit_code: int = 1) -> None:
  """Prints `error` and ends the process at once, skipping JAX's shutdown barrier.

  After a peer died, the normal interpreter exit waits `heartbeat_timeout` seconds in the
  distributed runtime's shutdown barrier and then aborts with a C++ trace that buries the real
  cause; binaries call this from their `except PeerProcessError` instead. Nothing collective
  (e.g. an Orbax save) can complete once a peer is gone, so nothing is lost by not waiting.
  """
  print(f"rec_t5x: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
  sys.stdout.flush()
  os._exit(exit_code)  # pylint: disable=protected-access


def allgather_bytes(data: bytes) -> list[bytes]:
  """Every process's `data` (any lengths), in process order.

  Args:
    data: this process's bytes.

  Returns:
    process_count byte strings; element i is process i's `data`.
  """
  if jax.process_count() == 1:
    return [bytes(data)]
  buffer = np.frombuffer(bytes(data), np.uint8)
  lengths = multihost_utils.process_allgather(np.asarray([buffer.size], np.int32)).reshape(-1)
  padded = np.zeros([max(int(lengths.max()), 1)], np.uint8)
  padded[:buffer.size] = buffer
  rows = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(lengths), -1)
  return [rows[i, :int(n)].tobytes() for i, n in enumerate(lengths)]


def _fingerprint(value: Any) -> tuple[bytes, str]:
  """(canonical bytes, short description) of a scalar, array, string or JSON-able value."""
  if isinstance(value, (np.ndarray, np.generic, jax.Array)):
    array = np.asarray(value)
    data = f"{array.dtype.str}{array.shape}".encode() + array.tobytes()
    text = np.array2string(array, threshold=8, edgeitems=2)
  elif isinstance(value, bytes):
    data, text = value, repr(value[:32])
  else:
    text = json.dumps(value, sort_keys=True, default=repr)
    data = text.encode("utf-8")
  return data, text if len(text) <= 80 else text[:77] + "..."


def check_equal_across_processes(value: Any, name: str) -> None:
  """Raises when `value` is not the same on every process (a collective).

  Args:
    value: an int / float / string / JSON-able structure or a numpy / jax array.
    name: what the value is, for the message (e.g. "random_seed").

  Raises:
    ProcessMismatchError: naming the processes whose value differs from process 0's, with each
      process's value.
  """
  if jax.process_count() == 1:
    return
  data, text = _fingerprint(value)
  digest = hashlib.sha256(data).digest()
  gathered = allgather_bytes(digest + text.encode("utf-8"))
  digests = [g[:32] for g in gathered]
  differing = [i for i, d in enumerate(digests) if d != digests[0]]
  if differing:
    values = "; ".join(f"process {i}: {g[32:].decode('utf-8', 'replace')}"
                       for i, g in enumerate(gathered))
    raise ProcessMismatchError(
        f"{name} must be equal on all {len(gathered)} processes but processes {differing} differ "
        f"from process 0 ({values})")


def broadcast_seed(seed: int | None) -> int:
  """The run's seed, equal on every process (a collective).

  Args:
    seed: the configured seed (same on every process), or None to let process 0 draw one.

  Returns:
    The seed (process 0's draw when `seed` is None), a Python int.

  Raises:
    ProcessMismatchError: when processes were given different seeds (naming them).
  """
  if seed is not None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
      raise ValueError(f"seed={seed!r}: expected an integer or None")
    check_equal_across_processes(int(seed), "random_seed")
    return int(seed)
  drawn = int(np.random.SeedSequence().entropy % (2**31)) if jax.process_index() == 0 else 0
  return int(json.loads(allgather_bytes(json.dumps(drawn).encode())[0]))


def sum_across_processes(sums: Mapping[str, Any]) -> dict[str, Any]:
  """Adds per-process metric sums (scalars or same-shaped arrays) over all processes, in float64.

  Args:
    sums: name -> this process's sum (e.g. {"hits@10": 12.0, "num_examples": 40}).

  Returns:
    name -> total over processes (numpy float64 scalars / arrays).

  Raises:
    ProcessMismatchError: when processes pass different names or shapes.
  """
  local = {k: np.asarray(v, np.float64) for k, v in sums.items()}
  check_equal_across_processes({k: list(v.shape) for k, v in sorted(local.items())},
                               "metric names and shapes")
  totals = {k: np.zeros_like(v) for k, v in local.items()}
  for blob in allgather_bytes(_npz_bytes(local)):
    with np.load(io.BytesIO(blob)) as arrays:
      for k in totals:
        totals[k] = totals[k] + arrays[k]
  return totals


def _npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
  buffer = io.BytesIO()
  np.savez(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
  return buffer.getvalue()


def gather_rows(local: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Per-example results of all processes, concatenated in process order (a collective).

  Each process passes the rows of the examples it evaluated (row counts may differ between
  processes; strings as numpy unicode/bytes arrays). Dtypes are kept exactly.

  Args:
    local: feature -> [num_local_examples, ...] array; the same features and trailing shapes on
      every process.

  Returns:
    feature -> [num_examples_all_processes, ...] array (process 0's rows first).

  Raises:
    ValueError: when this process's features disagree on the number of rows.
    ProcessMismatchError: when processes pass different features or trailing shapes.
  """
  local = {k: np.asarray(v) for k, v in local.items()}
  counts = {k: v.shape[0] if v.ndim else None for k, v in local.items()}
  if None in counts.values() or len(set(counts.values())) > 1:
    raise ValueError(f"gather_rows: every feature needs the same leading (example) axis; got row "
                     f"counts {counts}")
  check_equal_across_processes({k: [v.dtype.kind, list(v.shape[1:])] for k, v in
                                sorted(local.items())}, "gathered features (kind, trailing shape)")
  parts: dict[str, list[np.ndarray]] = {k: [] for k in local}
  for blob in allgather_bytes(_npz_bytes(local)):
    with np.load(io.BytesIO(blob)) as arrays:
      for k in parts:
        parts[k].append(arrays[k])
  return {k: np.concatenate(v, axis=0) for k, v in parts.items()}


def process_local_rows(array: jax.Array) -> np.ndarray:
  """This process's rows of a batch-sharded global array (e.g. scores of its own examples).

  Rows held by several local devices (the 'model' axis replicates the batch) are taken once.

  Args:
    array: [global_batch, ...] jax.Array sharded along its first axis.

  Returns:
    [rows of this process, ...] numpy array, in global row order.
  """
  blocks = {}
  for shard in array.addressable_shards:
    start = (shard.index[0].start or 0) if shard.index else 0
    if start not in blocks:
      blocks[start] = np.asarray(shard.data)
  return np.concatenate([blocks[s] for s in sorted(blocks)], axis=0)
