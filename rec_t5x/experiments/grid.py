"""Run specifications of the ablation: one run's identity, and grids of runs (with presets).

A `RunSpec` is everything that decides what a run trains (dataset, model, mixture, seed, steps,
batch size, feature lengths, initial checkpoint and its vocabulary, extra gin bindings) plus how
many test users its evaluation decodes. The training part is its *identity*: it names the run's
directory, so two specs with the same identity share one checkpoint. The evaluation setting is not
part of the identity: changing it re-evaluates the trained checkpoint without retraining.

A `Grid` is the cross product datasets x models x seeds x mixtures with one shared budget (every
run of a grid trains the same number of steps at the same batch size). `PRESETS` holds the named
grids; the budgets are set in this module only.

The budgets are sized for the README's machine (2 CPU cores, no accelerator), where the tiny model
trains about 0.75 packed steps/s at 8 x 1024 tokens. `headline` (ML-100K, atomic item IDs, 5
mixtures x 3 seeds, 1000 steps, every test user) costs about 23 min of training and 4 min of
evaluation per run, so its 15 runs take about 7 hours. `ml1m` is the ML-1M comparison with
SASRec (rec_only and rec_all, one seed, 2500 steps: about an hour of training and 15 min of
evaluation per run). `full` (60 runs, 2000 steps x 32, tiny and small) is meant for an
accelerator. Runs from scratch use the bindings of `linear_decay_bindings` (warm-up, then linear
decay to 0 at the last step); `RunSpec` refuses a decay that does not end at `train_steps`, and
the driver moves it when --train_steps changes the budget (`rescale_linear_decay`).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
import dataclasses
import hashlib
import json
import os
import pathlib
import re
from typing import Any

from rec_t5x import item_ids

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL_GIN_DIR = REPO_ROOT / "gin" / "models"
# The ablation's mixtures in report order: the baseline first, then each auxiliary task, then all.
MIXTURES = ("rec_only", "rec_mim", "rec_bpr", "rec_mlm", "rec_all")
BASELINE_MIXTURE = "rec_only"
# Where a run is evaluated: TEST for reported results, VALIDATION for choosing a configuration
# (docs/tuning.md), so that no setting is picked by looking at test numbers.
EVAL_SPLITS = ("test", "validation")
# Macros the runner sets itself; an extra binding of one of these would break the run's identity.
CONTROLLED_MACROS = frozenset({
    "MODEL_DIR", "MIXTURE_OR_TASK_NAME", "TASK_FEATURE_LENGTHS", "TRAIN_STEPS", "BATCH_SIZE",
    "RANDOM_SEED", "NUM_EMBEDDINGS", "INITIAL_CHECKPOINT_PATH", "CHECKPOINT_PERIOD"})
# What an unchanged spec trains can change with the code (sample order, initialisation, loss).
# Bump this when a change does, so that the runs of the old code get other keys: the driver then
# trains them again instead of skipping them, and the report leaves the old records out
# (`RunSpec.current`). Revision 1 (the stateless per-epoch sample order of commit 84e4e33) is not
# written into the identity, so the keys made before this field existed stay valid.
TRAINING_REVISION = 1
_NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")
_BINDING_RE = re.compile(r"^([A-Za-z_][\w./]*)\s*=\s*(\S.*)$", re.DOTALL)


def model_gin_file(model: str) -> pathlib.Path:
  """`gin/models/t5_1_1_<model>.gin`."""
  return MODEL_GIN_DIR / f"t5_1_1_{model}.gin"


def available_models() -> list[str]:
  """Model names with a gin file in gin/models (tiny, small, base, ...)."""
  return sorted(p.stem.removeprefix("t5_1_1_") for p in MODEL_GIN_DIR.glob("t5_1_1_*.gin"))


def _check_int(owner: str, name: str, value: Any, minimum: int) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ValueError(f"{owner}.{name}={value!r}: expected an integer >= {minimum}")


def _check_name(owner: str, name: str, value: Any) -> None:
  if not isinstance(value, str) or not _NAME_RE.match(value):
    raise ValueError(f"{owner}.{name}={value!r}: expected letters, digits and underscores")


_SCHEDULE = "optimizers.LearningRateConfig"


def linear_decay_bindings(learning_rate: float, warmup_steps: int,
                          train_steps: int) -> tuple[str, ...]:
  """Extra bindings: linear warm-up over `warmup_steps`, then linear decay to 0 at `train_steps`."""
  if not 0 <= warmup_steps < train_steps:
    raise ValueError(f"linear decay: warmup_steps={warmup_steps} must be in [0, train_steps="
                     f"{train_steps})")
  return (f"LEARNING_RATE={learning_rate}", f"{_SCHEDULE}.schedule='linear_decay'",
          f"{_SCHEDULE}.warmup_steps={warmup_steps}",
          f"{_SCHEDULE}.decay_steps={train_steps - warmup_steps}")


def _binding_values(bindings: Sequence[str]) -> dict[str, str]:
  return dict(parse_binding(b) for b in bindings)


def rescale_linear_decay(bindings: Sequence[str], train_steps: int) -> tuple[str, ...]:
  """`bindings` with a linear decay's decay_steps moved to end at `train_steps` (others kept)."""
  values = _binding_values(bindings)
  if values.get(f"{_SCHEDULE}.schedule") != "'linear_decay'":
    return tuple(bindings)
  warmup = int(values.get(f"{_SCHEDULE}.warmup_steps", "0"))
  if not 0 <= warmup < train_steps:
    raise ValueError(f"linear decay: warmup_steps={warmup} must be below train_steps={train_steps}")
  return tuple(f"{_SCHEDULE}.decay_steps={train_steps - warmup}"
               if parse_binding(b)[0] == f"{_SCHEDULE}.decay_steps" else b for b in bindings)


