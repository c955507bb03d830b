"""The exact command lines of one ablation run (pure functions: argv lists and environments).

Training: `python -m rec_t5x.train` with the model file and gin/experiments/ablation_train.gin,
plus one `--gin.NAME=VALUE` per field of the run's identity. The train binary resumes by itself
from the latest checkpoint in MODEL_DIR, so re-running the same command continues an interrupted
run. Evaluation: `python -m rec_t5x.eval` with the model file and
gin/experiments/ablation_eval.gin on the TEST split of the dataset's `rec_only` mixture
(retrieval, ranking, rating), whatever mixture the run trained on.

The evaluation split is the run's `eval_split` ("test" for reported results, "validation" for
tuning); each split has its own output directory (`<run_dir>/test_eval`, `validation_eval`).

Vocabulary: a run from scratch uses the dataset's own SentencePiece vocabulary, so
`REC_T5X_VOCABULARY` is removed from its environment; a run from `initial_checkpoint` uses the T5
vocabulary, passed as `REC_T5X_VOCABULARY` (see rec_t5x/vocabulary.py). NUM_EMBEDDINGS is the
vocabulary's size rounded up to a multiple of 128, measured by `vocab_command`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
import os
import pathlib
import shlex

from rec_t5x.experiments import grid as grid_lib

ENV_VOCABULARY = "REC_T5X_VOCABULARY"  # rec_t5x.vocabulary.ENV_VOCABULARY (not imported: loads TF)
TRAIN_GIN = "gin/experiments/ablation_train.gin"
EVAL_GIN = "gin/experiments/ablation_eval.gin"
EVAL_MIXTURE = "rec_only"
# Checkpoints are written this often (capped at the run's length), so an interrupted run loses
# at most this many steps.
CHECKPOINT_EVERY = 100


def _gin_string(value: str) -> str:
  """A Python/gin string literal of `value`."""
  return repr(str(value))


def _model_gin(spec: grid_lib.RunSpec) -> str:
  return os.path.relpath(grid_lib.model_gin_file(spec.model), grid_lib.REPO_ROOT)


def feature_lengths(spec: grid_lib.RunSpec) -> str:
  """TASK_FEATURE_LENGTHS as a gin dict literal."""
  return f"{{'inputs': {spec.inputs_length}, 'targets': {spec.targets_length}}}"


def checkpoint_period(train_steps: int) -> int:
  """CHECKPOINT_EVERY, or the run's length when shorter."""
  return max(1, min(CHECKPOINT_EVERY, train_steps))


def train_command(spec: grid_lib.RunSpec, run_dir: str | os.PathLike, num_embeddings: int,
                  python: str) -> list[str]:
  """`python -m rec_t5x.train ...` for `spec`, writing checkpoints and summaries to `run_dir`.

  Args:
    spec: the run.
    run_dir: MODEL_DIR (absolute).
    num_embeddings: NUM_EMBEDDINGS (the vocabulary size rounded up to 128).
    python: the interpreter.

  Returns:
    argv, to run from the repository root.
  """
  command = [
      python, "-m", "rec_t5x.train", f"--gin_file={_model_gin(spec)}", f"--gin_file={TRAIN_GIN}",
      f"--gin.MODEL_DIR={_gin_string(run_dir)}",
      f"--gin.MIXTURE_OR_TASK_NAME={_gin_string(f'rec_t5x.{spec.dataset}.{spec.mixture}')}",
      f"--gin.TASK_FEATURE_LENGTHS={feature_lengths(spec)}",
      f"--gin.TRAIN_STEPS={spec.train_steps}", f"--gin.BATCH_SIZE={spec.batch_size}",
      f"--gin.RANDOM_SEED={spec.seed}", f"--gin.NUM_EMBEDDINGS={num_embeddings}",
      f"--gin.CHECKPOINT_PERIOD={checkpoint_period(spec.train_steps)}"]
  if spec.initial_checkpoint is not None:
    command.append(f"--gin.INITIAL_CHECKPOINT_PATH={_gin_string(spec.initial_checkpoint)}")
  for binding in spec.gin_bindings:
    name, value = grid_lib.parse_binding(binding)
    command.append(f"--gin.{name}={value}")
  return command


def eval_dir(run_dir: str | os.PathLike, split: str = "test") -> pathlib.Path:
  """EVAL_OUTPUT_DIR of a run evaluated on `split`: `<run_dir>/test_eval`, `validation_eval`."""
  return pathlib.Path(run_dir) / f"{split}_eval"


def eval_command(spec: grid_lib.RunSpec, run_dir: str | os.PathLike, num_embeddings: int,
                 python: str) -> list[str]:
  """`python -m rec_t5x.eval ...`: metrics of the run's latest checkpoint on `rec_only`, on the
  run's `eval_split` (ablation_eval.gin's default is the test split)."""
  limit = "None" if spec.decode_max_examples is None else str(spec.decode_max_examples)
  split = [] if spec.eval_split == "test" else [f"--gin.EVAL_SPLIT={_gin_string(spec.eval_split)}"]
  return [
      python, "-m", "rec_t5x.eval", f"--gin_file={_model_gin(spec)}", f"--gin_file={EVAL_GIN}",
      f"--gin.CHECKPOINT_PATH={_gin_string(run_dir)}",
      f"--gin.EVAL_OUTPUT_DIR={_gin_string(eval_dir(run_dir, spec.eval_split))}",
      f"--gin.MIXTURE_OR_TASK_NAME={_gin_string(f'rec_t5x.{spec.dataset}.{EVAL_MIXTURE}')}",
      f"--gin.TASK_FEATURE_LENGTHS={feature_lengths(spec)}",
      f"--gin.NUM_EMBEDDINGS={num_embeddings}", f"--gin.DECODE_MAX_EXAMPLES={limit}", *split]


def vocab_command(dataset: str, python: str) -> list[str]:
  """`python -m rec_t5x.experiments.vocab --dataset D`: prints the vocabulary size as JSON."""
  return [python, "-m", "rec_t5x.experiments.vocab", f"--dataset={dataset}"]


def run_env(spec: grid_lib.RunSpec, base: Mapping[str, str]) -> dict[str, str]:
  """The environment of a run's subprocesses: `base` with REC_T5X_VOCABULARY set or removed."""
  env = dict(base)
  env.pop(ENV_VOCABULARY, None)
  if spec.vocabulary is not None:
    env[ENV_VOCABULARY] = spec.vocabulary
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  env.setdefault("PYTHONUNBUFFERED", "1")  # train.log / eval.log follow the run as it goes
  return env


def quote(arg: str) -> str:
  """Shell-quotes one argument, keeping gin strings readable.

  `--gin.A='x'` becomes `"--gin.A='x'"` rather than shlex's `'--gin.A='"'"'x'"'"''`: double
  quotes are used when the argument holds a single quote and nothing special inside them.
  """
  quoted = shlex.quote(arg)
  if quoted == arg or not any(c in arg for c in "'") or any(c in arg for c in '"$`\\!'):
    return quoted
  return f'"{arg}"'


def shell(command: Sequence[str], env_prefix: Mapping[str, str] | None = None) -> str:
  """The command as one copy-pasteable shell line (optionally with `VAR=value` in front)."""
  prefix = "".join(f"{k}={quote(v)} " for k, v in sorted((env_prefix or {}).items()))
  return prefix + " ".join(quote(arg) for arg in command)
