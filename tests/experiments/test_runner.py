"""Tests for rec_t5x.experiments.runner with a fake executor: skip, resume, eval-only, run.json."""
import ast
import json
import os
import pathlib
import threading
import time

import pytest

from rec_t5x.experiments import aggregate
from rec_t5x.experiments import provenance
from rec_t5x.experiments import report
from rec_t5x.experiments import runner
from tests.experiments import fakes


class FakeExecutor:
  """Plays rec_t5x.train (writes the final checkpoint) and rec_t5x.eval (eval_metrics.json)."""

  def __init__(self, recall10=0.1, fail_train=False, eval_step=None, preempt_train=False):
    self.calls = []
    self.recall10 = recall10
    self.fail_train = fail_train
    self.eval_step = eval_step
    self.preempt_train = preempt_train  # exit 0 after saving step 2, as on SIGTERM

  def __call__(self, command, *, env, log_path):
    bindings = dict(a[len("--gin."):].split("=", 1) for a in command if a.startswith("--gin."))
    binary = command[2]
    self.calls.append((binary, dict(env), log_path.name))
    if binary == "rec_t5x.train":
      if self.fail_train:
        raise runner.CommandFailed("train killed")
      model_dir = pathlib.Path(ast.literal_eval(bindings["MODEL_DIR"]))
      if self.preempt_train:
        (model_dir / "2" / "train_state").mkdir(parents=True)
        return
      (model_dir / bindings["TRAIN_STEPS"] / "train_state").mkdir(parents=True)
      self.steps = int(bindings["TRAIN_STEPS"])
    else:
      out = pathlib.Path(ast.literal_eval(bindings["EVAL_OUTPUT_DIR"]))
      out.mkdir(parents=True, exist_ok=True)
      step = self.eval_step or int(pathlib.Path(ast.literal_eval(bindings["CHECKPOINT_PATH"])).name
                                   .split("-")[1].removeprefix("steps"))
      (out / "eval_metrics.json").write_text(json.dumps(
          {"step": step, "split": "test", "tasks": fakes.metrics(self.recall10)}))

  def binaries(self):
    return [c[0] for c in self.calls]


class Clock:

  def __init__(self):
    self.now = 0.0

  def __call__(self):
    self.now += 10.0
    return self.now


def _run(spec, runs_dir, executor, **kwargs):
  return runner.run_one(spec, runs_dir, executor=executor, num_embeddings=lambda s: 2432,
                        python="/py", base_env={"REC_T5X_VOCABULARY": "/x"}, clock=Clock(),
                        log=lambda m: None, **kwargs)


def test_new_run_trains_evaluates_and_writes_run_json(tmp_path):
  spec = fakes.spec(mixture="rec_mim")
  executor = FakeExecutor(recall10=0.25)
  record = _run(spec, tmp_path, executor)
  assert executor.binaries() == ["rec_t5x.train", "rec_t5x.eval"]
  assert all("REC_T5X_VOCABULARY" not in env for _, env, _ in executor.calls)
  saved = fakes.read(spec.run_dir(tmp_path) / "run.json")
  assert saved == record
  assert saved["spec"] == spec.to_dict() and saved["status"] == "complete"
  assert saved["metrics"]["rec_t5x.ml100k.retrieval"]["recall@10"] == 0.25
  assert saved["train_seconds"] == 10.0 and saved["eval_seconds"] == 10.0
  assert saved["commands"]["train"].startswith("/py -m rec_t5x.train ")
  assert saved["commands"]["eval_argv"][2] == "rec_t5x.eval"
  assert saved["num_embeddings"] == 2432 and saved["eval_step"] == 4
  assert saved["train_curve"] == {"step": [], "loss": []}  # The fake wrote no event file.
  assert saved["machine"]["nproc"] >= 1
  assert saved["code"]["training_revision"] == 1 and saved["code"]["packages"]["jax"]
  assert set(saved["code"]) == {"commit", "dirty", "code_tree", "training_revision", "packages",
                                "trained"}
  assert saved["code"]["trained"] == [{key: saved["code"][key]
                                       for key in ("commit", "dirty", "code_tree")}]