def merge_bindings(base: Sequence[str], extra: Sequence[str]) -> tuple[str, ...]:
  """`base` with each of `extra` added: in place of the base binding of the same name, else after.

  So `--gin LEARNING_RATE=0.02` on a preset changes its rate and keeps its schedule, and
  `--gin seqio_tasks.mixing_rates.mim=2` adds a binding to the preset's.
  """
  merged = list(base)
  for binding in extra:
    name = parse_binding(binding)[0]
    same = [i for i, b in enumerate(merged) if parse_binding(b)[0] == name]
    if same:
      merged[same[0]] = binding
      for i in reversed(same[1:]):
        del merged[i]
    else:
      merged.append(binding)
  return tuple(merged)


def check_schedule(bindings: Sequence[str], train_steps: int, owner: str) -> None:
  """A linear decay must end exactly at the last step: warmup_steps + decay_steps == train_steps.

  Otherwise the learning rate would stop at a positive value, or reach 0 before the run ends;
  a stale decay after changing the number of steps is the usual cause.
  """
  values = _binding_values(bindings)
  if values.get(f"{_SCHEDULE}.schedule") != "'linear_decay'":
    return
  warmup = int(values.get(f"{_SCHEDULE}.warmup_steps", "0"))
  decay = int(values.get(f"{_SCHEDULE}.decay_steps", "0"))
  if warmup + decay != train_steps:
    raise ValueError(f"{owner}: linear decay ends at step {warmup + decay} (warmup_steps={warmup} "
                     f"+ decay_steps={decay}) but the run has train_steps={train_steps}; set "
                     f"{_SCHEDULE}.decay_steps={train_steps - warmup}")


