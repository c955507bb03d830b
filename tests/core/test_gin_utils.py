"""Tests for rec_t5x.gin_utils: T5X flag shorthand, gin parsing and its error messages."""
import json
import textwrap

import gin
import pytest

from rec_t5x import gin_utils


def fit(steps=1, lr=0.1, name="x"):
  return steps, lr, name


@pytest.fixture(autouse=True)
def clean_gin():
  gin.clear_config()
  configured = gin.external_configurable(fit, module="test_gin_utils")
  yield configured
  gin.clear_config()
  gin.config.clear_config(clear_constants=False)


@pytest.fixture
def gin_dir(tmp_path):
  (tmp_path / "runs").mkdir()
  (tmp_path / "runs" / "base.gin").write_text(textwrap.dedent("""\
      TRAIN_STEPS = %gin.REQUIRED
      MODEL_DIR = "/tmp/default"
      test_gin_utils.fit:
        steps = %TRAIN_STEPS
        name = %MODEL_DIR
      """))
  (tmp_path / "exp.gin").write_text("include 'runs/base.gin'\ntest_gin_utils.fit.lr = 0.5\n")
  return tmp_path


def test_rewrites_t5x_shorthand():
  argv = ["prog", '--gin.MODEL_DIR="/tmp/x"', "--gin.train.eval_period=5", "--gin_file=a.gin"]
  assert gin_utils.rewrite_gin_args(argv) == [
      "prog", '--gin_bindings=MODEL_DIR = "/tmp/x"', "--gin_bindings=train.eval_period = 5",
      "--gin_file=a.gin"]


def test_shorthand_without_value_is_an_error():
  with pytest.raises(gin_utils.ConfigError, match="--gin.NAME=VALUE"):
    gin_utils.rewrite_gin_args(["prog", "--gin.TRAIN_STEPS"])


def test_flags_parser_collects_files_and_bindings():
  try:
    rest = gin_utils.flags_parser(["prog", "--gin_file=a.gin", "--gin_file=b.gin",
                                   "--gin.TRAIN_STEPS=3", "--gin_bindings=X = 1"])
    assert rest == ["prog"]
    assert gin_utils.FLAGS.gin_file == ["a.gin", "b.gin"]
    assert gin_utils.FLAGS.gin_bindings == ["TRAIN_STEPS = 3", "X = 1"]
    assert str(gin_utils.GIN_DIR) in gin_utils.FLAGS.gin_search_paths
  finally:
    gin_utils.FLAGS.unparse_flags()


def test_include_via_search_path_and_bindings_override(gin_dir, clean_gin):
  gin_utils.parse_gin(["exp.gin"], ["TRAIN_STEPS = 7", 'MODEL_DIR = "/tmp/run"'], [str(gin_dir)])
  gin_utils.check_required()
  assert clean_gin() == (7, 0.5, "/tmp/run")


def test_include_works_when_the_working_directory_has_a_folder_of_that_name(
    gin_dir, clean_gin, tmp_path_factory, monkeypatch):
  # A plain `runs/` folder in the working directory (training's model dirs) is a namespace package
  # to importlib; gin-config's package-resource lookup used to crash on it instead of moving on to
  # the search paths (seen after the README's quickstart, then its tests, in the same checkout).
  cwd = tmp_path_factory.mktemp("cwd")
  (cwd / "runs" / "quickstart").mkdir(parents=True)
  monkeypatch.chdir(cwd)
  monkeypatch.syspath_prepend(str(cwd))
  gin_utils.parse_gin(["exp.gin"], ["TRAIN_STEPS = 3"], [str(gin_dir)])
  assert clean_gin()[0] == 3


def test_binding_a_configurable_parameter(gin_dir, clean_gin):
  gin_utils.parse_gin(["exp.gin"], ["TRAIN_STEPS = 1", "test_gin_utils.fit.lr = 0.25"],
                      [str(gin_dir)])
  assert clean_gin()[1] == 0.25


def test_unset_required_value_is_listed(gin_dir):
  gin_utils.parse_gin(["exp.gin"], [], [str(gin_dir)])
  with pytest.raises(gin_utils.ConfigError, match=r"\['TRAIN_STEPS'\].*--gin.TRAIN_STEPS="):
    gin_utils.check_required()


def test_misspelt_macro_suggests_the_defined_one(gin_dir):
  with pytest.raises(gin_utils.ConfigError, match=r"'TRAIN_STEP'.*did you mean \['TRAIN_STEPS'\]"):
    gin_utils.parse_gin(["exp.gin"], ["TRAIN_STEP = 3"], [str(gin_dir)])


def test_unknown_parameter_names_the_binding(gin_dir):
  with pytest.raises(gin_utils.ConfigError, match=r"test_gin_utils.fit.stepz = 3.*stepz"):
    gin_utils.parse_gin(["exp.gin"], ["test_gin_utils.fit.stepz = 3"], [str(gin_dir)])


def test_missing_file_names_it(gin_dir):
  with pytest.raises(gin_utils.ConfigError, match=r"--gin_file=nope.gin"):
    gin_utils.parse_gin(["nope.gin"], [], [str(gin_dir)])


def test_write_config(gin_dir, tmp_path):
  gin_utils.parse_gin(["exp.gin"], ["TRAIN_STEPS = 2"], [str(gin_dir)])
  path = gin_utils.write_config(tmp_path / "model")
  assert "TRAIN_STEPS = 2" in path.read_text()


def test_partial_distributed_flags_are_an_error():
  try:
    gin_utils.FLAGS(["prog", "--coordinator_address=localhost:1234"])
    with pytest.raises(gin_utils.ConfigError, match="--process_count"):
      gin_utils.initialize_distributed()
  finally:
    gin_utils.FLAGS.unparse_flags()


def test_bindings_can_use_the_files_import_aliases(tmp_path):
  (tmp_path / "alias.gin").write_text(
      "from __gin__ import dynamic_registration\nimport json as js\njs.dumps.indent = 2\n")
  gin_utils.parse_gin(["alias.gin"], ["js.dumps.indent = 4"], [str(tmp_path)])
  assert gin.get_bindings(json.dumps) == {"indent": 4}
