"""`python -m rec_t5x.train`: train or fine-tune a model configured with gin (T5X's train binary).

  python -m rec_t5x.train --gin_file=gin/experiments/ml100k_tiny_rec_all.gin \
    --gin.MODEL_DIR="'/tmp/ml100k_tiny'"

The run: restore the latest checkpoint in MODEL_DIR (parameters, optimizer state and the input
iterator position, so a resumed run continues exactly), else start from INITIAL_CHECKPOINT_PATH
or a fresh initialisation. Each step: next batch, the compiled train step, a NaN/inf check (the
run stops naming the step; the last checkpoint stays the last good state), summaries every
`log_period`, teacher-forced evaluation every `eval_period`, a checkpoint every
`checkpoint_period`; SIGTERM saves and exits. The operative gin config is written to
MODEL_DIR/config.gin. Each stage is a small function; `train` only wires them together.
"""
import dataclasses
import pathlib
import sys
from collections.abc import Callable
from typing import Any

import gin
import jax
from jax.experimental import multihost_utils
import msgpack
import numpy as np

from rec_t5x import checkpoints
from rec_t5x import distributed
from rec_t5x import eval as eval_lib
from rec_t5x import evaluation
from rec_t5x import gin_utils
from rec_t5x import input_pipeline
from rec_t5x import models
from rec_t5x import optimizers
from rec_t5x import partitioning
from rec_t5x import summaries
from rec_t5x import trainer as trainer_lib

Log = Callable[[str], None]
PERIODIC_DECODE_EXAMPLES = 64  # decoding examples per task at each periodic evaluation
Evaluator = Callable[[Any], dict[str, dict[str, float]]]


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  """Step counts and periods of the training loop.

  Attributes:
    total_steps: train until the state's step reaches this (a resumed run counts from its step).
    eval_period: evaluate every this many steps (and at the end).
    eval_steps: batches per task per evaluation; None evaluates the whole split.
    checkpoint_period: save every this many steps (and at the end and on SIGTERM).
    keep_checkpoints: keep the newest this many checkpoints; None keeps all.
    log_period: write summaries and print progress every this many steps.
  """
  total_steps: int
  eval_period: int = 1000
  eval_steps: int | None = 20
  checkpoint_period: int = 1000
  keep_checkpoints: int | None = None
  log_period: int = 100

  def __post_init__(self):
    for name in ("total_steps", "eval_period", "checkpoint_period", "log_period"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"train.{name}={value!r}: expected an integer >= 1")
    for name in ("eval_steps", "keep_checkpoints"):
      value = getattr(self, name)
      if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"train.{name}={value!r}: expected an integer >= 1 or None")


@dataclasses.dataclass
class MetricsWindow:
  """Train metrics accumulated between two progress lines (host floats, mutable)."""
  steps: int = 0
  loss: float = 0.0
  correct: float = 0.0
  tokens: float = 0.0
  learning_rate: float = 0.0

  def add(self, metrics: dict[str, Any]) -> None:
    self.steps += 1
    self.loss += float(metrics["loss"])
    self.correct += float(metrics["num_correct_tokens"])
    self.tokens += float(metrics["num_target_tokens"])
    self.learning_rate = float(metrics["learning_rate"])

  def pop(self) -> dict[str, float]:
    """Mean loss, token accuracy and the last learning rate; then resets."""
    out = {"loss": self.loss / max(self.steps, 1), "accuracy": self.correct / max(self.tokens, 1e-9),
           "learning_rate": self.learning_rate, "num_target_tokens": self.tokens}
    self.steps, self.loss, self.correct, self.tokens = 0, 0.0, 0.0, 0.0
    return out