class Checkout:
  """code_info of a checkout whose commit the test moves on."""

  def __init__(self, commit):
    self.commit = commit

  def __call__(self):
    return {"commit": self.commit, "dirty": False, "training_revision": 1, "packages": {}}


def test_record_keeps_the_commit_each_train_attempt_started_from(tmp_path):
  spec = fakes.spec()
  checkout = Checkout("a" * 40)
  with pytest.raises(runner.CommandFailed):
    _run(spec, tmp_path, FakeExecutor(fail_train=True), code_info=checkout)
  checkout.commit = "b" * 40  # The resumed attempt starts from a newer commit ...
  executor = FakeExecutor()
  original = executor.__call__

  def move_on(command, *, env, log_path):
    original(command, env=env, log_path=log_path)
    checkout.commit = "c" * 40  # ... and the checkout moves on again while it trains.

  record = _run(spec, tmp_path, move_on, code_info=checkout)
  assert record["code"]["commit"] == "c" * 40  # Asked when the record is written.
  assert record["code"]["trained"] == [{"commit": "a" * 40, "dirty": False, "code_tree": None},
                                       {"commit": "b" * 40, "dirty": False, "code_tree": None}]
  assert provenance.short_commit(record) == "ccccccc (trained aaaaaaa, bbbbbbb)"
  attempts = fakes.read(spec.run_dir(tmp_path) / "timing.json")["train_attempts"]
  assert [a["code"]["commit"][0] for a in attempts] == ["a", "b"]


def test_finished_run_is_skipped(tmp_path):
  spec = fakes.spec()
  first = _run(spec, tmp_path, FakeExecutor())
  executor = FakeExecutor(recall10=0.9)
  assert _run(spec, tmp_path, executor) == first
  assert executor.calls == []


def test_changed_evaluation_reuses_the_checkpoint(tmp_path):
  _run(fakes.spec(decode_max_examples=4), tmp_path, FakeExecutor())
  executor = FakeExecutor(recall10=0.3)
  record = _run(fakes.spec(decode_max_examples=8), tmp_path, executor)
  assert executor.binaries() == ["rec_t5x.eval"]
  assert record["spec"]["decode_max_examples"] == 8
  assert record["train_seconds"] == 10.0  # Still the first (only) train attempt.


def test_interrupted_training_leaves_no_run_json_and_is_resumed(tmp_path):
  spec = fakes.spec()
  with pytest.raises(runner.CommandFailed, match="train killed"):
    _run(spec, tmp_path, FakeExecutor(fail_train=True))
  run_dir = spec.run_dir(tmp_path)
  assert not (run_dir / "run.json").exists()
  assert not runner.is_done(spec, run_dir) and not runner.is_trained(spec, run_dir)
  executor = FakeExecutor()
  record = _run(spec, tmp_path, executor)
  assert executor.binaries() == ["rec_t5x.train", "rec_t5x.eval"]
  attempts = fakes.read(run_dir / "timing.json")["train_attempts"]
  assert [a["completed"] for a in attempts] == [False, True]
  assert record["train_seconds"] == 20.0  # Both attempts count.


def test_training_that_exits_cleanly_before_its_last_step_is_not_evaluated(tmp_path):
  spec = fakes.spec()
  preempted = FakeExecutor(preempt_train=True)
  with pytest.raises(runner.CommandFailed, match=r"exited without the final checkpoint .*/4 "
                                                 r"\(stopped early, e.g. by SIGTERM"):
    _run(spec, tmp_path, preempted)
  assert preempted.binaries() == ["rec_t5x.train"]  # No evaluation of the step-2 checkpoint.
  run_dir = spec.run_dir(tmp_path)
  assert not (run_dir / "run.json").exists()
  executor = FakeExecutor()
  _run(spec, tmp_path, executor)
  assert executor.binaries() == ["rec_t5x.train", "rec_t5x.eval"]
  attempts = fakes.read(run_dir / "timing.json")["train_attempts"]
  assert [a["completed"] for a in attempts] == [False, True]


