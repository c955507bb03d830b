"""Tests for rec_t5x.experiments.commands: the train / eval command lines and environments."""
import shlex

from rec_t5x.experiments import commands
from tests.experiments import fakes


def _bindings(command):
  return dict(arg[len("--gin."):].split("=", 1) for arg in command if arg.startswith("--gin."))


def test_train_command_binds_the_identity():
  spec = fakes.spec(mixture="rec_bpr", seed=2, gin_bindings=("DROPOUT_RATE=0.1",))
  command = commands.train_command(spec, "/runs/a", 2432, "/py")
  assert command[:3] == ["/py", "-m", "rec_t5x.train"]
  assert command[3:5] == ["--gin_file=gin/models/t5_1_1_tiny.gin",
                          "--gin_file=gin/experiments/ablation_train.gin"]
  assert _bindings(command) == {
      "MODEL_DIR": "'/runs/a'", "MIXTURE_OR_TASK_NAME": "'rec_t5x.ml100k.rec_bpr'",
      "TASK_FEATURE_LENGTHS": "{'inputs': 1024, 'targets': 64}", "TRAIN_STEPS": "4",
      "BATCH_SIZE": "2", "RANDOM_SEED": "2", "NUM_EMBEDDINGS": "2432", "CHECKPOINT_PERIOD": "4",
      "DROPOUT_RATE": "0.1"}


def test_train_command_with_initial_checkpoint():
  spec = fakes.spec(initial_checkpoint="/ckpt/flan", vocabulary="/t5/spm.model")
  bindings = _bindings(commands.train_command(spec, "/runs/a", 32128, "/py"))
  assert bindings["INITIAL_CHECKPOINT_PATH"] == "'/ckpt/flan'"
  assert bindings["NUM_EMBEDDINGS"] == "32128"


def test_eval_command_is_rec_only_test_of_the_run():
  spec = fakes.spec(mixture="rec_all", decode_max_examples=None)
  command = commands.eval_command(spec, "/runs/a", 2432, "/py")
  assert command[:3] == ["/py", "-m", "rec_t5x.eval"]
  assert "--gin_file=gin/experiments/ablation_eval.gin" in command
  assert _bindings(command) == {
      "CHECKPOINT_PATH": "'/runs/a'", "EVAL_OUTPUT_DIR": "'/runs/a/test_eval'",
      "MIXTURE_OR_TASK_NAME": "'rec_t5x.ml100k.rec_only'",
      "TASK_FEATURE_LENGTHS": "{'inputs': 1024, 'targets': 64}", "NUM_EMBEDDINGS": "2432",
      "DECODE_MAX_EXAMPLES": "None"}


def test_eval_command_on_the_validation_split_has_its_own_output_dir():
  command = commands.eval_command(fakes.spec(eval_split="validation"), "/runs/a", 2432, "/py")
  bindings = _bindings(command)
  assert bindings["EVAL_SPLIT"] == "'validation'"
  assert bindings["EVAL_OUTPUT_DIR"] == "'/runs/a/validation_eval'"


def test_checkpoint_period_is_capped_at_the_run_length():
  assert commands.checkpoint_period(4) == 4
  assert commands.checkpoint_period(300) == commands.CHECKPOINT_EVERY


def test_env_sets_the_t5_vocabulary_only_for_initialised_runs():
  base = {"REC_T5X_VOCABULARY": "/stale.model", "HOME": "/root"}
  scratch = commands.run_env(fakes.spec(), base)
  assert "REC_T5X_VOCABULARY" not in scratch and scratch["HOME"] == "/root"
  init = commands.run_env(fakes.spec(initial_checkpoint="/c", vocabulary="/t5.model"), base)
  assert init["REC_T5X_VOCABULARY"] == "/t5.model"
  assert base["REC_T5X_VOCABULARY"] == "/stale.model"  # Not modified.


def test_shell_line_quotes_arguments_readably():
  line = commands.shell(["python", "-m", "x", "--gin.A={'inputs': 1}", "--gin.B='/r/a'", "$HOME",
                         "it's $x"], {"V": "/a b"})
  assert line == ("V='/a b' python -m x \"--gin.A={'inputs': 1}\" \"--gin.B='/r/a'\" '$HOME' "
                  "'it'\"'\"'s $x'")
  assert shlex.split(line)[1:] == ["python", "-m", "x", "--gin.A={'inputs': 1}", "--gin.B='/r/a'",
                                   "$HOME", "it's $x"]
