"""Tests for rec_t5x.experiments.driver: flags -> grid, dry run, report-only regeneration."""
import pytest

from rec_t5x.experiments import commands
from rec_t5x.experiments import driver
from rec_t5x.experiments import grid as grid_lib
from rec_t5x.experiments import runner
from tests.experiments import fakes


def _grid(*flags, environ=None):
  args = driver.build_parser().parse_args(["--grid", *flags])
  return driver.grid_from_args(args, environ or {})


def test_overrides_replace_only_given_fields():
  grid = _grid("headline", "--datasets", "ml1m", "--models", "tiny,small", "--mixtures",
               "rec_only,rec_all", "--seeds", "0,1", "--train_steps", "500", "--batch_size", "4",
               "--gin", "DROPOUT_RATE=0.1")
  assert (grid.datasets, grid.models, grid.mixtures, grid.seeds) == (
      ("ml1m",), ("tiny", "small"), ("rec_only", "rec_all"), (0, 1))
  assert (grid.train_steps, grid.batch_size) == (500, 4)
  assert grid.gin_bindings == grid_lib.rescale_linear_decay(
      grid_lib.preset("headline").gin_bindings, 500) + ("DROPOUT_RATE=0.1",)
  assert grid.decode_max_examples == grid_lib.HEADLINE_DECODE_MAX_EXAMPLES
  assert _grid("headline", "--decode_max_examples", "all").decode_max_examples is None
  assert _grid("smoke", "--decode_max_examples", "7").decode_max_examples == 7


def test_gin_adds_to_the_presets_bindings_and_replaces_one_of_the_same_name():
  preset = grid_lib.preset("headline").gin_bindings
  grid = _grid("headline", "--gin", "seqio_tasks.mixing_rates.mim=3", "--gin", "LEARNING_RATE=0.02")
  rate = [i for i, b in enumerate(preset) if b.startswith("LEARNING_RATE=")]
  assert len(rate) == 1 and grid.gin_bindings[rate[0]] == "LEARNING_RATE=0.02"
  assert grid.gin_bindings[-1] == "seqio_tasks.mixing_rates.mim=3"
  assert len(grid.gin_bindings) == len(preset) + 1
  assert grid.gin_bindings[:rate[0]] + grid.gin_bindings[rate[0] + 1:-1] == (
      preset[:rate[0]] + preset[rate[0] + 1:])
  # Fine-tuning starts from no bindings (T5X's constant rate); --gin still adds its own.
  tuned = _grid("headline", "--datasets", "ml100k", "--initial_checkpoint", "/c", "--t5_vocabulary",
                "/v.model", "--gin", "LEARNING_RATE=0.0005")
  assert tuned.gin_bindings == ("LEARNING_RATE=0.0005",)
  # A --gin decay that does not end at the last step is refused, naming the fix.
  with pytest.raises(ValueError, match="decay_steps=900"):
    _grid("headline", "--gin", "optimizers.LearningRateConfig.decay_steps=500").runs()


def test_merge_bindings_keeps_order_and_drops_duplicates_of_a_replaced_name():
  assert grid_lib.merge_bindings(("A=1", "B=2", "A=3"), ("A = 4", "C=5")) == ("A = 4", "B=2", "C=5")
  assert grid_lib.merge_bindings((), ()) == ()
  with pytest.raises(ValueError, match="expected NAME=VALUE"):
    grid_lib.merge_bindings(("A=1",), ("A",))


def test_a_new_budget_moves_the_presets_learning_rate_decay():
  grid = _grid("headline", "--train_steps", "300")
  assert grid.gin_bindings[-1] == "optimizers.LearningRateConfig.decay_steps=200"
  assert grid.gin_bindings[:3] == grid_lib.preset("headline").gin_bindings[:3]


