"""Starts worker processes on localhost for the multi-process tests and collects their results.

Each worker is `python -m tests.multihost.worker` with its own simulated CPU devices
(`--xla_force_host_platform_device_count`), joined through `rec_t5x.distributed.initialize` on
127.0.0.1 and a free port. Output goes to files (no pipe can fill up), and every wait has a timeout
after which the remaining workers are killed, so a hanging run fails the test instead of the suite.
"""
import dataclasses
import os
import pathlib
import socket
import subprocess
import sys
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class Finished:
  """One worker after it ended (or was killed at the timeout)."""
  index: int
  returncode: int | None
  stdout: str
  stderr: str
  seconds: float
  killed: bool


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def start(out_dir: pathlib.Path, scenario: str, process_count: int, indices=None,
          devices_per_process: int = 2, extra_args=(), port: int | None = None):
  """Starts workers `indices` (default all) of a `process_count`-process run; returns Popens."""
  out_dir.mkdir(parents=True, exist_ok=True)
  port = port or free_port()
  env = dict(os.environ)
  env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}",
             JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
  procs = []
  for index in (range(process_count) if indices is None else indices):
    command = [sys.executable, "-m", "tests.multihost.worker", f"--scenario={scenario}",
               f"--coordinator=127.0.0.1:{port}", f"--process_count={process_count}",
               f"--process_index={index}", f"--out_dir={out_dir}", *extra_args]
    stdout = open(out_dir / f"stdout_{index}.txt", "w")  # pylint: disable=consider-using-with
    stderr = open(out_dir / f"stderr_{index}.txt", "w")  # pylint: disable=consider-using-with
    proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=stdout, stderr=stderr)
    proc.index, proc.files, proc.started = index, (stdout, stderr), time.monotonic()
    procs.append(proc)
  return procs


def wait(procs, timeout: float) -> list[Finished]:
  """Waits for every worker up to `timeout` seconds in total, then kills the rest."""
  deadline = time.monotonic() + timeout
  finished = []
  for proc in procs:
    killed = False
    try:
      proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
      killed = True
    for f in proc.files:
      f.close()
    out_dir = pathlib.Path(proc.files[0].name).parent
    finished.append(Finished(
        proc.index, None if killed else proc.returncode,
        (out_dir / f"stdout_{proc.index}.txt").read_text(),
        (out_dir / f"stderr_{proc.index}.txt").read_text(),
        time.monotonic() - proc.started, killed))
  return finished


def describe(finished: list[Finished]) -> str:
  """Every worker's exit and the tail of its stderr, for assertion messages."""
  return "\n".join(f"--- worker {f.index}: rc={f.returncode} killed={f.killed} "
                   f"{f.seconds:.1f}s\n{f.stderr[-3000:]}" for f in finished)