def test_run_json_of_another_spec_is_not_done(tmp_path):
  spec = fakes.spec()
  _run(spec, tmp_path, FakeExecutor())
  path = spec.run_dir(tmp_path) / "run.json"
  data = fakes.read(path)
  data["spec"]["decode_max_examples"] = 99
  path.write_text(json.dumps(data))
  assert not runner.is_done(spec, spec.run_dir(tmp_path))
  data["spec"]["decode_max_examples"] = 4
  data["status"] = "running"
  path.write_text(json.dumps(data))
  assert not runner.is_done(spec, spec.run_dir(tmp_path))


def test_initialised_run_gets_the_t5_vocabulary(tmp_path):
  spec = fakes.spec(initial_checkpoint="/ckpt", vocabulary="/t5.model")
  executor = FakeExecutor()
  record = _run(spec, tmp_path, executor)
  assert [env["REC_T5X_VOCABULARY"] for _, env, _ in executor.calls] == ["/t5.model"] * 2
  assert record["commands"]["train"].startswith("REC_T5X_VOCABULARY=/t5.model /py -m rec_t5x.train")


def test_evaluation_of_the_wrong_step_is_an_error(tmp_path):
  with pytest.raises(RuntimeError, match="evaluated step 2, expected the final step 4"):
    _run(fakes.spec(), tmp_path, FakeExecutor(eval_step=2))


def test_load_and_find_records_skip_unfinished(tmp_path):
  done = fakes.write_run(tmp_path, fakes.spec(), 0.1)
  unfinished = fakes.spec(seed=1).run_dir(tmp_path)
  unfinished.mkdir(parents=True)
  assert [r["key"] for r in runner.load_records([done, unfinished])] == [fakes.spec().key()]
  assert len(runner.find_records(tmp_path)) == 1
  # With specs, a record written for other evaluation settings does not count.
  assert len(runner.load_records([done], [fakes.spec()])) == 1
  assert runner.load_records([done], [fakes.spec(decode_max_examples=8)]) == []


def test_execute_tees_output_and_raises_on_failure(tmp_path, capsys):
  log = tmp_path / "x.log"
  runner.execute(["python3", "-c", "print('hello')"], env={"PATH": "/usr/bin:/bin"}, log_path=log)
  assert "hello" in log.read_text() and "hello" in capsys.readouterr().out
  with pytest.raises(runner.CommandFailed, match=r"exit status 3: python3 -c .*x.log"):
    runner.execute(["python3", "-c", "import sys; sys.exit(3)"], env={"PATH": "/usr/bin:/bin"},
                   log_path=log, echo=False)


def test_execute_writes_each_line_to_the_log_while_the_command_runs(tmp_path):
  log, go = tmp_path / "run.log", tmp_path / "go"
  child = ("import os, sys, time\nprint('first' + ' line', flush=True)\n"  # not in the command
           f"deadline = time.time() + 60\nwhile not os.path.exists({str(go)!r}):\n"
           "  if time.time() > deadline: sys.exit(7)\n  time.sleep(0.05)\n")
  worker = threading.Thread(target=runner.execute, args=(["python3", "-c", child],),
                            kwargs={"env": {"PATH": "/usr/bin:/bin"}, "log_path": log,
                                    "echo": False})
  worker.start()
  try:
    deadline = time.time() + 60
    while "first line" not in (log.read_text() if log.exists() else ""):
      assert time.time() < deadline, "the log did not show the line while the command ran"
      time.sleep(0.05)
    assert worker.is_alive()  # seen before the command ended
  finally:
    go.touch()
    worker.join()


