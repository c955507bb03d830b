"""Tests for rec_t5x.distributed in one process (multi-process behaviour: tests/multihost)."""
import socket
import time

import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import pytest

from rec_t5x import distributed
from rec_t5x import partitioning


def _closed_port() -> int:
  """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.parametrize("kwargs,match", [
    ({"coordinator_address": "localhost"}, "coordinator_address='localhost': expected 'host:port'"),
    ({"coordinator_address": "h:70000"}, "port in 1..65535"),
    ({"process_count": 0}, "process_count=0: expected an integer >= 1"),
    ({"process_count": 2, "process_index": 2}, r"process_index=2: expected an integer in 0..1"),
    ({"process_index": -1}, r"process_index=-1: expected an integer in >= 0"),
    ({"initialization_timeout": 0}, "initialization_timeout=0"),
    ({"heartbeat_timeout": 1.5}, "heartbeat_timeout=1.5"),
    ({"cpu_collectives": "nccl"}, "cpu_collectives='nccl': expected 'gloo' or 'mpi'"),
])
def test_initialize_rejects_bad_arguments_naming_them(kwargs, match):
  with pytest.raises(ValueError, match=match):
    distributed.initialize(**kwargs)
  assert not jax.distributed.is_initialized()


def test_unreachable_coordinator_raises_naming_address_and_timeout():
  address = f"127.0.0.1:{_closed_port()}"
  start = time.monotonic()
  with pytest.raises(distributed.CoordinatorUnreachableError) as info:
    distributed.initialize(address, process_count=2, process_index=1, initialization_timeout=1)
  elapsed = time.monotonic() - start
  assert f"could not reach the JAX coordinator at {address} within initialization_timeout=1 s" \
      in str(info.value)
  assert "process 0 is running" in str(info.value)
  assert 1.0 <= elapsed < 10.0
  assert not jax.distributed.is_initialized()


def test_wait_for_coordinator_returns_once_the_port_listens():
  with socket.socket() as server:
    server.bind(("127.0.0.1", 0))
    server.listen()
    waited = distributed.wait_for_coordinator(f"127.0.0.1:{server.getsockname()[1]}", 5)
  assert 0.0 <= waited < 5.0


def test_single_process_collectives_are_identities():
  assert distributed.allgather_bytes(b"abc") == [b"abc"]
  distributed.check_equal_across_processes({"lr": 1e-3}, "config")
  assert distributed.broadcast_seed(7) == 7
  drawn = distributed.broadcast_seed(None)
  assert isinstance(drawn, int) and 0 <= drawn < 2**31
  rows = {"key": np.arange(3, dtype=np.int64), "text": np.asarray(["a", "bb", "c"])}
  gathered = distributed.gather_rows(rows)
  np.testing.assert_array_equal(gathered["key"], rows["key"])
  np.testing.assert_array_equal(gathered["text"], rows["text"])
  totals = distributed.sum_across_processes({"hits": 3, "per_k": np.asarray([1.0, 2.0])})
  assert totals["hits"] == 3.0 and totals["hits"].dtype == np.float64
  np.testing.assert_array_equal(totals["per_k"], [1.0, 2.0])


def test_broadcast_seed_rejects_non_integers():
  with pytest.raises(ValueError, match="seed=1.5: expected an integer or None"):
    distributed.broadcast_seed(1.5)


def test_gather_rows_needs_one_example_axis():
  with pytest.raises(ValueError, match=r"row counts \{'a': 2, 'b': 3\}"):
    distributed.gather_rows({"a": np.zeros(2), "b": np.zeros(3)})


def test_process_local_rows_takes_each_batch_block_once():
  partitioner = partitioning.Partitioner(partitioning.MeshConfig(mesh_shape=(4, 2)))
  values = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
  array = jax.device_put(values, NamedSharding(partitioner.mesh, P("data")))
  np.testing.assert_array_equal(distributed.process_local_rows(array), values)


def test_peer_failures_translates_only_cross_process_errors(monkeypatch):
  with pytest.raises(RuntimeError, match="Gloo all-reduce failed") as single:
    with distributed.peer_failures():  # one process: nothing to translate
      raise RuntimeError("Gloo all-reduce failed: Connection closed by peer")
  assert not isinstance(single.value, distributed.PeerProcessError)
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  with pytest.raises(distributed.PeerProcessError) as info:
    with distributed.peer_failures():
      raise RuntimeError("UNKNOWN: Gloo all-reduce failed: Connection closed by peer [127.0.0.1]")
  assert str(info.value).startswith("process 1 of 2: an operation across processes failed")
  assert "Cause: UNKNOWN: Gloo all-reduce failed" in str(info.value)
  with pytest.raises(RuntimeError, match="unrelated") as other:
    with distributed.peer_failures():
      raise RuntimeError("unrelated shape bug")
  assert not isinstance(other.value, distributed.PeerProcessError)
