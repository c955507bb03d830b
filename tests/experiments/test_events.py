"""Tests for rec_t5x.experiments.events: training-loss curves read back from event files."""
import numpy as np
import pytest
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.summary.writer import event_file_writer
from tensorboard.util import tensor_util

from rec_t5x.experiments import events


def _write(log_dir, points, *, simple=False, suffix=""):
  """One event file with `points` [(step, {tag: value})], as tensors (clu) or simple_value."""
  writer = event_file_writer.EventFileWriter(str(log_dir), filename_suffix=suffix)
  for step, scalars in points:
    values = [summary_pb2.Summary.Value(tag=tag, simple_value=v) if simple else
              summary_pb2.Summary.Value(tag=tag,
                                        tensor=tensor_util.make_tensor_proto(np.float32(v)))
              for tag, v in scalars.items()]
    writer.add_event(event_pb2.Event(step=step, summary=summary_pb2.Summary(value=values)))
  writer.close()


def test_missing_folder_or_tag_is_empty(tmp_path):
  assert events.read_scalars(tmp_path / "train", "loss") == ([], [])


@pytest.mark.slow  # Reading imports TensorFlow (~10 s on the shared 2-core machine).
def test_reads_tensor_and_simple_values_later_files_win(tmp_path):
  _write(tmp_path, [(10, {"loss": 4.0, "accuracy": 0.1}), (20, {"loss": 3.0})], suffix=".a")
  # A resumed run: a later file logs step 20 again and continues.
  _write(tmp_path, [(20, {"loss": 2.5}), (30, {"loss": 2.0})], simple=True, suffix=".b")
  assert len(events.event_files(tmp_path)) == 2
  steps, losses = events.read_scalars(tmp_path, "loss")
  assert steps == [10, 20, 30]
  assert losses == pytest.approx([4.0, 2.5, 2.0])
  assert events.read_scalars(tmp_path, "accuracy") == ([10], [pytest.approx(0.1)])
  assert events.read_scalars(tmp_path, "nope") == ([], [])
