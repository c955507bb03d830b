"""Runs one ablation spec through subprocesses: train (resuming), evaluate, write its record.

The record of a run evaluated on the test split is `run.json`; on the validation split (tuning,
docs/tuning.md) `run_validation.json`. Both can exist for one trained run.

States of a run directory (`RunSpec.run_dir`), for the spec's evaluation split:

  done        the split's record exists, is complete, and its "spec" equals the spec: skipped.
  trained     the final checkpoint `<run_dir>/<train_steps>/` exists: only evaluation runs (e.g. a
              changed `decode_max_examples`, or an evaluation that was interrupted).
  otherwise   `python -m rec_t5x.train` runs; it resumes by itself from the latest checkpoint of
              an interrupted run.

run.json: {"spec", "key", "status": "complete", "metrics" (eval_metrics.json "tasks": task ->
metric -> value), "eval_step", "train_seconds" (summed over every train attempt, see
timing.json), "train_seconds_estimated" (an attempt was killed and its seconds estimated from
train.log, `_start_attempt`), "eval_seconds", "train_curve" {"step", "loss"} (TensorBoard), "commands" (shell
lines and argv), "num_embeddings", "date" (UTC, ISO 8601), "machine", "code" (commit, uncommitted
changes, training revision, package versions at the record's writing, plus "trained": the commit
of each train attempt, taken when the attempt started; provenance.py)}. It is written atomically
after a successful evaluation, so its presence means the run finished. The subprocesses' output is
echoed and kept in `<run_dir>/train.log` and `eval.log`.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import contextlib
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time
from typing import Any, Protocol

from rec_t5x.experiments import commands
from rec_t5x.experiments import events
from rec_t5x.experiments import grid as grid_lib
from rec_t5x.experiments import provenance

RUN_FILE = "run.json"  # the test split's record; see record_file
TIMING_FILE = "timing.json"
EVAL_METRICS_FILE = "eval_metrics.json"  # written by rec_t5x.eval
TRAIN_LOSS_TAG = "loss"
Log = Callable[[str], None]


class CommandFailed(RuntimeError):
  """A subprocess of a run exited with a non-zero status."""


class Executor(Protocol):
  """Runs one command to completion; raises CommandFailed on a non-zero exit."""

  def __call__(self, command: Sequence[str], *, env: Mapping[str, str],
               log_path: pathlib.Path) -> None:
    ...


def execute(command: Sequence[str], *, env: Mapping[str, str], log_path: pathlib.Path,
            echo: bool = True) -> None:
  """Runs `command` from the repository root, copying its output to `log_path` (and stdout).

  Raises:
    CommandFailed: naming the command, its exit status and the log file.
  """
  log_path.parent.mkdir(parents=True, exist_ok=True)
  with open(log_path, "a", encoding="utf-8", buffering=1) as log:  # line-buffered: the log follows the run
    log.write(f"$ {commands.shell(command)}\n")
    log.flush()
    with subprocess.Popen(list(command), cwd=grid_lib.REPO_ROOT, env=dict(env), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1) as process:
      assert process.stdout is not None
      for line in process.stdout:
        log.write(line)
        if echo:
          sys.stdout.write(line)
          sys.stdout.flush()
      status = process.wait()
  if status != 0:
    raise CommandFailed(f"exit status {status}: {commands.shell(command)} (output in {log_path})")


def machine_info() -> dict[str, Any]:
  """nproc, CPU model, platform and load average of this machine."""
  cpu = platform.processor() or ""
  with contextlib.suppress(OSError):
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
  load = os.getloadavg() if hasattr(os, "getloadavg") else None
  return {"nproc": os.cpu_count(), "cpu": cpu, "platform": platform.platform(),
          "load_average": [round(x, 2) for x in load] if load else None}


def utc_now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_json(path: pathlib.Path, data: Any) -> None:
  """Writes JSON atomically (a temporary file renamed), so readers never see half a file."""
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      json.dump(data, f, indent=2, sort_keys=True)
      f.write("\n")
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


def read_json(path: pathlib.Path) -> Any | None:
  """The JSON content of `path`, or None when it is missing or not valid JSON."""
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except (OSError, ValueError):
    return None


def record_file(split: str = "test") -> str:
  """The record's file name of a run evaluated on `split`: run.json, run_validation.json."""
  return RUN_FILE if split == "test" else f"run_{split}.json"