def parse_binding(binding: str) -> tuple[str, str]:
  """Splits an extra gin binding `NAME=VALUE` (or `scope/fn.param = VALUE`) into (name, value).

  Raises:
    ValueError: for a malformed binding or one of the macros the runner sets (CONTROLLED_MACROS).
  """
  match = _BINDING_RE.match(binding.strip()) if isinstance(binding, str) else None
  if match is None:
    raise ValueError(f"gin binding {binding!r}: expected NAME=VALUE, e.g. DROPOUT_RATE=0.1")
  name, value = match.group(1), match.group(2).strip()
  if name in CONTROLLED_MACROS:
    raise ValueError(f"gin binding {binding!r}: {name} is set by the experiment runner from the "
                     f"grid (use the driver's own flag instead)")
  return name, value


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One training + test-evaluation run.

  Attributes:
    dataset: catalogue dataset name (`rec_t5x.data.catalog.names()`), e.g. "ml100k".
    model: model file `gin/models/t5_1_1_<model>.gin`, e.g. "tiny".
    mixture: mixture `rec_t5x.<dataset>.<mixture>` trained on, e.g. "rec_mim".
    seed: RANDOM_SEED (parameter initialisation, dropout and data order).
    train_steps: steps trained (TRAIN_STEPS).
    batch_size: global batch (BATCH_SIZE), packed rows of `inputs_length` tokens.
    inputs_length: TASK_FEATURE_LENGTHS["inputs"] (training and evaluation).
    targets_length: TASK_FEATURE_LENGTHS["targets"].
    initial_checkpoint: INITIAL_CHECKPOINT_PATH (a FLAN-T5 / T5X / HF checkpoint), None: from
      scratch with the dataset's own vocabulary.
    vocabulary: the T5 SentencePiece model used with `initial_checkpoint` (required with it and
      only with it); the runs then use 32128 embedding rows.
    gin_bindings: extra training bindings `NAME=VALUE` (part of the identity).
    decode_max_examples: evaluation examples decoded per task (a seeded subset); None: every
      evaluation user. Not part of the identity.
    eval_split: "test" (reported results) or "validation" (tuning). Not part of the identity: one
      trained run can be evaluated on both, each with its own record.
  """
  dataset: str
  model: str
  mixture: str
  seed: int
  train_steps: int
  batch_size: int
  inputs_length: int = 1024
  targets_length: int = 64
  initial_checkpoint: str | None = None
  vocabulary: str | None = None
  gin_bindings: tuple[str, ...] = ()
  decode_max_examples: int | None = None
  eval_split: str = "test"

  def __post_init__(self):
    for name in ("dataset", "model", "mixture"):
      _check_name("RunSpec", name, getattr(self, name))
    if not model_gin_file(self.model).is_file():
      raise ValueError(f"RunSpec.model={self.model!r}: no {model_gin_file(self.model)}; "
                       f"available: {available_models()}")
    _check_int("RunSpec", "seed", self.seed, 0)
    for name in ("train_steps", "batch_size", "inputs_length", "targets_length"):
      _check_int("RunSpec", name, getattr(self, name), 1)
    if self.decode_max_examples is not None:
      _check_int("RunSpec", "decode_max_examples", self.decode_max_examples, 1)
    if self.eval_split not in EVAL_SPLITS:
      raise ValueError(f"RunSpec.eval_split={self.eval_split!r}: expected one of {EVAL_SPLITS}")
    if self.initial_checkpoint is not None and not self.vocabulary:
      raise ValueError(
          f"RunSpec.initial_checkpoint={self.initial_checkpoint!r} needs the T5 vocabulary its "
          "embeddings were trained with: set RunSpec.vocabulary (--t5_vocabulary or "
          "$REC_T5X_VOCABULARY) to the sentencepiece.model of cc_all.32000.100extra")
    if (self.initial_checkpoint is not None
        and item_ids.split_variant(self.dataset)[1] != item_ids.DIGITS):
      base = item_ids.split_variant(self.dataset)[0]
      raise ValueError(f"RunSpec.dataset={self.dataset!r} with initial_checkpoint: atomic item IDs "
                       "need one vocabulary piece per item, which the T5 vocabulary of a FLAN-T5 "
                       f"checkpoint does not have; fine-tune on the digit-ID dataset {base!r} "
                       f"(--datasets {base})")
    if self.initial_checkpoint is None and self.vocabulary is not None:
      raise ValueError(f"RunSpec.vocabulary={self.vocabulary!r} without initial_checkpoint: a "
                       "model trained from scratch uses the dataset's own vocabulary")
    if not isinstance(self.gin_bindings, tuple):
      raise ValueError(f"RunSpec.gin_bindings must be a tuple of 'NAME=VALUE'; got "
                       f"{self.gin_bindings!r}")
    for binding in self.gin_bindings:
      parse_binding(binding)
    check_schedule(self.gin_bindings, self.train_steps, "RunSpec")

  def identity(self) -> dict[str, Any]:
    """The fields that decide what is trained (all but `decode_max_examples` and `eval_split`),
    plus the code's `TRAINING_REVISION` from revision 2 on."""
    out = dataclasses.asdict(self)
    del out["decode_max_examples"], out["eval_split"]
    out["gin_bindings"] = list(self.gin_bindings)
    if TRAINING_REVISION != 1:
      out["training_revision"] = TRAINING_REVISION
    return out

  def key(self) -> str:
    """10 hex digits of SHA-256 over the identity (stable across processes and machines)."""
    text = json.dumps(self.identity(), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]

  def current(self, key: str | None) -> bool:
    """Whether a record's stored `key` is this spec's key under the present code (a record with
    another key was trained under an earlier `TRAINING_REVISION`)."""
    return key == self.key()

  def run_dir(self, runs_dir: str | os.PathLike) -> pathlib.Path:
    """`<runs_dir>/<dataset>/<model>/<mixture>/seed<S>-steps<N>-bs<B>-<key>`."""
    leaf = f"seed{self.seed}-steps{self.train_steps}-bs{self.batch_size}-{self.key()}"
    return pathlib.Path(runs_dir) / self.dataset / self.model / self.mixture / leaf

  def to_dict(self) -> dict[str, Any]:
    """JSON form (run.json's "spec"); `from_dict` inverts it."""
    out = dataclasses.asdict(self)
    out["gin_bindings"] = list(self.gin_bindings)
    return out

  @classmethod
  def from_dict(cls, data: dict[str, Any]) -> RunSpec:
    """The spec of a run.json "spec" entry.

    Raises:
      ValueError: naming the unknown or missing fields.
    """
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
      raise ValueError(f"run spec has unknown fields {unknown}; expected some of {sorted(fields)}")
    values = dict(data)
    values["gin_bindings"] = tuple(values.get("gin_bindings", ()))
    try:
      return cls(**values)
    except TypeError as e:
      raise ValueError(f"run spec {data!r}: {e}") from e


