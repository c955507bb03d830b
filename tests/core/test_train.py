"""Tests for the rec_t5x.train / eval binaries: gin files, the loop, exact resume after SIGKILL.

A tiny task (byte vocabulary, py_function source like the prompt tasks) is written as a module
into the test's tmp folder, so subprocesses can import it through MIXTURE_OR_TASK_MODULE.
"""
import inspect
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import gin
import jax
import msgpack
import numpy as np
import pytest
import seqio

from rec_t5x import checkpoints
from rec_t5x import eval as eval_lib
from rec_t5x import gin_utils
from rec_t5x import infer as infer_lib
from rec_t5x import input_pipeline
from rec_t5x import models
from rec_t5x import partitioning
from rec_t5x import summaries
from rec_t5x import train as train_lib
from rec_t5x import trainer as trainer_lib

REPO = pathlib.Path(__file__).resolve().parents[2]
TASK = "test_train.tiny"
TASK_MODULE = "tiny_train_tasks"
TASK_SOURCE = textwrap.dedent('''\
    """Tiny SeqIO task for tests/core/test_train.py (written by the test)."""
    import os
    import time

    import seqio
    import tensorflow as tf

    TASK = "test_train.tiny"
    _DELAY = float(os.environ.get("TINY_TASK_DELAY", "0"))


    def _render(split):
      def py(key):
        time.sleep(_DELAY)  # A slow source lets a test kill a run mid-way.
        k = int(key) + (0 if split == "train" else 500)
        return (f"history {k % 7} {k % 5} {k % 3} next".encode(), f"item {k % 11}".encode())
      return py


    def _source(split, shuffle_files, seed=None):
      del shuffle_files, seed
      def render(key):
        inputs, targets = tf.py_function(_render(split), [key], [tf.string, tf.string])
        return {"inputs": tf.ensure_shape(inputs, []), "targets": tf.ensure_shape(targets, [])}
      return tf.data.Dataset.range(64 if split == "train" else 12).map(render)


    if TASK not in seqio.TaskRegistry.names():
      _vocab = seqio.ByteVocabulary()
      seqio.TaskRegistry.add(
          TASK, seqio.FunctionDataSource(_source, splits=["train", "validation"]),
          preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos],
          output_features={"inputs": seqio.Feature(_vocab), "targets": seqio.Feature(_vocab)},
          shuffle_buffer_size=16)
    ''')

# The real run + model gin files, shrunk: 2 devices of data parallelism, a 1+1-layer network.
BINDINGS = [
    "NUM_EMBEDDINGS = 260",  # ByteVocabulary: 259 ids.
    f"MIXTURE_OR_TASK_NAME = '{TASK}'",
    f"MIXTURE_OR_TASK_MODULE = '{TASK_MODULE}'",
    "TASK_FEATURE_LENGTHS = {'inputs': 32, 'targets': 8}",
    "BATCH_SIZE = 4",
    "EVAL_STEPS = 2",
    "DROPOUT_RATE = 0.1",
    "network.T5Config.emb_dim = 16",
    "network.T5Config.num_heads = 2",
    "network.T5Config.head_dim = 8",
    "network.T5Config.mlp_dim = 32",
    "network.T5Config.num_encoder_layers = 1",
    "network.T5Config.num_decoder_layers = 1",
    "partitioning.MeshConfig.mesh_shape = (2, 1)",
    "train_script.train.log_period = 1",
    "partitioning.Partitioner.compiler_options = {'xla_backend_optimization_level': 0}",
]
GIN_FILES = ["gin/models/t5_1_1_tiny.gin", "gin/runs/finetune.gin"]


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("tasks")
  (path / f"{TASK_MODULE}.py").write_text(TASK_SOURCE)
  sys.path.insert(0, str(path))
  yield path
  sys.path.remove(str(path))
  if TASK in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(TASK)
  sys.modules.pop(TASK_MODULE, None)


def _set_main(patch):
  """`import __main__ as train_script` in gin files resolves to the binaries' functions."""
  main = sys.modules["__main__"]
  patch.setattr(main, "train", train_lib.train, raising=False)
  patch.setattr(main, "evaluate", eval_lib.evaluate, raising=False)
  patch.setattr(main, "infer", infer_lib.infer, raising=False)
  return main


def _define_devices():
  """%DEVICES: the first 2 of the 8 simulated devices (subprocesses simulate exactly 2)."""
  if "DEVICES" not in gin.config._CONSTANTS:  # pylint: disable=protected-access
    gin.constant("DEVICES", tuple(jax.devices()[:2]))