def is_done(spec: grid_lib.RunSpec, run_dir: pathlib.Path) -> bool:
  """Whether the record of the spec's split is complete and was written for exactly this spec."""
  record = read_json(run_dir / record_file(spec.eval_split))
  return (isinstance(record, dict) and record.get("status") == "complete"
          and record.get("spec") == spec.to_dict() and isinstance(record.get("metrics"), dict))


def is_trained(spec: grid_lib.RunSpec, run_dir: pathlib.Path) -> bool:
  """Whether the final checkpoint `<run_dir>/<train_steps>/train_state` exists.

  Orbax writes a step into a temporary folder and renames it into place once it is complete.
  """
  return (run_dir / str(spec.train_steps) / "train_state").is_dir()


def train_seconds(run_dir: pathlib.Path) -> float | None:
  """Wall-clock of every train attempt of the run (timing.json), None when none was recorded."""
  timing = read_json(run_dir / TIMING_FILE) or {}
  attempts = [a for a in timing.get("train_attempts", []) if a.get("seconds") is not None]
  return sum(a["seconds"] for a in attempts) if attempts else None


def train_seconds_estimated(run_dir: pathlib.Path) -> bool:
  """Whether a train attempt's seconds were estimated (its process was killed; `_start_attempt`)."""
  timing = read_json(run_dir / TIMING_FILE) or {}
  return any(a.get("estimated") for a in timing.get("train_attempts", []))


def close_killed_attempts(run_dir: pathlib.Path) -> None:
  """Estimates the seconds of train attempts that were never closed.

  An attempt still open when the driver comes back to its run belonged to a driver that was
  killed outright (SIGKILL, the machine going away), so its `finally` never ran. Its seconds are
  estimated, before a new attempt writes anything, as the time from its start to the last write
  of train.log, which the training subprocess appends a progress line to every few steps; it is
  marked "estimated" (and so is the record's train_seconds).
  """
  path = run_dir / TIMING_FILE
  timing = read_json(path) or {}
  log_path = run_dir / "train.log"
  open_attempts = [a for a in timing.get("train_attempts", [])
                   if a.get("seconds") is None and a.get("started_unix") is not None]
  for attempt in open_attempts:
    last_write = log_path.stat().st_mtime if log_path.exists() else attempt["started_unix"]
    attempt.update(seconds=round(max(0.0, last_write - attempt["started_unix"]), 2),
                   estimated=True, ended=_utc_from_unix(last_write))
  if open_attempts:
    write_json(path, timing)


def _start_attempt(run_dir: pathlib.Path, code: Mapping[str, Any]) -> int:
  """Closes killed attempts, appends an open one to timing.json and returns its index."""
  close_killed_attempts(run_dir)
  timing = read_json(run_dir / TIMING_FILE) or {}
  attempts = timing.setdefault("train_attempts", [])
  attempts.append({"started": utc_now(), "started_unix": round(time.time(), 3), "seconds": None,
                   "completed": False, "code": provenance.revision_of(code)})
  write_json(run_dir / TIMING_FILE, timing)
  return len(attempts) - 1


def _finish_attempt(run_dir: pathlib.Path, index: int, seconds: float, completed: bool) -> None:
  timing = read_json(run_dir / TIMING_FILE) or {}
  timing["train_attempts"][index].update(seconds=round(seconds, 2), completed=completed,
                                         ended=utc_now())
  write_json(run_dir / TIMING_FILE, timing)


def _utc_from_unix(seconds: float) -> str:
  return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(
      timespec="seconds")


def trained_revisions(run_dir: pathlib.Path) -> list[dict[str, Any]]:
  """The distinct {"commit", "dirty"} the run's train attempts started from, in attempt order
  (attempts recorded before they kept it are left out)."""
  timing = read_json(run_dir / TIMING_FILE) or {}
  out: list[dict[str, Any]] = []
  for attempt in timing.get("train_attempts", []):
    code = attempt.get("code")
    if code is not None and code not in out:
      out.append(code)
  return out