def test_initial_checkpoint_takes_the_vocabulary_from_flag_or_environment(tmp_path):
  grid = _grid("smoke", "--initial_checkpoint", "ckpt", environ={"REC_T5X_VOCABULARY": "/t5.model"})
  assert grid.vocabulary == "/t5.model" and grid.initial_checkpoint.endswith("/ckpt")
  tuned = _grid("headline", "--datasets", "ml100k", "--initial_checkpoint", "/c", "--t5_vocabulary",
                "/v.model")
  assert tuned.gin_bindings == ()  # finetune.gin's constant 1e-3, not the from-scratch decay
  grid = _grid("smoke", "--initial_checkpoint", "/c", "--t5_vocabulary", "/v.model")
  assert grid.vocabulary == "/v.model"
  with pytest.raises(ValueError, match="needs the T5 vocabulary"):
    _grid("smoke", "--initial_checkpoint", "/c")
  with pytest.raises(ValueError, match="only used with --initial_checkpoint"):
    _grid("smoke", "--t5_vocabulary", "/v.model")


def test_dry_run_lists_states(tmp_path, capsys):
  fakes.write_run(tmp_path, fakes.spec(), 0.1)  # The smoke grid's rec_only run.
  assert driver.main(["--grid", "smoke", "--runs_dir", str(tmp_path), "--dry_run"]) == 0
  out = capsys.readouterr().out
  assert "grid smoke: 2 runs of 4 steps x batch 2" in out
  assert "done" in out and "ml100k/tiny/rec_only seed 0" in out
  assert "new" in out and "ml100k/tiny/rec_mim seed 0" in out


def test_dry_run_counts_one_run_in_the_singular(tmp_path, capsys):
  assert driver.main(["--grid", "smoke", "--runs_dir", str(tmp_path), "--mixtures", "rec_only",
                      "--dry_run"]) == 0
  assert "grid smoke: 1 run of 4 steps x batch 2" in capsys.readouterr().out


def test_report_only_regenerates_report_and_plots_from_run_json(tmp_path):
  for mixture, value in (("rec_only", 0.1), ("rec_mim", 0.2)):
    fakes.write_run(tmp_path / "runs", fakes.spec(mixture=mixture), value)
  fakes.write_run(tmp_path / "runs", fakes.spec(mixture="rec_all"), 0.9)  # Not in the grid.
  results = tmp_path / "docs" / "results.md"
  status = driver.main(["--grid", "smoke", "--runs_dir", str(tmp_path / "runs"), "--results",
                        str(results), "--plots_dir", str(tmp_path / "docs" / "results"),
                        "--baselines_dir", str(tmp_path / "baselines"), "--report_only"])
  assert status == 0
  text = results.read_text()
  assert "from 2 of 2 complete runs" in text
  assert "best mixture rec_mim: test R@10 0.2000 (n=1) vs rec_only 0.1000 (n=1)" in text
  assert "rec_all" not in text.split("## Setup")[1].split("## Discussion")[0]
  assert "![Test Recall@10 per mixture (bars: mean ± std over seeds; dots: seeds; dashed: baselines)]" \
         "(results/recall_at_10.png)" in text
  assert (tmp_path / "docs" / "results" / "train_loss.png").stat().st_size > 0
  assert "Command: `python scripts/run_experiment.py --grid smoke --runs_dir" in text
  assert text.rstrip().endswith("regenerates the report. -->")
  assert "Top-10 lists: not analysed" in text  # no Pop outputs, so no popularity


def _write_retrieval(run_dir, text):
  predictions = commands.eval_dir(run_dir) / "predictions" / "rec_t5x.ml100k.retrieval.jsonl"
  predictions.parent.mkdir(parents=True)
  predictions.write_text(text)


def _report_beside_pop(tmp_path, *flags):
  """Runs the driver's --report_only over tmp_path/runs with Pop's outputs; the report's text."""
  fakes.write_baseline(tmp_path / "baselines", "ml100k", "pop", 0.05)
  results = tmp_path / "results.md"
  assert driver.main(["--grid", "smoke", *flags, "--runs_dir", str(tmp_path / "runs"),
                      "--results", str(results), "--plots_dir", str(tmp_path / "plots"),
                      "--baselines_dir", str(tmp_path / "baselines"), "--report_only"]) == 0
  return results.read_text()


