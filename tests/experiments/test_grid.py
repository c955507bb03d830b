"""Tests for rec_t5x.experiments.grid: presets, expansion order, run identity and validation."""
import dataclasses

import pytest

from rec_t5x.experiments import grid as grid_lib
from tests.experiments import fakes


def test_headline_preset_is_ml100k_tiny_five_mixtures_three_seeds():
  runs = list(grid_lib.preset("headline").runs())
  assert len(runs) == 15
  assert {r.dataset for r in runs} == {"ml100k_atomic"} and {r.model for r in runs} == {"tiny"}
  assert {r.mixture for r in runs} == set(grid_lib.MIXTURES)
  assert {r.seed for r in runs} == {0, 1, 2}
  # One budget for the whole grid, every test user, and a decay that ends at the last step.
  assert {(r.train_steps, r.batch_size) for r in runs} == {
      (grid_lib.HEADLINE_TRAIN_STEPS, grid_lib.HEADLINE_BATCH_SIZE)}
  assert {r.decode_max_examples for r in runs} == {None}
  assert {r.gin_bindings for r in runs} == {(
      "LEARNING_RATE=0.01", "optimizers.LearningRateConfig.schedule='linear_decay'",
      "optimizers.LearningRateConfig.warmup_steps=100",
      "optimizers.LearningRateConfig.decay_steps=900")}


def test_full_preset_expands_datasets_models_mixtures_seeds():
  runs = list(grid_lib.preset("full").runs())
  assert len(runs) == 2 * 2 * 5 * 3
  assert len({r.run_dir("/r") for r in runs}) == len(runs)


def test_runs_order_puts_every_mixture_of_a_seed_before_the_next_seed():
  grid = grid_lib.preset("headline").replace(seeds=(0, 1))
  order = [(r.seed, r.mixture) for r in grid.runs()]
  assert order[:5] == [(0, m) for m in grid_lib.MIXTURES]
  assert order[5:] == [(1, m) for m in grid_lib.MIXTURES]


def test_identity_decides_the_directory_but_evaluation_users_do_not():
  base = fakes.spec()
  assert base.run_dir("/r") == fakes.spec(decode_max_examples=None).run_dir("/r")
  different = [fakes.spec(seed=1), fakes.spec(train_steps=5), fakes.spec(batch_size=4),
               fakes.spec(inputs_length=512), fakes.spec(mixture="rec_mim"),
               fakes.spec(initial_checkpoint="/ckpt", vocabulary="/spm.model"),
               fakes.spec(gin_bindings=("DROPOUT_RATE=0.1",))]
  dirs = {s.run_dir("/r") for s in different}
  assert len(dirs) == len(different) and base.run_dir("/r") not in dirs


def test_run_dir_layout_and_stable_key():
  spec = fakes.spec(mixture="rec_mim", seed=2)
  path = spec.run_dir("/runs")
  assert str(path.parent) == "/runs/ml100k/tiny/rec_mim"
  assert path.name == f"seed2-steps4-bs2-{spec.key()}"
  # Pinned: a change of the identity's encoding would orphan every finished run directory.
  assert spec.key() == "6af9d15abf"


def test_a_new_training_revision_gives_every_run_a_new_key(monkeypatch):
  spec = fakes.spec(mixture="rec_mim", seed=2)
  old_key = spec.key()
  assert "training_revision" not in spec.identity()  # revision 1 keeps the keys made before it
  monkeypatch.setattr(grid_lib, "TRAINING_REVISION", 2)
  assert spec.identity()["training_revision"] == 2
  assert spec.key() != old_key and spec.run_dir("/r").name.endswith(spec.key())
  assert spec.current(spec.key()) and not spec.current(old_key)


def test_spec_dict_round_trip_and_unknown_field():
  spec = fakes.spec(gin_bindings=("DROPOUT_RATE=0.1",))
  assert grid_lib.RunSpec.from_dict(spec.to_dict()) == spec
  with pytest.raises(ValueError, match="unknown fields.*'colour'"):
    grid_lib.RunSpec.from_dict({**spec.to_dict(), "colour": 1})