def _as_tuple(owner: str, name: str, values: Sequence[Any]) -> tuple[Any, ...]:
  values = tuple(values)
  if not values:
    raise ValueError(f"{owner}.{name} is empty: expected at least one value")
  duplicates = sorted({str(v) for v in values if values.count(v) > 1})
  if duplicates:
    raise ValueError(f"{owner}.{name} lists {duplicates} more than once")
  return values


@dataclasses.dataclass(frozen=True)
class Grid:
  """datasets x models x seeds x mixtures, all with one training budget.

  Attributes mirror `RunSpec`; `datasets`, `models`, `mixtures` and `seeds` are tuples.
  """
  name: str
  datasets: tuple[str, ...]
  models: tuple[str, ...]
  mixtures: tuple[str, ...]
  seeds: tuple[int, ...]
  train_steps: int
  batch_size: int
  decode_max_examples: int | None
  inputs_length: int = 1024
  targets_length: int = 64
  initial_checkpoint: str | None = None
  vocabulary: str | None = None
  gin_bindings: tuple[str, ...] = ()
  eval_split: str = "test"

  def __post_init__(self):
    for name in ("datasets", "models", "mixtures", "seeds"):
      object.__setattr__(self, name, _as_tuple("Grid", name, getattr(self, name)))
    object.__setattr__(self, "gin_bindings", tuple(self.gin_bindings))
    from rec_t5x.data import catalog  # pylint: disable=g-import-not-at-top  (light, no data I/O)
    known = set(catalog.names())
    for dataset in self.datasets:
      if item_ids.split_variant(dataset)[0] not in known:
        raise ValueError(f"Grid.datasets: unknown dataset {dataset!r}; known: {sorted(known)}, "
                         f"each also as <name>{item_ids.VARIANT_SUFFIXES[item_ids.ATOMIC]} "
                         f"(atomic item IDs) and with {item_ids.NO_TITLES_SUFFIX} appended "
                         "(items shown without titles)")
    for mixture in self.mixtures:
      if mixture not in MIXTURES:
        raise ValueError(f"Grid.mixtures: unknown mixture {mixture!r}; expected some of {MIXTURES}")
    list(self.runs())  # Validates every field through RunSpec.

  def runs(self) -> Iterator[RunSpec]:
    """The runs, ordered dataset, model, seed, mixture.

    Every mixture of seed 0 comes first, so a partly finished grid already compares all mixtures.
    """
    for dataset in self.datasets:
      for model in self.models:
        for seed in self.seeds:
          for mixture in self.mixtures:
            yield RunSpec(dataset=dataset, model=model, mixture=mixture, seed=seed,
                          train_steps=self.train_steps, batch_size=self.batch_size,
                          inputs_length=self.inputs_length, targets_length=self.targets_length,
                          initial_checkpoint=self.initial_checkpoint, vocabulary=self.vocabulary,
                          gin_bindings=tuple(self.gin_bindings),
                          decode_max_examples=self.decode_max_examples,
                          eval_split=self.eval_split)

  def replace(self, **overrides: Any) -> Grid:
    """A validated copy with the given fields replaced (None is a value, e.g. all test users)."""
    return dataclasses.replace(self, **overrides)