def test_report_analyses_top_lists_from_the_runs_predictions(tmp_path):
  run_dir = fakes.write_run(tmp_path / "runs", fakes.spec(), 0.1)
  _write_retrieval(run_dir, '{"key": 0, "retrieved": [10, 11], "targets": "<i10>"}\n'
                            '{"key": 16777216, "retrieved": [12, 13], "targets": "<i12>"}\n')
  text = _report_beside_pop(tmp_path, "--mixtures", "rec_only")
  section = text.split("Top-10 lists of the 2 test users the T5 runs decoded (")[1]
  section = section.split("Runs:")[0]
  # Items 10-13 of a 4-item catalogue, all among the 100 most popular; Pop's lists of users 0 and 1
  # are [10, 11] and [10, 12] (fakes.write_baseline), so the overlap@10 is (2/10 + 1/10) / 2.
  assert "| rec_only | 1 | 1.000 | 1.000 | 0.150 |" in section


def test_top_lists_table_follows_the_report_order_of_mixtures(tmp_path):
  for mixture in ("rec_only", "rec_mim"):  # rec_mim's directory sorts first on disk
    run_dir = fakes.write_run(tmp_path / "runs", fakes.spec(mixture=mixture), 0.1)
    _write_retrieval(run_dir, '{"key": 0, "retrieved": [10, 11], "targets": "<i10>"}\n')
  text = _report_beside_pop(tmp_path, "--report_all_runs")
  section = text.split("Top-10 lists of the 1 test users")[1].split("Runs:")[0]
  assert 0 < section.index("| rec_only |") < section.index("| rec_mim |")


def test_report_tests_each_mixture_against_rec_only_on_the_same_users(tmp_path):
  # User 0's held-out item is 10: rec_mim's list [10, 11] hits, rec_only's [12, 13] does not.
  for mixture, items, recall10 in (("rec_only", [12, 13], 0.0), ("rec_mim", [10, 11], 1.0)):
    run_dir = fakes.write_run(tmp_path / "runs", fakes.spec(mixture=mixture), recall10)
    _write_retrieval(run_dir, f'{{"key": 0, "retrieved": {items}, "targets": "<i10>"}}\n')
  text = _report_beside_pop(tmp_path, "--report_all_runs")
  section = text.split("Paired test on the same users")[1].split("Runs:")[0]
  assert "| rec_mim vs rec_only | 0 | 1 | 1.0000 | 0.0000 | 1 | 0 | p = 1.00 |" in section
  # Pop ranks user 0's held-out item first (fakes.write_baseline): both hit.
  assert "| rec_mim vs *Pop* | 0 | 1 | 1.0000 | 1.0000 | 0 | 0 | p = 1.00 |" in section


def test_failed_run_still_writes_the_report_and_exits_1(tmp_path, monkeypatch):
  fakes.write_run(tmp_path / "runs", fakes.spec(), 0.1)
  calls = []

  def fake_run_one(spec, runs_dir, **kwargs):
    calls.append(spec.mixture)
    if spec.mixture == "rec_mim":
      raise runner.CommandFailed("exit status 1: python -m rec_t5x.train ...")
    return fakes.record(spec, 0.1)

  monkeypatch.setattr(runner, "run_one", fake_run_one)
  results = tmp_path / "results.md"
  status = driver.main(["--grid", "smoke", "--runs_dir", str(tmp_path / "runs"), "--results",
                        str(results), "--plots_dir", str(tmp_path / "plots"), "--baselines_dir",
                        str(tmp_path / "baselines")])
  assert status == 1 and calls == ["rec_only", "rec_mim"]
  assert "from 1 of 2 complete runs" in results.read_text()