def check_vocabulary(model: models.EncoderDecoderModel, config: input_pipeline.DatasetConfig) -> None:
  """Checks the task's vocabularies against the model before compiling (T5X's verify_matching_vocabs).

  Raises:
    ValueError: when the model has vocabularies that differ from the task's, or the task's
      vocabulary has more ids than the network's embedding rows (NUM_EMBEDDINGS).
  """
  provider = input_pipeline.get_provider(config.mixture_or_task_name)
  name = config.mixture_or_task_name
  for feature, model_vocab in (("inputs", model.input_vocabulary),
                               ("targets", model.output_vocabulary)):
    task_vocab = provider.output_features[feature].vocabulary
    if model_vocab is not None and model_vocab != task_vocab:
      raise ValueError(f"model {feature} vocabulary {model_vocab} differs from task {name!r}'s "
                       f"{task_vocab}")
    rows = getattr(getattr(model.module, "config", None), "vocab_size", None)
    if rows is not None and task_vocab.vocab_size > rows:
      raise ValueError(f"task {name!r} {feature} vocabulary has {task_vocab.vocab_size} ids but the "
                       f"network has vocab_size={rows} embedding rows; set NUM_EMBEDDINGS >= "
                       f"{task_vocab.vocab_size}")


def gather_input_states(state: bytes) -> bytes:
  """Every process's iterator position, packed into one blob (written by process 0)."""
  if jax.process_count() == 1:
    return msgpack.packb([state])
  data = np.frombuffer(state, np.uint8)
  sizes = multihost_utils.process_allgather(np.asarray([data.size], np.int64)).reshape(-1)
  padded = np.zeros(int(sizes.max()), np.uint8)
  padded[:data.size] = data
  everything = multihost_utils.process_allgather(padded)
  return msgpack.packb([everything[i, :int(n)].tobytes() for i, n in enumerate(sizes)])


def own_input_state(blob: bytes) -> bytes:
  """This process's iterator position from `gather_input_states`' blob.

  Raises:
    ValueError: when the checkpoint was written by a different number of processes.
  """
  states = msgpack.unpackb(blob)
  if len(states) != jax.process_count():
    raise ValueError(f"the checkpoint's input positions were written by {len(states)} processes; "
                     f"this run has {jax.process_count()}, so the data position cannot be resumed")
  return states[jax.process_index()]


def restore_or_initialize(trainer: trainer_lib.Trainer, manager: checkpoints.CheckpointManager,
                          iterator: input_pipeline.BatchIterator,
                          initial_checkpoint_path: str | None, seed: int,
                          log: Log) -> trainer_lib.TrainState:
  """The latest checkpoint of the run (with its input position), else initial weights or init."""
  if manager.latest_step() is not None:
    state, input_state = manager.restore(trainer.abstract_state)
    if input_state is None:
      log(f"checkpoint {manager.latest_step()} has no input position; data restarts from the start")
    else:
      iterator.set_state(own_input_state(input_state))
    log(f"resumed from {manager.directory}/{manager.latest_step()}")
    return state
  if initial_checkpoint_path:
    params = checkpoints.restore_initial(initial_checkpoint_path, trainer.abstract_state.params)
    log(f"initialised parameters from {initial_checkpoint_path}")
    return trainer.state_from_params(params)
  return trainer.init_state(jax.random.PRNGKey(seed))


def save_checkpoint(manager: checkpoints.CheckpointManager, step: int,
                    state: trainer_lib.TrainState, iterator: input_pipeline.BatchIterator,
                    force: bool = False) -> bool:
  """Saves state and input position when due (or forced); returns whether it saved."""
  if not force and not manager.should_save(step):
    return False
  return manager.save(step, state, gather_input_states(iterator.get_state()), force=force)