class VocabRows:
  """NUM_EMBEDDINGS per (dataset, vocabulary), measured once per process by `vocab_command`."""

  def __init__(self, python: str = sys.executable, base_env: Mapping[str, str] | None = None):
    self._python = python
    self._base_env = dict(os.environ if base_env is None else base_env)
    self._cache: dict[tuple[str, str | None], int] = {}

  def __call__(self, spec: grid_lib.RunSpec) -> int:
    key = (spec.dataset, spec.vocabulary)
    if key not in self._cache:
      command = commands.vocab_command(spec.dataset, self._python)
      done = subprocess.run(command, cwd=grid_lib.REPO_ROOT, capture_output=True, text=True,
                            env=commands.run_env(spec, self._base_env), check=False)
      if done.returncode != 0:
        raise CommandFailed(f"{commands.shell(command)} failed ({done.returncode}):\n"
                            f"{done.stderr[-4000:]}")
      self._cache[key] = int(json.loads(done.stdout.strip().splitlines()[-1])["num_embeddings"])
    return self._cache[key]


def run_one(spec: grid_lib.RunSpec, runs_dir: str | os.PathLike, *,
            executor: Executor = execute, num_embeddings: Callable[[grid_lib.RunSpec], int],
            python: str = sys.executable, base_env: Mapping[str, str] | None = None,
            clock: Callable[[], float] = time.monotonic, log: Log = print,
            code_info: Callable[[], dict[str, Any]] = provenance.code_info) -> dict[str, Any]:
  """Trains (unless trained) and evaluates (unless done) one run; returns its run.json record.

  Args:
    spec: the run.
    runs_dir: root of the run directories.
    executor: runs a command (tests pass a fake).
    num_embeddings: NUM_EMBEDDINGS of a spec (e.g. a `VocabRows`).
    python: the interpreter of the subprocesses.
    base_env: environment of the subprocesses before `commands.run_env` (default os.environ).
    clock: seconds, monotonic (tests inject one).
    log: progress messages.
    code_info: the checkout's provenance, asked when a train attempt starts and when the record
      is written (tests inject one).

  Returns:
    The run.json record.

  Raises:
    CommandFailed: a subprocess failed, or training exited without its final checkpoint (run.json
      is not written; re-running resumes).
    RuntimeError: the evaluation wrote no metrics, or evaluated another step than train_steps.
  """
  run_dir = spec.run_dir(pathlib.Path(runs_dir).resolve())
  if is_done(spec, run_dir):
    log(f"[experiment] done, skipped: {run_dir}")
    return read_json(run_dir / record_file(spec.eval_split))
  run_dir.mkdir(parents=True, exist_ok=True)
  write_json(run_dir / "spec.json", spec.to_dict())
  env = commands.run_env(spec, os.environ if base_env is None else base_env)
  rows = num_embeddings(spec)
  train = commands.train_command(spec, run_dir, rows, python)
  evaluate = commands.eval_command(spec, run_dir, rows, python)
  if is_trained(spec, run_dir):
    log(f"[experiment] final checkpoint exists, evaluating only: {run_dir}")
    close_killed_attempts(run_dir)  # Killed after its last checkpoint, before it was closed.
  else:
    log(f"[experiment] training {spec.dataset}/{spec.model}/{spec.mixture} seed {spec.seed}: "
        f"{run_dir}")
    attempt = _start_attempt(run_dir, code_info())
    start, completed = clock(), False
    try:
      executor(train, env=env, log_path=run_dir / "train.log")
      # rec_t5x.train exits 0 after saving on SIGTERM (preemption), so a clean exit alone does
      # not mean the run reached train_steps; evaluating then would score a partial model.
      completed = is_trained(spec, run_dir)
    finally:
      _finish_attempt(run_dir, attempt, clock() - start, completed)
    if not completed:
      raise CommandFailed(
          f"{commands.shell(train)} exited without the final checkpoint "
          f"{run_dir / str(spec.train_steps)} (stopped early, e.g. by SIGTERM; output in "
          f"{run_dir / 'train.log'}); re-running resumes from its last checkpoint")
  log(f"[experiment] evaluating on {spec.eval_split.upper()} ({spec.decode_max_examples or 'all'} "
      "users per task)")
  start = clock()
  executor(evaluate, env=env, log_path=run_dir / "eval.log")
  eval_seconds = clock() - start
  return _write_record(spec, run_dir, train, evaluate, rows, eval_seconds, env, code_info())