def test_validation_evaluation_has_its_own_record_and_reuses_the_training(tmp_path):
  test_spec = fakes.spec()
  _run(test_spec, tmp_path, FakeExecutor(recall10=0.2))
  executor = FakeExecutor(recall10=0.3)
  validation_spec = fakes.spec(eval_split="validation")
  record = _run(validation_spec, tmp_path, executor)
  assert executor.binaries() == ["rec_t5x.eval"]  # trained once, for both splits
  eval_argv = executor.calls[0]
  run_dir = test_spec.run_dir(tmp_path)
  assert run_dir == validation_spec.run_dir(tmp_path)
  assert record["eval_split"] == "validation"
  assert fakes.read(run_dir / "run_validation.json") == record
  assert fakes.read(run_dir / "run.json")["metrics"]["rec_t5x.ml100k.retrieval"]["recall@10"] == 0.2
  assert (run_dir / "validation_eval" / "eval_metrics.json").is_file()
  assert "--gin.EVAL_SPLIT='validation'" in record["commands"]["eval_argv"]
  assert eval_argv[2] == "eval.log"
  # Each split is done on its own; the loaders read the split's records.
  assert runner.is_done(test_spec, run_dir) and runner.is_done(validation_spec, run_dir)
  loaded = {**record, "run_dir": str(run_dir)}  # the loaders say where each record came from
  assert runner.find_records(tmp_path, "validation") == [loaded]
  assert [r["eval_split"] for r in runner.find_records(tmp_path)] == ["test"]
  assert runner.load_records([run_dir], [validation_spec]) == [loaded]


def test_split_current_sets_apart_records_of_an_earlier_training_revision(monkeypatch):
  old = fakes.record(fakes.spec(seed=0), 0.1)
  monkeypatch.setattr(runner.grid_lib, "TRAINING_REVISION", 2)
  new = fakes.record(fakes.spec(seed=1), 0.2)
  current, stale = runner.split_current([old, new])
  assert current == [new] and stale == [old]


def _killed_attempt(run_dir, seconds_logged):
  """An attempt opened by a driver that was then killed outright: never closed, its train.log
  last written `seconds_logged` after it started."""
  runner._start_attempt(run_dir, {"commit": "k" * 40, "dirty": False})
  started = fakes.read(run_dir / "timing.json")["train_attempts"][-1]["started_unix"]
  log = run_dir / "train.log"
  log.write_text("step 10/4 ...\n")
  os.utime(log, (started + seconds_logged, started + seconds_logged))


def test_a_killed_attempt_is_estimated_from_its_log_when_the_run_resumes(tmp_path):
  spec = fakes.spec()
  run_dir = spec.run_dir(tmp_path.resolve())
  run_dir.mkdir(parents=True)
  _killed_attempt(run_dir, 300.0)
  record = _run(spec, tmp_path, FakeExecutor())
  first, second = fakes.read(run_dir / "timing.json")["train_attempts"]
  assert first["seconds"] == pytest.approx(300.0, abs=0.01) and first["estimated"] is True
  assert first["completed"] is False and first["ended"]
  assert second["seconds"] == 10.0 and second["completed"] is True and "estimated" not in second
  assert record["train_seconds"] == pytest.approx(310.0, abs=0.01)
  assert record["train_seconds_estimated"] is True
  assert "| ~5m10s |" in report.group_section(aggregate.group_records([record])[0], None)


def test_a_run_killed_after_its_last_checkpoint_closes_the_attempt_before_evaluating(tmp_path):
  spec = fakes.spec()
  run_dir = spec.run_dir(tmp_path.resolve())
  (run_dir / str(spec.train_steps) / "train_state").mkdir(parents=True)
  _killed_attempt(run_dir, 42.0)
  executor = FakeExecutor()
  record = _run(spec, tmp_path, executor)
  assert executor.binaries() == ["rec_t5x.eval"]
  assert record["train_seconds"] == pytest.approx(42.0, abs=0.01)
  assert record["train_seconds_estimated"] is True


def test_closed_attempts_are_not_estimated(tmp_path):
  record = _run(fakes.spec(), tmp_path, FakeExecutor())
  assert record["train_seconds"] == 10.0 and record["train_seconds_estimated"] is False
  assert "| 10s |" in report.group_section(aggregate.group_records([record])[0], None)
