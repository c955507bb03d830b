"""Tests for rec_t5x.experiments.baselines: read back, missing -> None, run only what is missing."""
import pytest

from rec_t5x.experiments import baselines
from tests.experiments import fakes


def test_read_present_and_missing(tmp_path):
  fakes.write_baseline(tmp_path, "ml100k", "bpr_mf", 0.1273)
  record = baselines.read(tmp_path, "ml100k", "bpr_mf")
  assert record["name"] == "BPR-MF" and record["test"]["recall@10"] == 0.1273
  assert (record["stop_reason"], record["best_epoch"], record["epochs"]) == ("patience", 3, 8)
  assert baselines.read(tmp_path, "ml100k", "sasrec") is None
  (tmp_path / "ml100k" / "pop").mkdir(parents=True)
  (tmp_path / "ml100k" / "pop" / "metrics.json").write_text("{}")  # Incomplete output.
  assert baselines.read(tmp_path, "ml100k", "pop") is None
  everything = baselines.read_all(tmp_path, ["ml100k", "ml1m"])
  assert set(everything["ml1m"]) == set(baselines.MODELS)
  assert all(v is None for v in everything["ml1m"].values())


def test_item_id_variants_share_the_base_datasets_baselines(tmp_path):
  fakes.write_baseline(tmp_path, "ml100k", "sasrec", 0.1771)
  record = baselines.read(tmp_path, "ml100k_atomic", "sasrec")
  assert record["test"]["recall@10"] == 0.1771
  assert record["validation"]["recall@10"] == pytest.approx(0.1871)
  calls = []
  baselines.run_missing(tmp_path, ["ml1m", "ml1m_atomic"], 420, models=("pop",),
                        executor=lambda c, env, log_path: calls.append(c), log=lambda m: None)
  assert [c[3] for c in calls] == ["--dataset=ml1m"]  # once, for the base dataset


def test_run_missing_runs_only_missing_with_the_cap(tmp_path):
  fakes.write_baseline(tmp_path, "ml100k", "pop", 0.0859)
  calls = []
  ran = baselines.run_missing(tmp_path, ["ml100k"], 420, models=("pop", "sasrec"),
                              executor=lambda c, env, log_path: calls.append((c, log_path)),
                              log=lambda m: None)
  assert [c for c, _ in calls] == ran
  (command, log_path), = calls
  assert command[1:] == ["-m", "rec_t5x.baselines.run", "--dataset=ml100k", "--model=sasrec",
                         "--max_train_seconds=420", f"--output_dir={tmp_path}"]
  assert log_path == tmp_path / "ml100k" / "sasrec.experiment.log"


def test_command_rejects_a_non_positive_cap(tmp_path):
  with pytest.raises(ValueError, match="max_train_seconds=0"):
    baselines.command("ml100k", "pop", 0, tmp_path)