def _write_record(spec: grid_lib.RunSpec, run_dir: pathlib.Path, train: list[str],
                  evaluate: list[str], rows: int, eval_seconds: float,
                  env: Mapping[str, str], code: Mapping[str, Any]) -> dict[str, Any]:
  metrics_path = commands.eval_dir(run_dir, spec.eval_split) / EVAL_METRICS_FILE
  evaluation = read_json(metrics_path)
  if not isinstance(evaluation, dict) or not isinstance(evaluation.get("tasks"), dict):
    raise RuntimeError(f"{metrics_path}: missing or without 'tasks' after `rec_t5x.eval`")
  if evaluation.get("step") != spec.train_steps:
    raise RuntimeError(f"{metrics_path} evaluated step {evaluation.get('step')}, expected the "
                       f"final step {spec.train_steps} of {run_dir}")
  steps, losses = events.read_scalars(run_dir / "train", TRAIN_LOSS_TAG)
  prefix = {commands.ENV_VOCABULARY: env[commands.ENV_VOCABULARY]} if spec.vocabulary else None
  record = {
      "spec": spec.to_dict(), "key": spec.key(), "status": "complete",
      "eval_split": spec.eval_split,
      "metrics": evaluation["tasks"], "eval_step": evaluation["step"],
      "train_seconds": train_seconds(run_dir),
      "train_seconds_estimated": train_seconds_estimated(run_dir),
      "eval_seconds": round(eval_seconds, 2),
      "train_curve": {"step": steps, "loss": losses},
      "commands": {"train": commands.shell(train, prefix), "eval": commands.shell(evaluate, prefix),
                   "train_argv": train, "eval_argv": evaluate},
      "num_embeddings": rows, "date": utc_now(), "machine": machine_info(),
      "code": {**code, "trained": trained_revisions(run_dir)},
  }
  write_json(run_dir / record_file(spec.eval_split), record)
  return record


def load_records(run_dirs: Sequence[pathlib.Path],
                 specs: Sequence[grid_lib.RunSpec] | None = None,
                 split: str = "test") -> list[dict[str, Any]]:
  """The complete records of `run_dirs` (for each spec's split, else for `split`).

  Args:
    run_dirs: run directories; those without a complete record are left out.
    specs: when given (one per directory), a record counts only if it was written for that spec
      (a run evaluated with other settings, e.g. fewer test users, is left out).
    split: the evaluation split read when `specs` is None.

  Returns:
    The records, in the order of `run_dirs`; each gains "run_dir" (the directory it was read
    from, not stored in the file), where report sections find the run's other outputs.
  """
  if specs is not None and len(specs) != len(run_dirs):
    raise ValueError(f"load_records: {len(specs)} specs for {len(run_dirs)} run directories")
  records = []
  for i, run_dir in enumerate(run_dirs):
    name = record_file(specs[i].eval_split if specs is not None else split)
    record = read_json(pathlib.Path(run_dir) / name)
    if not isinstance(record, dict) or record.get("status") != "complete":
      continue
    if specs is None or record.get("spec") == specs[i].to_dict():
      records.append({**record, "run_dir": os.fspath(run_dir)})
  return records


def split_current(records: Sequence[dict[str, Any]]
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
  """(records of the present code, records whose key is no longer their spec's key).

  A run trained before `grid.TRAINING_REVISION` was bumped keeps its old key; mixing it with
  runs of the new code would average two different experiments under one setting.
  """
  current, stale = [], []
  for record in records:
    spec = grid_lib.RunSpec.from_dict(record["spec"])
    (current if spec.current(record.get("key")) else stale).append(record)
  return current, stale


def find_records(runs_dir: str | os.PathLike, split: str = "test") -> list[dict[str, Any]]:
  """Every complete record of `split` under `runs_dir` (any grid), in path order."""
  name = record_file(split)
  return load_records(sorted(p.parent for p in pathlib.Path(runs_dir).rglob(name)), split=split)
