"""Tests for rec_t5x.summaries: counts, rates, progress line and TensorBoard event files."""
import numpy as np
import tensorflow as tf

from rec_t5x import summaries


class FakeClock:

  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


def test_batch_counts_packed_and_unpacked():
  packed = {
      "encoder_input_tokens": np.array([[5, 1, 7, 8, 1, 0], [9, 1, 0, 0, 0, 0]]),
      "decoder_target_tokens": np.array([[3, 1, 4, 1], [2, 1, 0, 0]]),
      "decoder_segment_ids": np.array([[1, 1, 2, 2], [1, 1, 0, 0]]),
  }
  assert summaries.batch_counts(packed) == (3, 5 + 2 + 4 + 2)
  unpacked = {
      "encoder_input_tokens": np.array([[5, 1, 0], [0, 0, 0]]),
      "decoder_target_tokens": np.array([[3, 1], [0, 0]]),  # Second row is padding.
  }
  assert summaries.batch_counts(unpacked) == (1, 4)


def test_throughput_rates_over_interval():
  clock = FakeClock()
  meter = summaries.Throughput(clock=clock)
  assert meter.rates(1) == {}  # First call only starts the interval (excludes compilation).
  meter.add(examples=8, tokens=100)
  meter.add(examples=8, tokens=60)
  clock.now += 4.0
  rates = meter.rates(5)
  assert rates == {"timing/steps_per_second": 1.0, "timing/examples_per_second": 4.0,
                   "timing/nonpadding_tokens_per_second": 40.0}


def test_progress_line_has_eta():
  line = summaries.progress_line(
      10, 70, {"loss": 2.5, "accuracy": 0.25, "learning_rate": 1e-3,
               "timing/steps_per_second": 2.0, "timing/examples_per_second": 16.0,
               "timing/nonpadding_tokens_per_second": 900.0})
  assert line.startswith("step 10/70 (14.3%) | loss 2.5000 acc 0.2500 lr 1.00e-03 | 2.00 steps/s")
  assert line.endswith("ETA 30s")


def _scalars(logdir):
  values = {}
  for path in tf.io.gfile.glob(str(logdir / "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for v in event.summary.value:
        values[(event.step, v.tag)] = float(tf.make_ndarray(v.tensor))
  return values


def test_run_logger_writes_tensorboard(tmp_path):
  clock, lines = FakeClock(), []
  logger = summaries.RunLogger(tmp_path, total_steps=20, write_summaries=True,
                               print_fn=lines.append, clock=clock)
  logger.log_train(1, {"loss": 3.0})
  logger.throughput.add(examples=10, tokens=50)
  clock.now += 2.0
  logger.log_train(5, {"loss": 2.0, "accuracy": 0.5})
  logger.log_eval(5, "training_eval", {"loss": 2.5})
  logger.close()
  train = _scalars(tmp_path / "train")
  assert train[(5, "loss")] == 2.0 and train[(5, "accuracy")] == 0.5
  assert train[(5, "timing/steps_per_second")] == 2.0
  assert train[(5, "timing/examples_per_second")] == 5.0
  assert _scalars(tmp_path / "training_eval")[(5, "loss")] == 2.5
  assert "ETA 8s" in lines[1] and lines[2].startswith("step 5 training_eval: loss 2.5000")


def test_non_chief_writes_no_files(tmp_path):
  logger = summaries.RunLogger(tmp_path, total_steps=2, write_summaries=False, print_fn=lambda s: None)
  logger.log_train(1, {"loss": 1.0})
  logger.close()
  assert not list(tmp_path.iterdir())
