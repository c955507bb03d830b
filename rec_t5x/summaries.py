"""Training observability: TensorBoard summaries through clu's metric writers, console progress.

`RunLogger.log_train(step, metrics)` writes loss, token accuracy, learning rate and throughput
(steps/s, examples/s, non-padding tokens/s) under `model_dir/train`, evaluation metrics under
`model_dir/<eval name>` (one TensorBoard run each, like T5X), and prints one progress line with
the ETA. Only process 0 writes summaries; every process may print.
"""
import dataclasses
import os
import pathlib
import time
from collections.abc import Callable, Mapping

from clu import metric_writers
import jax
import numpy as np

from rec_t5x import durations


def batch_counts(batch: Mapping[str, np.ndarray]) -> tuple[int, int]:
  """Examples and non-padding tokens in one (host-local) batch of EncDecFeatureConverter features.

  Args:
    batch: `decoder_target_tokens` `[batch, targets_len]` and `encoder_input_tokens`
      `[batch, inputs_len]`, plus `decoder_segment_ids` when packed.

  Returns:
    (examples, tokens): packed rows count their segments (segment ids are 1..k); a row without
    any target token is padding. Tokens are the non-zero encoder and decoder target ids.
  """
  targets = np.asarray(batch["decoder_target_tokens"])
  if "decoder_segment_ids" in batch:
    examples = int(np.asarray(batch["decoder_segment_ids"]).max(axis=1).sum())
  else:
    examples = int(np.count_nonzero(targets.any(axis=1)))
  tokens = int(np.count_nonzero(targets) + np.count_nonzero(np.asarray(batch["encoder_input_tokens"])))
  return examples, tokens


@dataclasses.dataclass
class Throughput:
  """Counts steps, examples and tokens since the last report (mutable accumulator).

  Attributes:
    clock: seconds, monotonic (injectable for tests).
  """
  clock: Callable[[], float] = time.monotonic
  _step: int | None = None
  _time: float = 0.0
  _examples: int = 0
  _tokens: int = 0

  def start(self, step: int) -> None:
    """Starts an interval at `step` (call after the first, compiling, step to exclude it)."""
    self._step, self._time, self._examples, self._tokens = step, self.clock(), 0, 0

  def add(self, examples: int, tokens: int) -> None:
    self._examples += examples
    self._tokens += tokens

  def rates(self, step: int) -> dict[str, float]:
    """Rates over the interval ending at `step`, then starts the next interval.

    Returns:
      `timing/steps_per_second`, `timing/examples_per_second`,
      `timing/nonpadding_tokens_per_second`; empty before `start` or for an empty interval.
    """
    if self._step is None:
      self.start(step)
      return {}
    elapsed, steps = self.clock() - self._time, step - self._step
    out = {}
    if elapsed > 0 and steps > 0:
      out = {"timing/steps_per_second": steps / elapsed,
             "timing/examples_per_second": self._examples / elapsed,
             "timing/nonpadding_tokens_per_second": self._tokens / elapsed}
    self.start(step)
    return out


def progress_line(step: int, total_steps: int, metrics: Mapping[str, float]) -> str:
  """One console line: step, loss / accuracy / lr, throughput and ETA.

  Args:
    step: steps completed.
    total_steps: steps the run ends at.
    metrics: scalars; `loss`, `accuracy`, `learning_rate` and the `timing/*` rates are shown.
  """
  head = f"step {step}/{total_steps} ({100.0 * step / max(total_steps, 1):.1f}%)"
  values = [f"{label} {metrics[key]:{fmt}}" for key, label, fmt in (
      ("loss", "loss", ".4f"), ("accuracy", "acc", ".4f"), ("learning_rate", "lr", ".2e"))
            if key in metrics]
  rates = []
  rate = metrics.get("timing/steps_per_second")
  if rate:
    rates = [f"{rate:.2f} steps/s", f"{metrics['timing/examples_per_second']:.1f} ex/s",
             f"{metrics['timing/nonpadding_tokens_per_second']:.0f} tok/s",
             f"ETA {durations.format_duration((total_steps - step) / rate)}"]
  return " | ".join(p for p in (head, " ".join(values), " ".join(rates)) if p)


class RunLogger:
  """TensorBoard writers (train + one per eval name) and the console progress line."""

  def __init__(self, model_dir: str | os.PathLike, total_steps: int, *,
               write_summaries: bool | None = None, print_fn: Callable[[str], None] = print,
               clock: Callable[[], float] = time.monotonic):
    """Creates the logger.

    Args:
      model_dir: run folder; summaries go to `model_dir/train` and `model_dir/<eval name>`.
      total_steps: last step of the run (for progress and ETA).
      write_summaries: write TensorBoard files (default: only on process 0).
      print_fn: where progress lines go.
      clock: monotonic seconds (tests inject a fake one).
    """
    self._dir = pathlib.Path(model_dir)
    self._total = total_steps
    self._enabled = jax.process_index() == 0 if write_summaries is None else write_summaries
    self._print = print_fn
    self._writers: dict[str, metric_writers.MetricWriter] = {}
    self.throughput = Throughput(clock=clock)

  def writer(self, name: str) -> metric_writers.MetricWriter | None:
    """The (cached) clu writer of TensorBoard run `name`; None on processes that do not write."""
    if not self._enabled:
      return None
    if name not in self._writers:
      self._writers[name] = metric_writers.AsyncWriter(
          metric_writers.SummaryWriter(os.fspath(self._dir / name)))
    return self._writers[name]

  def log_train(self, step: int, metrics: Mapping[str, float]) -> str:
    """Writes train scalars plus the throughput since the last call, prints and returns the line."""
    scalars = {k: float(v) for k, v in metrics.items()}
    scalars.update(self.throughput.rates(step))
    if (w := self.writer("train")) is not None:
      w.write_scalars(step, scalars)
    line = progress_line(step, self._total, scalars)
    self._print(line)
    return line

  def log_eval(self, step: int, name: str, metrics: Mapping[str, float]) -> str:
    """Writes eval scalars under run `name`, prints and returns a one-line summary."""
    scalars = {k: float(v) for k, v in metrics.items()}
    if (w := self.writer(name)) is not None:
      w.write_scalars(step, scalars)
    line = f"step {step} {name}: " + " ".join(f"{k} {v:.4f}" for k, v in sorted(scalars.items()))
    self._print(line)
    return line

  def log_text(self, step: int, name: str, texts: Mapping[str, str]) -> None:
    """Writes text summaries (e.g. the gin config) under run `name`."""
    if (w := self.writer(name)) is not None:
      w.write_texts(step, dict(texts))

  def flush(self) -> None:
    for w in self._writers.values():
      w.flush()

  def close(self) -> None:
    for w in self._writers.values():
      w.close()
    self._writers.clear()