def test_tuning_report_on_validation_collects_every_run_of_the_split(tmp_path):
  runs = tmp_path / "runs"
  fakes.write_run(runs, fakes.spec(eval_split="validation"), 0.1)
  fakes.write_run(runs, fakes.spec(dataset="ml100k_atomic", eval_split="validation"), 0.3)
  fakes.write_run(runs, fakes.spec(gin_bindings=("LEARNING_RATE=0.01",), eval_split="validation"),
                  0.2)
  fakes.write_run(runs, fakes.spec(), 0.9)  # a test record: never in a tuning report
  fakes.write_baseline(tmp_path / "baselines", "ml100k", "sasrec", 0.17)
  tuning = tmp_path / "docs" / "tuning.md"
  status = driver.main(["--grid", "smoke", "--mixtures", "rec_only", "--eval_split", "validation",
                        "--runs_dir", str(runs), "--results", str(tuning), "--plots_dir",
                        str(tmp_path / "docs" / "tuning"), "--baselines_dir",
                        str(tmp_path / "baselines"), "--report_only", "--report_all_runs"])
  assert status == 0
  text = tuning.read_text()
  assert text.startswith("# Tuning on the validation split")
  assert "from 3 complete runs" in text and "VALIDATION split" in text
  assert "### ML-100K (atomic item IDs) / tiny" in text and "### ML-100K / tiny" in text
  assert "extra bindings `LEARNING_RATE=0.01`" in text
  assert "ML-100K / tiny (4 steps x batch 2, `LEARNING_RATE=0.01`): only rec_only" in text
  assert "only rec_only was run: validation R@10 rec_only 0.3000 (n=1)" in text
  assert "baselines (validation R@10): SASRec 0.1800" in text  # the baseline's validation number
  assert "0.9000" not in text
  assert (tmp_path / "docs" / "tuning" / "recall_at_10.png").stat().st_size > 0


def test_report_of_all_runs_leaves_out_runs_of_an_earlier_training_revision(tmp_path, monkeypatch,
                                                                            capsys):
  old_dir = fakes.write_run(tmp_path / "runs", fakes.spec(mixture="rec_mim"), 0.9)
  monkeypatch.setattr(grid_lib, "TRAINING_REVISION", 2)
  fakes.write_run(tmp_path / "runs", fakes.spec(mixture="rec_only"), 0.1)
  results = tmp_path / "results.md"
  assert driver.main(["--grid", "smoke", "--runs_dir", str(tmp_path / "runs"), "--results",
                      str(results), "--plots_dir", str(tmp_path / "plots"), "--baselines_dir",
                      str(tmp_path / "baselines"), "--report_only", "--report_all_runs"]) == 0
  text = results.read_text()
  assert "from 1 complete run. " in text and "only rec_only was run" in text
  assert "1 run trained under an earlier training revision is left out." in text
  assert f"earlier training revision (key {old_dir.name[-10:]} is no longer its spec's): " in (
      capsys.readouterr().out)


def test_warns_when_run_in_one_checkout_with_the_package_of_another(tmp_path):
  installed, clone = tmp_path / "main", tmp_path / "clone"
  for root in (installed, clone):
    (root / ".git").mkdir(parents=True)
    (root / "docs").mkdir()
  assert driver.checkout_root(clone / "docs") == clone.resolve()
  assert driver.foreign_checkout_warning(installed / "docs", installed) is None
  warning = driver.foreign_checkout_warning(clone / "docs", installed)
  assert f"PYTHONPATH={clone.resolve()}" in warning and str(installed) in warning
  # Outside any checkout (e.g. a scratch folder) there is nothing to confuse.
  (tmp_path / "scratch").mkdir()
  assert driver.checkout_root(tmp_path / "scratch") is None
  assert driver.foreign_checkout_warning(tmp_path / "scratch", installed) is None
  # The repository the tests run from imports its own package: no warning.
  assert driver.foreign_checkout_warning(grid_lib.REPO_ROOT) is None