@pytest.fixture
def main_module(monkeypatch):
  main = _set_main(monkeypatch)
  _define_devices()
  gin.clear_config()
  yield main
  gin.clear_config()


def _parse(extra=()):
  gin_utils.parse_gin(GIN_FILES, BINDINGS + ["partitioning.Partitioner.devices = %DEVICES"]
                      + list(extra), [str(REPO)])


def test_run_file_requires_its_macros(task_dir, main_module):
  gin.configurable(train_lib.train)
  gin_utils.parse_gin(GIN_FILES, [], [str(REPO)])
  with pytest.raises(gin_utils.ConfigError) as e:
    gin_utils.check_required()
  for macro in ("MODEL_DIR", "MIXTURE_OR_TASK_NAME", "TASK_FEATURE_LENGTHS", "TRAIN_STEPS"):
    assert macro in str(e.value)


def _capturing_train(main_module, name):
  """Replaces the binary's `train` with a stub registered with gin as `name` (unique per test:
  gin refuses to re-register a name); returns (kwargs seen, configured stub)."""
  captured = {}

  def stub(**kwargs):
    captured.update(kwargs)

  stub.__signature__ = inspect.signature(train_lib.train)
  stub.__name__ = stub.__qualname__ = name
  main_module.train = stub
  return captured, gin.configurable(stub)


def test_run_file_builds_the_objects(task_dir, main_module, tmp_path):
  captured, configured = _capturing_train(main_module, "run_file_train")
  _parse([f"MODEL_DIR = '{tmp_path}'", "TRAIN_STEPS = 3"])
  gin_utils.check_required()
  configured()
  assert isinstance(captured["model"], models.EncoderDecoderModel)
  config = captured["model"].module.config
  assert (config.vocab_size, config.emb_dim, config.dropout_rate) == (260, 16, 0.1)
  assert isinstance(captured["partitioner"], partitioning.Partitioner)
  train_cfg, eval_cfg = captured["train_dataset_cfg"], captured["train_eval_dataset_cfg"]
  assert (train_cfg.split, train_cfg.pack, train_cfg.batch_size) == ("train", True, 4)
  assert (eval_cfg.split, eval_cfg.pack, eval_cfg.shuffle) == ("validation", False, False)
  assert train_cfg.task_feature_lengths == {"inputs": 32, "targets": 8}
  assert captured["total_steps"] == 3 and captured["model_dir"] == str(tmp_path)


def test_quickstart_experiment_decays_to_zero_at_its_last_step(main_module, tmp_path):
  captured, configured = _capturing_train(main_module, "quickstart_train")
  gin_utils.parse_gin(["gin/experiments/ml100k_atomic_tiny_rec_all.gin"],
                      [f"MODEL_DIR = '{tmp_path}'"], [str(REPO)])
  gin_utils.check_required()
  configured()
  assert captured["train_dataset_cfg"].mixture_or_task_name == "rec_t5x.ml100k_atomic.rec_all"
  assert captured["model"].module.config.vocab_size == 4096
  warmup = gin.query_parameter("optimizers.LearningRateConfig.warmup_steps")
  decay = gin.query_parameter("optimizers.LearningRateConfig.decay_steps")
  assert gin.query_parameter("optimizers.LearningRateConfig.schedule") == "linear_decay"
  assert warmup + decay == captured["total_steps"] == 100


def test_mixing_rates_bind_from_the_command_line(main_module, tmp_path):
  """The ablation's training file imports seqio_tasks, so --gin.seqio_tasks.mixing_rates.X works."""
  import seqio_tasks  # pylint: disable=g-import-not-at-top
  gin_utils.parse_gin(
      ["gin/models/t5_1_1_tiny.gin", "gin/experiments/ablation_train.gin"],
      ["seqio_tasks.mixing_rates.mim = 0.25",
       "ml1m_atomic/seqio_tasks.mixing_rates.bpr = 3.0"], [str(REPO)])
  assert seqio_tasks.rates.configured_rates("ml100k_atomic")["mim"] == 0.25
  assert seqio_tasks.rates.configured_rates("ml100k_atomic")["bpr"] == 1.0
  assert seqio_tasks.rates.configured_rates("ml1m_atomic")["bpr"] == 3.0
  # What the training log reports for the mixture (input_pipeline.mixture_shares).
  shares = input_pipeline.mixture_shares("rec_t5x.ml100k_atomic.rec_mim")
  assert shares == pytest.approx({f"rec_t5x.ml100k_atomic.{t}": r / 3.25 for t, r in (
      ("retrieval", 1.0), ("ranking", 1.0), ("rating", 1.0), ("mim", 0.25))})
  gin.clear_config()
  with pytest.raises(gin_utils.ConfigError, match="seqio_tasks.mixing_rates.mimm"):
    gin_utils.parse_gin(["gin/models/t5_1_1_tiny.gin", "gin/experiments/ablation_train.gin"],
                        ["seqio_tasks.mixing_rates.mimm = 0.25"], [str(REPO)])


