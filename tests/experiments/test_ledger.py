"""Tests for rec_t5x.experiments.ledger: the report's committed copy of finished runs."""
import gzip

import numpy as np
import pytest

from rec_t5x.experiments import baselines as baselines_lib
from rec_t5x.experiments import commands
from rec_t5x.experiments import driver
from rec_t5x.experiments import ledger
from rec_t5x.experiments import runner
from tests.experiments import fakes

RETRIEVAL = ('{"key": 0, "retrieved": [10, 11], "targets": "<i10>"}\n'
             '{"key": 16777216, "retrieved": [12, 13], "targets": "<i12>"}\n')
PROMPT = ', "inputs": "Sequence of past interactions: <i3>; <i7>.", "retrieved_log_probs": [-1.5, -2]'
RANKING = ('{"key": 0, "ranked": [13, 10], "targets": "<i10>"}\n'
           '{"key": 16777216, "ranked": [12, 11], "targets": "<i12>"}\n')


def _run_with_predictions(runs_dir, spec, recall10):
  run_dir = fakes.write_run(runs_dir, spec, recall10)
  predictions = commands.eval_dir(run_dir, spec.eval_split) / "predictions"
  predictions.mkdir(parents=True)
  # What rec_t5x.eval writes besides the fields the report reads is left out of the ledger.
  (predictions / "rec_t5x.ml100k.retrieval.jsonl").write_text(RETRIEVAL.replace("}", PROMPT + "}"))
  (predictions / "rec_t5x.ml100k.ranking.jsonl").write_text(RANKING)
  (predictions / "rec_t5x.ml100k.rating.jsonl").write_text('{"key": 0}\n')  # not needed
  return run_dir


def test_export_mirrors_the_run_directory_and_rewrites_nothing_unchanged(tmp_path):
  spec = fakes.spec()
  run_dir = _run_with_predictions(tmp_path / "runs", spec, 0.1)
  (record,) = runner.load_records([run_dir], [spec])
  written = ledger.export(record, run_dir, tmp_path / "ledger")
  entry = spec.run_dir(tmp_path / "ledger")
  predictions = commands.eval_dir(entry) / "predictions"
  assert sorted(p.relative_to(entry).as_posix() for p in written) == [
      "run.json", "test_eval/predictions/rec_t5x.ml100k.ranking.jsonl.gz",
      "test_eval/predictions/rec_t5x.ml100k.retrieval.jsonl.gz"]
  assert gzip.decompress((predictions / "rec_t5x.ml100k.retrieval.jsonl.gz").read_bytes()
                         ).decode() == RETRIEVAL.replace(" ", "")
  stored = fakes.read(entry / "run.json")
  assert "run_dir" not in stored and stored["metrics"] == record["metrics"]
  before = {p: p.read_bytes() for p in entry.rglob("*") if p.is_file()}
  assert ledger.export(record, run_dir, tmp_path / "ledger") == []  # byte-identical: no rewrite
  assert {p: p.read_bytes() for p in entry.rglob("*") if p.is_file()} == before
  # A re-evaluated run (another record) replaces its copy.
  changed = dict(record, eval_seconds=9.0)
  assert ledger.export(changed, run_dir, tmp_path / "ledger") == [entry / "run.json"]


def test_export_refuses_an_unfinished_record(tmp_path):
  record = fakes.record(fakes.spec(), 0.1)
  record["status"] = "running"
  with pytest.raises(ValueError, match="not a complete run record"):
    ledger.export(record, tmp_path, tmp_path / "ledger")


def test_predictions_are_found_gzipped_but_not_twice(tmp_path):
  folder = tmp_path / "predictions"
  folder.mkdir()
  (folder / "t.retrieval.jsonl.gz").write_bytes(gzip.compress(RETRIEVAL.encode()))
  found = ledger.retrieval_lists.find_predictions(tmp_path)
  assert found.name == "t.retrieval.jsonl.gz"
  assert sorted(ledger.retrieval_lists.read_run_lists(found)) == [0, 1]
  (folder / "t.retrieval.jsonl").write_text(RETRIEVAL)
  with pytest.raises(ValueError, match="several"):
    ledger.retrieval_lists.find_predictions(tmp_path)


def test_merge_counts_a_run_once_and_prefers_the_run_directory():
  local = [dict(fakes.record(fakes.spec(), 0.1), run_dir="/runs/a")]
  archived = [dict(fakes.record(fakes.spec(), 0.1), run_dir="/ledger/a"),
              dict(fakes.record(fakes.spec(seed=1), 0.2), run_dir="/ledger/b")]
  merged = ledger.merge(local, archived)
  assert [r["run_dir"] for r in merged] == ["/runs/a", "/ledger/b"]
  validation = dict(fakes.record(fakes.spec(eval_split="validation"), 0.3), run_dir="/ledger/c")
  assert len(ledger.merge(local, [validation])) == 2  # another split is another record


def _report(tmp_path, runs_dir, results, *extra):
  return driver.main(["--grid", "smoke", "--runs_dir", str(runs_dir), "--results", str(results),
                      "--plots_dir", str(tmp_path / "docs" / "results"), "--baselines_dir",
                      str(tmp_path / "baselines"), "--report_only", "--report_all_runs", *extra])


def _above_discussion(text):
  """The generated part, less the lines that name when and from where it was generated."""
  lines = [line for line in text.split("## Discussion")[0].splitlines()
           if not line.startswith(("Generated ", "Baselines: one seed"))]
  return "\n".join(lines)