# The budgets of the named grids (see the module docstring for their cost). Runs from scratch use
# the atomic item IDs and a linear warm-up + decay from 1e-2, chosen on the validation split
# (docs/tuning.md): at 1000 steps they gave validation Recall@10 0.077, against 0.047 with a
# constant 1e-2 and 0.027 with digit IDs.
HEADLINE_DATASET = "ml100k_atomic"
HEADLINE_TRAIN_STEPS = 1000
HEADLINE_BATCH_SIZE = 8
HEADLINE_DECODE_MAX_EXAMPLES = None  # every test user
FROM_SCRATCH_LEARNING_RATE = 0.01
WARMUP_STEPS = 100
ML1M_TRAIN_STEPS = 2500
FULL_TRAIN_STEPS = 2000
FULL_BATCH_SIZE = 32


def _from_scratch(train_steps: int) -> tuple[str, ...]:
  return linear_decay_bindings(FROM_SCRATCH_LEARNING_RATE, WARMUP_STEPS, train_steps)


PRESETS: dict[str, Grid] = {
    "headline": Grid(
        name="headline", datasets=(HEADLINE_DATASET,), models=("tiny",), mixtures=MIXTURES,
        seeds=(0, 1, 2), train_steps=HEADLINE_TRAIN_STEPS, batch_size=HEADLINE_BATCH_SIZE,
        decode_max_examples=HEADLINE_DECODE_MAX_EXAMPLES,
        gin_bindings=_from_scratch(HEADLINE_TRAIN_STEPS)),
    # The paper's claim on ML-1M (beat SASRec), one seed: about an hour of training per run.
    "ml1m": Grid(
        name="ml1m", datasets=("ml1m_atomic",), models=("tiny",), mixtures=("rec_only", "rec_all"),
        seeds=(0,), train_steps=ML1M_TRAIN_STEPS, batch_size=HEADLINE_BATCH_SIZE,
        decode_max_examples=None, gin_bindings=_from_scratch(ML1M_TRAIN_STEPS)),
    "full": Grid(
        name="full", datasets=("ml100k_atomic", "ml1m_atomic"), models=("tiny", "small"),
        mixtures=MIXTURES, seeds=(0, 1, 2), train_steps=FULL_TRAIN_STEPS,
        batch_size=FULL_BATCH_SIZE, decode_max_examples=None,
        gin_bindings=_from_scratch(FULL_TRAIN_STEPS)),
    # The driver's end-to-end check: a few steps and users, only to exercise every stage.
    "smoke": Grid(
        name="smoke", datasets=("ml100k",), models=("tiny",), mixtures=("rec_only", "rec_mim"),
        seeds=(0,), train_steps=4, batch_size=2, decode_max_examples=4),
}


def preset(name: str) -> Grid:
  """The named grid.

  Raises:
    ValueError: naming the known presets.
  """
  if name not in PRESETS:
    raise ValueError(f"unknown grid {name!r}; expected one of {sorted(PRESETS)}")
  return PRESETS[name]