def make_evaluator(trainer: trainer_lib.Trainer, config: input_pipeline.DatasetConfig | None,
                   eval_steps: int | None, log: Log) -> Evaluator | None:
  """Teacher-forced evaluation on each task of `config`, plus decoding metrics (None: no eval).

  The retrieval / ranking / rating tasks of the mixture are also decoded through seqio.Evaluator
  (`rec_t5x.evaluation`), kept cheap: a seeded subset of `eval_steps * batch_size` examples per
  task (at most `PERIODIC_DECODE_EXAMPLES`; the whole split when `eval_steps` is None), beam 20,
  without P5's 1+99 sampled protocol (100 likelihoods per example; run it with rec_t5x.eval).
  """
  if config is None:
    return None
  datasets = eval_lib.build_eval_datasets(eval_lib.eval_dataset_configs(config, log),
                                          trainer.partitioner, eval_steps)
  decoder = None
  if evaluation.decoding_tasks(config.mixture_or_task_name, config.split):
    limit = None if eval_steps is None else min(PERIODIC_DECODE_EXAMPLES,
                                                eval_steps * config.batch_size)
    decode_config = evaluation.EvalConfig(batch_size=config.batch_size, max_examples=limit,
                                          sampled_negatives=0)
    decoder = evaluation.DecodingEvaluator(
        config.mixture_or_task_name, config.split, dict(config.task_feature_lengths),
        trainer.model.module, trainer.partitioner, trainer.state_shardings.params, decode_config,
        trainer.abstract_state.params)
    log(f"periodic decoding evaluation: {decoder.task_names}, {limit or 'all'} examples per task")

  def evaluate(params):
    results = eval_lib.teacher_forced_metrics(trainer, params, datasets)
    if decoder is not None:
      for name, metrics in decoder(params).items():
        results.setdefault(name, {}).update(metrics)
    return results
  return evaluate


def run_loop(trainer: trainer_lib.Trainer, state: trainer_lib.TrainState,
             iterator: input_pipeline.BatchIterator, manager: checkpoints.CheckpointManager,
             logger: summaries.RunLogger, loop: LoopConfig, evaluator: Evaluator | None,
             num_data_shards: int, log: Log) -> trainer_lib.TrainState:
  """Steps from the state's step to `loop.total_steps` (see module docstring)."""
  step = int(jax.device_get(state.step))
  window = MetricsWindow()
  first_step = step
  with checkpoints.SigtermFlag() as sigterm:
    while step < loop.total_steps:
      local = iterator.next_local()
      state, metrics = trainer.train_step(state, iterator.to_global(local))
      metrics = jax.device_get(metrics)
      trainer_lib.raise_if_nonfinite(metrics, step + 1)
      step += 1
      window.add(metrics)
      if step == first_step + 1:
        logger.throughput.start(step)  # Excludes compilation from the rates.
      else:
        examples, tokens = summaries.batch_counts(local)
        logger.throughput.add(examples * num_data_shards, tokens * num_data_shards)
      if step % loop.log_period == 0 or step == loop.total_steps:
        logger.log_train(step, window.pop())
      if evaluator is not None and (step % loop.eval_period == 0 or step == loop.total_steps):
        for name, task_metrics in evaluator(state.params).items():
          logger.log_eval(step, f"training_eval/{name}", task_metrics)
      save_checkpoint(manager, step, state, iterator, force=step == loop.total_steps)
      if sigterm.requested():
        save_checkpoint(manager, step, state, iterator, force=True)
        # Wait for the (asynchronous) write while the flag still catches SIGTERM: schedulers
        # often repeat the signal, and the default action would kill the process mid-write.
        manager.wait_until_finished()
        log(f"SIGTERM: saved step {step} to {manager.directory}; exiting")
        break
  return state