def test_a_fresh_clone_regenerates_the_same_report_from_the_ledger(tmp_path):
  runs = tmp_path / "runs"
  for mixture, value in (("rec_only", 0.1), ("rec_mim", 0.2)):
    _run_with_predictions(runs, fakes.spec(mixture=mixture), value)
  fakes.write_baseline(tmp_path / "baselines", "ml100k", "pop", 0.05)
  results = tmp_path / "docs" / "results.md"
  assert _report(tmp_path, runs, results) == 0
  first = results.read_text()
  assert "from 2 complete runs" in first
  assert "Run records: results/runs/ (the ledger, committed with this report), 2 of the 2 runs" in first
  assert (tmp_path / "docs" / "results" / "runs" / "ml100k" / "tiny" / "rec_mim").is_dir()
  # No run directories and no baseline results any more (another machine): the ledger alone
  # gives the same report, baselines, top-10 list statistics and Pop's ranking reference included.
  again = tmp_path / "docs" / "again.md"
  assert _report(tmp_path, tmp_path / "no_runs", again, "--baselines_dir",
                 str(tmp_path / "no_baselines")) == 0
  second = again.read_text()
  assert "0 of the 2 runs also in run directories" in second
  assert "| *Pop* (baseline) | 1 | 0.0250 | 0.0500 |" in second
  assert "| rec_only | 1 | 1.000 | 1.000 | 0.150 |" in second
  assert "Pop ordering the ranking task's candidates" in second
  assert f"`{tmp_path / 'docs' / 'results' / 'runs' / 'baselines' / 'ml100k'}`" in second
  assert _above_discussion(second) == _above_discussion(first)


def test_baselines_are_kept_cut_to_what_the_report_reads(tmp_path):
  fakes.write_baseline(tmp_path / "baselines", "ml100k", "pop", 0.05)
  results = baselines_lib.read_all(tmp_path / "baselines", ["ml100k_atomic"], ["pop", "sasrec"])
  assert results["ml100k_atomic"]["sasrec"] is None
  (written,) = ledger.export_baselines(results, tmp_path / "ledger")
  assert written == tmp_path / "ledger" / "baselines" / "ml100k" / "pop"
  with np.load(written / "topk.npz") as topk:
    assert sorted(topk.files) == ["test_full_ranks", "test_public_ids", "users",
                                  "validation_full_ranks", "validation_public_ids"]
  with np.load(written / "embeddings.npz") as embeddings:
    assert sorted(embeddings.files) == ["item_counts", "item_public_ids"]
  assert ledger.export_baselines(results, tmp_path / "ledger") == []  # same run: kept
  filled = ledger.fill_baselines(
      baselines_lib.read_all(tmp_path / "none", ["ml100k_atomic"], ["pop", "sasrec"]),
      tmp_path / "ledger")
  assert filled["ml100k_atomic"]["pop"]["test"] == results["ml100k_atomic"]["pop"]["test"]
  assert filled["ml100k_atomic"]["sasrec"] is None


def test_the_driver_skips_runs_the_ledger_holds_unless_asked_to_rerun(tmp_path, monkeypatch,
                                                                      capsys):
  ledger_dir = tmp_path / "ledger"
  fakes.write_run(ledger_dir, fakes.spec(), 0.1)  # smoke's rec_only, finished elsewhere
  calls = []

  def fake_run_one(spec, runs_dir, **kwargs):
    calls.append(spec.mixture)
    return fakes.write_run(runs_dir, spec, 0.2) and fakes.record(spec, 0.2)

  monkeypatch.setattr(runner, "run_one", fake_run_one)
  flags = ["--grid", "smoke", "--runs_dir", str(tmp_path / "runs"), "--results",
           str(tmp_path / "r.md"), "--plots_dir", str(tmp_path / "plots"), "--baselines_dir",
           str(tmp_path / "baselines"), "--ledger_dir", str(ledger_dir)]
  assert driver.main(flags) == 0
  assert calls == ["rec_mim"]
  assert "from 2 of 2 complete runs" in (tmp_path / "r.md").read_text()
  assert ledger.holds(fakes.spec(mixture="rec_mim"), ledger_dir)  # exported when it finished
  # The closing line counts what the runs exported, not only the final sweep (which finds it done).
  assert f"ledger {ledger_dir.resolve()}: 1 files or baseline folders written" in (
      capsys.readouterr().out)
  assert driver.main([*flags, "--rerun_recorded"]) == 0
  assert calls == ["rec_mim", "rec_only", "rec_mim"]


def test_dry_run_names_runs_held_by_the_ledger(tmp_path, capsys):
  fakes.write_run(tmp_path / "ledger", fakes.spec(), 0.1)
  assert driver.main(["--grid", "smoke", "--runs_dir", str(tmp_path / "runs"), "--ledger_dir",
                      str(tmp_path / "ledger"), "--dry_run"]) == 0
  out = capsys.readouterr().out
  assert "done (ledger)" in out and "new" in out


def test_export_names_the_line_of_a_malformed_predictions_file(tmp_path):
  spec = fakes.spec()
  run_dir = _run_with_predictions(tmp_path / "runs", spec, 0.1)
  retrieval = commands.eval_dir(run_dir) / "predictions" / "rec_t5x.ml100k.retrieval.jsonl"
  retrieval.write_text('{"key": 0, "retrieved": [10], "targets": "<i10>"}\n\n{"key": 1}\n')
  (record,) = runner.load_records([run_dir], [spec])
  with pytest.raises(ValueError, match=r"retrieval.jsonl:3: expected a JSON object with fields "
                                       r"key, retrieved, targets"):
    ledger.export(record, run_dir, tmp_path / "ledger")
