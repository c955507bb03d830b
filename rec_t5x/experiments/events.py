"""Scalar curves read back from TensorBoard event files (the training loss of a run).

`rec_t5x.summaries.RunLogger` writes the train scalars through clu to `<model_dir>/train/
events.out.tfevents.*` (TF2 summaries: each value a scalar tensor; older writers use
`simple_value`, also read). The files are read with TensorFlow's `summary_iterator`, imported only
when there is a file to read (it costs seconds). A resumed run appends a new event file and may
log a step again after restoring an earlier checkpoint; the value written last wins.
"""
from __future__ import annotations

import os
import pathlib


def _value(value, tf) -> float | None:
  """The float of one Summary.Value (tensor or simple_value), None when not a scalar."""
  if value.HasField("tensor"):
    array = tf.make_ndarray(value.tensor)
    return float(array) if array.size == 1 else None
  if value.HasField("simple_value"):
    return float(value.simple_value)
  return None


def event_files(log_dir: str | os.PathLike) -> list[pathlib.Path]:
  """The event files of one TensorBoard run, oldest first (their names start with a timestamp)."""
  log_dir = pathlib.Path(log_dir)
  return sorted(log_dir.glob("events.out.tfevents.*")) if log_dir.is_dir() else []


def read_scalars(log_dir: str | os.PathLike, tag: str) -> tuple[list[int], list[float]]:
  """Every logged (step, value) of `tag` in the event files of `log_dir`, by step.

  Args:
    log_dir: one TensorBoard run, e.g. `<model_dir>/train`.
    tag: the scalar's name, e.g. "loss".

  Returns:
    (steps, values), ascending steps, one value per step; empty lists when the folder or tag is
    missing.
  """
  files = event_files(log_dir)
  if not files:
    return [], []
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (slow; only when needed)
  by_step: dict[int, float] = {}
  for path in files:
    for event in tf.compat.v1.train.summary_iterator(os.fspath(path)):
      for value in event.summary.value:
        if value.tag == tag and (number := _value(value, tf)) is not None:
          by_step[int(event.step)] = number
  steps = sorted(by_step)
  return steps, [by_step[s] for s in steps]