def test_binding_a_module_no_file_imports_is_a_config_error(main_module, tmp_path):
  with pytest.raises(gin_utils.ConfigError, match="'json' was not provided by an import"):
    gin_utils.parse_gin(["gin/models/t5_1_1_tiny.gin"], ["json.dumps.indent = 2"], [str(REPO)])


def _run_in_process(model_dir, steps, extra=()):
  configured = gin.configurable(train_lib.train)
  _parse([f"MODEL_DIR = '{model_dir}'", f"TRAIN_STEPS = {steps}", "CHECKPOINT_PERIOD = 2",
          "EVAL_PERIOD = 3"] + list(extra))
  lines = []
  state = configured(config_text=gin.config_str(), log=lines.append)
  return state, lines


REFERENCE_STEPS = 8


@pytest.fixture(scope="module")
def reference_run(task_dir, tmp_path_factory):
  """An uninterrupted in-process run of REFERENCE_STEPS steps: (model_dir, final state, lines)."""
  model_dir = tmp_path_factory.mktemp("reference")
  with pytest.MonkeyPatch.context() as patch:
    _set_main(patch)
    _define_devices()
    gin.clear_config()
    try:
      state, lines = _run_in_process(model_dir, REFERENCE_STEPS)
    finally:
      gin.clear_config()
  return model_dir, state, lines


def _final_params(model_dir, step, state_like):
  return checkpoints.restore_initial(str(model_dir / str(step)), state_like.params)


