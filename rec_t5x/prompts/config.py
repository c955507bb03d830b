"""SampleConfig: how natural-language samples are drawn from a RecDataset.

One frozen dataclass holds every knob of the prompt tasks (history length, ranking candidates,
masking rates, per-user caps, seed), so a SeqIO task is fully described by
(dataset name, task name, SampleConfig). Split names are shared constants.
"""
import dataclasses
import math

TRAIN = "train"
VALIDATION = "validation"
TEST = "test"
SPLITS = (TRAIN, VALIDATION, TEST)

EVAL_TEMPLATE_SETS = ("held_out", "training")

# MLM windows are cut to this many items so that the corrupted history never needs more than the
# 100 T5 sentinels (`<extra_id_0>` .. `<extra_id_99>`); see rec_t5x/prompts/span_corruption.py.
MLM_MAX_ITEMS = 50


def _check_int(name: str, value, low: int, high: int) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
    raise ValueError(f"SampleConfig.{name}={value!r}: expected an integer in [{low}, {high}]")


def _check_float(name: str, value, low: float, high: float, low_open: bool, high_open: bool) -> None:
  ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
  if ok:
    ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
  if not ok:
    interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    raise ValueError(f"SampleConfig.{name}={value!r}: expected a number in {interval}")


@dataclasses.dataclass(frozen=True)
class SampleConfig:
  """How samples are drawn and rendered.

  Attributes:
    max_history: most recent items shown as the user's history (most recent last), in [1, 200].
    num_candidates: ranking candidates per sample = 1 positive + (num_candidates - 1) negatives the
      user never interacted with, in [2, 1000].
    mim_mask_rate: MIM masks round(mim_mask_rate * window length) items (at least 1), in (0, 1].
    mim_max_masks: at most this many masked items per MIM sample (and always at least one visible
      item), in [1, 50].
    mlm_noise_density: share of the corruptible words replaced by sentinel spans, in (0, 1).
    mlm_mean_span_length: mean length in words of a corrupted span, in [1, 20].
    bpr_positive_window: the BPR positive is drawn uniformly from the next `bpr_positive_window`
      training items after the history (1 = the very next item), in [1, 1000].
    max_train_samples_per_user: cap on training samples per user and task (a seeded subset of the
      user's training positions); None keeps every position (P5 / TIGER style).
    eval_templates: phrasings used for validation / test samples: "held_out" (never seen in
      training, like P5's unseen prompts) or "training".
    seed: seeds the choice of the capped training positions (`sample_keys`); rendering takes its
      own `seed` argument (SeqIO tasks pass this value unless the run supplies one).
  """
  max_history: int = 20
  num_candidates: int = 20
  mim_mask_rate: float = 0.2
  mim_max_masks: int = 3
  mlm_noise_density: float = 0.15
  mlm_mean_span_length: float = 3.0
  bpr_positive_window: int = 1
  max_train_samples_per_user: int | None = None
  eval_templates: str = "held_out"
  seed: int = 0

  def __post_init__(self):
    _check_int("max_history", self.max_history, 1, 200)
    _check_int("num_candidates", self.num_candidates, 2, 1000)
    _check_float("mim_mask_rate", self.mim_mask_rate, 0.0, 1.0, low_open=True, high_open=False)
    _check_int("mim_max_masks", self.mim_max_masks, 1, 50)
    _check_float("mlm_noise_density", self.mlm_noise_density, 0.0, 1.0, low_open=True, high_open=True)
    _check_float("mlm_mean_span_length", self.mlm_mean_span_length, 1.0, 20.0, low_open=False,
                 high_open=False)
    _check_int("bpr_positive_window", self.bpr_positive_window, 1, 1000)
    if self.max_train_samples_per_user is not None:
      _check_int("max_train_samples_per_user", self.max_train_samples_per_user, 1, 2**24)
    if self.eval_templates not in EVAL_TEMPLATE_SETS:
      raise ValueError(f"SampleConfig.eval_templates={self.eval_templates!r}: expected one of "
                       f"{EVAL_TEMPLATE_SETS}")
    _check_int("seed", self.seed, 0, 2**63 - 1)


def check_split(split: str, allowed: tuple[str, ...], task: str) -> None:
  """Raises ValueError when `split` is not one of the task's splits."""
  if split not in allowed:
    raise ValueError(f"prompt task {task!r} has no split {split!r}; expected one of {allowed}")