@pytest.mark.parametrize("overrides,message", [
    ({"model": "huge"}, "no .*t5_1_1_huge.gin"),
    ({"train_steps": 0}, "RunSpec.train_steps=0"),
    ({"seed": -1}, "RunSpec.seed=-1"),
    ({"decode_max_examples": 0}, "decode_max_examples=0"),
    ({"eval_split": "train"}, r"RunSpec.eval_split='train': expected one of \('test', 'validation'\)"),
    ({"initial_checkpoint": "/ckpt"}, "needs the T5 vocabulary"),
    ({"vocabulary": "/spm.model"}, "without initial_checkpoint"),
    ({"dataset": "ml100k_atomic", "initial_checkpoint": "/ckpt", "vocabulary": "/spm.model"},
     r"atomic item IDs need one vocabulary piece per item.*--datasets ml100k\)"),
    ({"gin_bindings": ("TRAIN_STEPS=3",)}, "TRAIN_STEPS is set by the experiment runner"),
    ({"gin_bindings": ("no equals sign",)}, "expected NAME=VALUE"),
])
def test_spec_validation_names_the_field(overrides, message):
  with pytest.raises(ValueError, match=message):
    fakes.spec(**overrides)


def test_grid_validation():
  headline = grid_lib.preset("headline")
  with pytest.raises(ValueError, match="unknown mixture 'rec_xyz'"):
    headline.replace(mixtures=("rec_only", "rec_xyz"))
  with pytest.raises(ValueError, match="unknown dataset 'ml10m'"):
    headline.replace(datasets=("ml10m",))
  with pytest.raises(ValueError, match="unknown dataset 'ml10m_atomic'.*_atomic"):
    headline.replace(datasets=("ml10m_atomic",))
  atomic = headline.replace(datasets=("ml100k_atomic",), eval_split="validation")
  assert {(r.dataset, r.eval_split) for r in atomic.runs()} == {("ml100k_atomic", "validation")}
  with pytest.raises(ValueError, match=r"seeds lists \['1'\] more than once"):
    headline.replace(seeds=(1, 1))
  with pytest.raises(ValueError, match="Grid.models is empty"):
    headline.replace(models=())
  with pytest.raises(ValueError, match="unknown grid 'big'"):
    grid_lib.preset("big")


def test_evaluation_split_is_not_part_of_the_identity():
  test_spec = fakes.spec()
  validation_spec = fakes.spec(eval_split="validation")
  assert test_spec.key() == validation_spec.key()
  assert test_spec.run_dir("/r") == validation_spec.run_dir("/r")
  assert grid_lib.RunSpec.from_dict(validation_spec.to_dict()) == validation_spec
  old = test_spec.to_dict()
  del old["eval_split"]  # run.json written before the field existed
  assert grid_lib.RunSpec.from_dict(old) == test_spec


def test_replace_can_set_all_test_users():
  grid = grid_lib.preset("smoke").replace(decode_max_examples=None, train_steps=10)
  assert {r.decode_max_examples for r in grid.runs()} == {None}
  assert dataclasses.replace(grid).train_steps == 10


def test_linear_decay_must_end_at_the_last_step():
  bindings = grid_lib.linear_decay_bindings(0.01, 10, 50)
  assert bindings[-1] == "optimizers.LearningRateConfig.decay_steps=40"
  fakes.spec(train_steps=50, gin_bindings=bindings)
  with pytest.raises(ValueError, match=r"linear decay ends at step 50 .* train_steps=60; set "
                     r"optimizers.LearningRateConfig.decay_steps=50"):
    fakes.spec(train_steps=60, gin_bindings=bindings)
  moved = grid_lib.rescale_linear_decay(bindings, 60)
  assert moved[:3] == bindings[:3] and moved[3].endswith("decay_steps=50")
  fakes.spec(train_steps=60, gin_bindings=moved)
  assert grid_lib.rescale_linear_decay(("DROPOUT_RATE=0.1",), 60) == ("DROPOUT_RATE=0.1",)
  with pytest.raises(ValueError, match="warmup_steps=10 must be"):
    grid_lib.linear_decay_bindings(0.01, 10, 10)


def test_parse_binding():
  assert grid_lib.parse_binding(" DROPOUT_RATE = 0.1 ") == ("DROPOUT_RATE", "0.1")
  assert grid_lib.parse_binding("train_script.train.log_period=5") == (
      "train_script.train.log_period", "5")