def _tree_equal(a, b):
  flat_a, flat_b = jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b))
  assert len(flat_a) == len(flat_b)
  for x, y in zip(flat_a, flat_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _subprocess_env(task_dir):
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join([str(task_dir), env.get("PYTHONPATH", "")])
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
  # The killed and the resumed run compile the same programs: share them.
  env["JAX_COMPILATION_CACHE_DIR"] = str(task_dir / "jax_cache")
  env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  return env


def _train_command(model_dir, steps):
  """The subprocess runs skip evaluation (it does not change the parameters) to save time."""
  args = [sys.executable, "-m", "rec_t5x.train", f"--gin_search_paths={REPO}"]
  args += [f"--gin_file={f}" for f in GIN_FILES]
  args += [f"--gin_bindings={b}" for b in BINDINGS]
  args += [f"--gin.MODEL_DIR='{model_dir}'", f"--gin.TRAIN_STEPS={steps}",
           "--gin.CHECKPOINT_PERIOD=2", "--gin.train_script.train.train_eval_dataset_cfg=None"]
  return args


def test_reference_run_logs_evaluates_and_writes_config(reference_run):
  model_dir, state, lines = reference_run
  steps = REFERENCE_STEPS
  assert int(state.step) == steps
  assert sorted(int(p.name) for p in model_dir.iterdir() if p.name.isdigit()) == [2, 4, 6, 8]
  assert sum(l.startswith("step ") and f"/{steps} (" in l for l in lines) == steps
  assert any("ETA" in l for l in lines)
  evals = [l for l in lines if f"training_eval/{TASK}" in l]
  assert [l.split()[1] for l in evals] == ["3", "6", "8"]
  assert "TRAIN_STEPS = 8" in (model_dir / "config.gin").read_text()
  assert list((model_dir / "train").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_same_parameters(task_dir, reference_run, tmp_path):
  ref_dir, state, _ = reference_run
  steps = REFERENCE_STEPS
  # The same run in a subprocess with a slow source, SIGKILLed once checkpoint 2 is complete.
  run_dir, env = tmp_path / "killed", _subprocess_env(task_dir)
  env["TINY_TASK_DELAY"] = "0.15"
  proc = subprocess.Popen(_train_command(run_dir, steps), env=env, cwd=tmp_path,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  started = time.time()
  try:
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not (run_dir / "2").is_dir():
      time.sleep(0.05)
  finally:
    proc.send_signal(signal.SIGKILL)
    out = proc.communicate()[0]
  print(f"killed after {time.time() - started:.1f}s")
  done = sorted(int(p.name) for p in run_dir.iterdir() if p.name.isdigit())
  assert done and max(done) < steps, (done, out)

  started = time.time()
  resumed = subprocess.run(_train_command(run_dir, steps), env=_subprocess_env(task_dir),
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
  print(f"resumed run took {time.time() - started:.1f}s")
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"resumed from {run_dir}/" in resumed.stdout
  _tree_equal(_final_params(ref_dir, steps, state), _final_params(run_dir, steps, state))


def test_misspelt_macro_is_one_line_error(task_dir, tmp_path):
  # As the rec_t5x_train console script runs it: `__main__` is not rec_t5x.train.
  args = _train_command(tmp_path / "run", 2) + ["--gin.TRAIN_STEP=3"]
  args[1:3] = ["-c", "from rec_t5x.train import console_main; console_main()"]
  result = subprocess.run(args, env=_subprocess_env(task_dir), cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 2
  assert "Traceback" not in result.stderr
  assert "did you mean ['TRAIN_STEPS'" in result.stderr


def test_eval_reports_teacher_forced_metrics(reference_run, main_module, tmp_path):
  run_dir = reference_run[0]
  configured = gin.configurable(eval_lib.evaluate)
  gin_utils.parse_gin(["gin/models/t5_1_1_tiny.gin", "gin/runs/eval.gin"],
                      [b for b in BINDINGS if "train_script" not in b]
                      + [f"CHECKPOINT_PATH = '{run_dir}'", f"EVAL_OUTPUT_DIR = '{tmp_path}'",
                         "EVAL_STEPS = None", "partitioning.Partitioner.devices = %DEVICES"],
                      [str(REPO)])
  gin_utils.check_required()
  results = configured()
  saved = json.loads((tmp_path / "eval_metrics.json").read_text())
  assert saved["step"] == REFERENCE_STEPS and saved["tasks"] == results
  metrics = results[TASK]
  assert 0.0 <= metrics["accuracy"] <= 1.0 and np.isfinite(metrics["loss"])
  # All 12 validation examples ("item N" + EOS: 7 or 8 byte tokens) in 3 batches of 4.
  assert metrics["num_batches"] == 3 and 12 * 7 <= metrics["num_target_tokens"] <= 12 * 8



def test_infer_writes_jsonl_predictions(reference_run, main_module, tmp_path):
  run_dir = reference_run[0]
  configured = gin.configurable(infer_lib.infer)
  gin_utils.parse_gin(["gin/models/t5_1_1_tiny.gin", "gin/runs/infer.gin"],
                      [b for b in BINDINGS if "train_script" not in b and "EVAL" not in b]
                      + [f"CHECKPOINT_PATH = '{run_dir / '4'}'", f"INFER_OUTPUT_DIR = '{tmp_path}'",
                         "INFER_SPLIT = 'validation'", "MAX_EXAMPLES = 10",
                         "partitioning.Partitioner.devices = %DEVICES"], [str(REPO)])
  gin_utils.check_required()
  written = configured(log=lambda s: None)
  assert written == {TASK: tmp_path / f"{TASK}.jsonl"}
  records = [json.loads(l) for l in written[TASK].read_text().splitlines()]
  # 10 of the 12 validation examples, in order, with the task's own text.
  assert len(records) == 10
  assert records[0]["inputs"] == "history 3 0 2 next" and records[0]["targets"] == "item 5"
  assert all(isinstance(r["prediction"], str) for r in records)

class _FakeIterator:
  """Stands in for BatchIterator: numbered batches, position = number of batches read."""

  def __init__(self):
    self.position = 0

  def next_local(self):
    self.position += 1
    return {"encoder_input_tokens": np.ones((2, 4), np.int32),
            "decoder_target_tokens": np.ones((2, 3), np.int32)}

  def to_global(self, local):
    return local

  def get_state(self):
    return str(self.position).encode()


class _NanAtStep:
  """Stands in for Trainer: adds 1 to the parameters; the update of step `bad` is non-finite."""

  def __init__(self, bad):
    self.bad = bad

  def train_step(self, state, batch):
    del batch
    step = int(state.step) + 1
    nonfinite = step == self.bad
    metrics = {"loss": np.float32("nan" if nonfinite else 1.0), "grad_norm": np.float32(1.0),
               "nonfinite": np.bool_(nonfinite), "num_correct_tokens": 1.0,
               "num_target_tokens": 2.0, "learning_rate": 0.1}
    if nonfinite:
      return state, metrics
    return state.replace(step=state.step + 1, params=state.params + 1), metrics


def test_nonfinite_loss_stops_naming_the_step_and_keeps_last_good_checkpoint(tmp_path):
  state = trainer_lib.TrainState(step=jax.numpy.zeros((), jax.numpy.int32),
                                 params=jax.numpy.zeros(3), opt_state=())
  logger = summaries.RunLogger(tmp_path, 10, write_summaries=False, print_fn=lambda s: None)
  loop = train_lib.LoopConfig(total_steps=10, checkpoint_period=2, log_period=1)
  with checkpoints.CheckpointManager(tmp_path / "run", save_every=2) as manager:
    with pytest.raises(trainer_lib.NonFiniteLossError, match="at step 5"):
      train_lib.run_loop(_NanAtStep(5), state, _FakeIterator(), manager, logger, loop, None, 1,
                         lambda s: None)
    manager.wait_until_finished()
    assert manager.all_steps() == [2, 4]
    restored, input_state = manager.restore(state)
  assert int(restored.step) == 4 and float(restored.params[0]) == 4.0
  assert train_lib.own_input_state(input_state) == b"4"


class _SignalledAgainWhileWriting(checkpoints.CheckpointManager):
  """A manager whose scheduler repeats SIGTERM while the final checkpoint is being written."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.repeated = 0

  def wait_until_finished(self):
    if self.repeated == 0 and signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
      # Only while rec_t5x's handler is installed; under the default action this would kill pytest.
      self.repeated += 1
      os.kill(os.getpid(), signal.SIGTERM)
    super().wait_until_finished()


def test_sigterm_waits_for_the_checkpoint_with_the_handler_still_installed(tmp_path):
  state = trainer_lib.TrainState(step=jax.numpy.zeros((), jax.numpy.int32),
                                 params=jax.numpy.zeros(3), opt_state=())
  logger = summaries.RunLogger(tmp_path, 10, write_summaries=False, print_fn=lambda s: None)
  loop = train_lib.LoopConfig(total_steps=10, checkpoint_period=100, log_period=1)
  messages = []

  class _TermAtStep3(_NanAtStep):
    def train_step(self, state, batch):
      if int(state.step) == 2:
        os.kill(os.getpid(), signal.SIGTERM)  # the scheduler preempts us during step 3
      return super().train_step(state, batch)

  with _SignalledAgainWhileWriting(tmp_path / "run", save_every=100) as manager:
    final = train_lib.run_loop(_TermAtStep3(bad=-1), state, _FakeIterator(), manager, logger, loop,
                               None, 1, messages.append)
    # The repeated signal arrived during the write, was caught, and the write completed.
    assert manager.repeated == 1 and manager.all_steps() == [3]
  assert int(final.step) == 3 and messages[-1].startswith("SIGTERM: saved step 3")
  assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["3"]


@pytest.mark.parametrize("field,value", [("total_steps", 0), ("eval_period", -1),
                                         ("eval_steps", 0), ("log_period", 1.5)])
def test_loop_config_names_bad_field(field, value):
  kwargs = {"total_steps": 10, field: value}
  with pytest.raises(ValueError, match=f"train.{field}={value}"):
    train_lib.LoopConfig(**kwargs)


def test_metrics_window_averages_loss_and_pools_accuracy():
  window = train_lib.MetricsWindow()
  window.add({"loss": 2.0, "num_correct_tokens": 1.0, "num_target_tokens": 4.0,
              "learning_rate": 0.1})
  window.add({"loss": 4.0, "num_correct_tokens": 5.0, "num_target_tokens": 8.0,
              "learning_rate": 0.2})
  assert window.pop() == {"loss": 3.0, "accuracy": 0.5, "learning_rate": 0.2,
                          "num_target_tokens": 12.0}
  assert window.steps == 0


def test_input_state_round_trip_and_process_count_check():
  assert train_lib.own_input_state(train_lib.gather_input_states(b"abc")) == b"abc"
  with pytest.raises(ValueError, match="written by 2 processes"):
    train_lib.own_input_state(msgpack.packb([b"a", b"b"]))


def test_vocabulary_larger_than_embedding_is_refused(task_dir):
  import tiny_train_tasks  # pylint: disable=g-import-not-at-top,unused-import
  from rec_t5x import input_pipeline, network  # pylint: disable=g-import-not-at-top
  config = network.T5Config(vocab_size=128, emb_dim=8, num_heads=1, head_dim=8, mlp_dim=8,
                            num_encoder_layers=1, num_decoder_layers=1)
  model = models.EncoderDecoderModel(network.Transformer(config))
  dataset = input_pipeline.DatasetConfig(TASK, {"inputs": 8, "targets": 8}, "train", 2)
  with pytest.raises(ValueError, match="259 ids .* vocab_size=128 .* NUM_EMBEDDINGS >= 259"):
    train_lib.check_vocabulary(model, dataset)