def train(*, model: models.EncoderDecoderModel, optimizer: optimizers.Optimizer,
          train_dataset_cfg: input_pipeline.DatasetConfig,
          partitioner: partitioning.Partitioner, model_dir: str, total_steps: int,
          train_eval_dataset_cfg: input_pipeline.DatasetConfig | None = None,
          eval_period: int = 1000, eval_steps: int | None = 20, checkpoint_period: int = 1000,
          keep_checkpoints: int | None = None, log_period: int = 100,
          initial_checkpoint_path: str | None = None, random_seed: int = 0,
          num_microbatches: int = 1, config_text: str = "",
          log: Log = print) -> trainer_lib.TrainState:
  """Trains `model` on `train_dataset_cfg` (gin-configured in `__main__`).

  Args:
    model: EncoderDecoderModel (network from the model gin file).
    optimizer: `optimizers.adafactor(...)`.
    train_dataset_cfg: training data; `batch_size` is global.
    partitioner: mesh and sharding rules.
    model_dir: checkpoints, TensorBoard runs and config.gin go here.
    total_steps: the step to train to.
    train_eval_dataset_cfg: teacher-forced evaluation data (validation split), or None.
    eval_period / eval_steps / checkpoint_period / keep_checkpoints / log_period: see LoopConfig.
    initial_checkpoint_path: weights to start from when MODEL_DIR has no checkpoint (our run, a
      T5X legacy / Orbax or a Hugging Face checkpoint).
    random_seed: parameter initialisation and dropout seed (must equal on every process).
    num_microbatches: gradient accumulation inside a step.
    config_text: the operative gin config, written to model_dir/config.gin and TensorBoard.
    log: where messages go.

  Returns:
    The final TrainState.

  Raises:
    trainer.NonFiniteLossError: the loss or gradient became NaN/inf (names the step).
  """
  loop = LoopConfig(total_steps, eval_period, eval_steps, checkpoint_period, keep_checkpoints,
                    log_period)
  if jax.process_count() > 1:
    distributed.check_equal_across_processes(random_seed, "random_seed")
  model_path = pathlib.Path(model_dir)
  if jax.process_index() == 0 and config_text:
    model_path.mkdir(parents=True, exist_ok=True)
    (model_path / "config.gin").write_text(config_text)
  input_pipeline.import_module(train_dataset_cfg.module)
  check_vocabulary(model, train_dataset_cfg)
  shares = input_pipeline.mixture_shares(train_dataset_cfg.mixture_or_task_name)
  if shares is not None:
    log(f"mixture {train_dataset_cfg.mixture_or_task_name}: samples per task "
        + ", ".join(f"{task} {share:.1%}" for task, share in shares.items()))
  iterator = input_pipeline.get_iterator(train_dataset_cfg, partitioner)
  input_shapes = {k: v.shape for k, v in iterator.element_spec.items()}
  trainer = trainer_lib.Trainer(model, optimizer, partitioner, input_shapes,
                                num_microbatches=num_microbatches, dropout_seed=random_seed)
  evaluator = make_evaluator(trainer, train_eval_dataset_cfg, eval_steps, log)
  logger = summaries.RunLogger(model_path, total_steps, print_fn=log)
  if config_text:
    logger.log_text(0, "train", {"config": config_text})
  num_shards = partitioner.data_layout(train_dataset_cfg.batch_size).num_shards
  with checkpoints.CheckpointManager(model_path, checkpoint_period, keep_checkpoints) as manager:
    state = restore_or_initialize(trainer, manager, iterator, initial_checkpoint_path,
                                  random_seed, log)
    try:
      state = run_loop(trainer, state, iterator, manager, logger, loop, evaluator, num_shards, log)
    finally:
      manager.wait_until_finished()
      logger.close()
  return state


def main(argv) -> None:
  del argv
  gin_utils.initialize_distributed()
  train_using_gin = gin.configurable(train)
  gin_utils.parse_gin_flags()
  try:
    with distributed.peer_failures():
      train_using_gin(config_text=gin.config_str())
  except distributed.PeerProcessError as e:
    distributed.exit_after_peer_failure(e)
  except trainer_lib.NonFiniteLossError as e:
    print(f"rec_t5x.train: stopped: {e}", file=sys.stderr)
    sys.exit(1)


def console_main() -> None:
  """Entry point of the `rec_t5x_train` console script (and of `python -m rec_t5x.train`)."""
  gin_utils.run(main, {"train": train})


if __name__ == "__main__":
  console_main()
