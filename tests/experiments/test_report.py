"""Tests for rec_t5x.experiments.report: Markdown from fake run.json files, Discussion kept."""
from rec_t5x.experiments import aggregate
from rec_t5x.experiments import baselines as baselines_lib
from rec_t5x.experiments import grid as grid_lib
from rec_t5x.experiments import report
from rec_t5x.experiments import runner
from tests.experiments import fakes


def _records(tmp_path):
  dirs = [fakes.write_run(tmp_path / "runs", fakes.spec(mixture=m, seed=s), v)
          for m, values in {"rec_only": [0.1, 0.2], "rec_mim": [0.3, 0.5]}.items()
          for s, v in enumerate(values)]
  return runner.load_records(dirs)


def _render(records, baselines):
  return report.render(records, baselines, command="python scripts/run_experiment.py --grid smoke",
                       generated="2026-11-26T12:00:00+00:00", planned=5,
                       plots=[("Recall@10", "results/recall_at_10.png")])


def test_report_tables_headline_and_missing_baselines(tmp_path):
  records = _records(tmp_path)
  baselines = baselines_lib.read_all(tmp_path / "no_baselines", ["ml100k"])
  text = _render(records, baselines)
  assert "Command: `python scripts/run_experiment.py --grid smoke`" in text
  assert "from 4 of 5 complete runs" in text
  assert "Machine: 2 CPUs (Test CPU), Linux-test" in text
  assert ("- ML-100K / tiny (4 steps x batch 2): best mixture rec_mim: test R@10 0.4000 ± 0.1414 "
          "(n=2) vs rec_only 0.1500 ± 0.0707 (n=2), relative gain +166.7%") in text
  assert "baselines (test R@10): baselines not run." in text
  assert ("| rec_only | 2 | 0.0750 ± 0.0354 | 0.1500 ± 0.0707 | 0.0500 ± 0.0236 | "
          "0.0500 ± 0.0000 | 0.2500 ± 0.0000 | 1.5000 ± 0.0000 | 1.1000 ± 0.0000 | "
          "(reference) |") in text
  assert "| rec_mim | 2 | " in text and "| +166.7% (p = 0.20) |" in text
  assert ("| *SASRec* (baseline) | – | not run | not run | not run | – | – | – | – | – |"
          in text)
  assert "Baselines: not run" in text
  assert "| rec_mim | 1 | 4 | 1m05s | 7s | 3.0000 | 2026-11-26T10:00:00+00:00 |" in text
  # No "code" in these records (as in runs recorded before it was kept): the commit is unknown.
  assert f"| `{fakes.spec(mixture='rec_mim', seed=1).key()}` | – |" in text
  records[0]["code"] = {"commit": "0123456789abcdef", "dirty": True}
  assert f"| `{fakes.spec(mixture='rec_only', seed=0).key()}` | 0123456+ |" in _render(
      records, baselines)
  assert "(requested: 4): retrieval 4, ranking 4, rating 4." in text
  assert "![Recall@10](results/recall_at_10.png)" in text
  assert "{" not in text.split("## Headline")[1].split("## Setup")[0]  # No template leftovers.


def test_report_with_baselines_side_by_side(tmp_path):
  root = tmp_path / "baselines"
  fakes.write_baseline(root, "ml100k", "sasrec", 0.1780)
  fakes.write_baseline(root, "ml100k", "pop", 0.0859)
  text = _render(_records(tmp_path), baselines_lib.read_all(root, ["ml100k"]))
  assert ("| *SASRec* (baseline) | 1 | 0.0890 | 0.1780 | 0.0890 | – | – | – | – | – |"
          in text)
  assert "| *LightGCN* (baseline) | – | not run |" in text
  assert "baselines (test R@10): SASRec 0.1780, Pop 0.0859." in text
  assert "Not run: BPR-MF, LightGCN." in text
  assert "SASRec: patience, best epoch 3/8" in text


def test_runs_from_two_machines_are_numbered_by_their_first_run(tmp_path):
  records = _records(tmp_path)
  assert "| machine |" not in _render(records, {})  # One machine: no column.
  # The later machine's records come first in the list: numbering follows the dates.
  for record in records[:2]:
    record["machine"] = {"nproc": 2, "cpu": "Test CPU", "platform": "Linux-later"}
    record["date"] = "2026-11-27T10:00:00+00:00"
  text = _render(records, {})
  assert ("Machine: M1 = 2 CPUs (Test CPU), Linux-test (2 runs); "
          "M2 = 2 CPUs (Test CPU), Linux-later (2 runs);") in text
  assert "| run | commit | machine |" in text
  only_key = fakes.spec(mixture="rec_only", seed=0).key()
  mim_key = fakes.spec(mixture="rec_mim", seed=0).key()
  assert f"| `{only_key}` | – | M2 |" in text and f"| `{mim_key}` | – | M1 |" in text
  assert report.machine_labels([]) == {}
  # A machine with one run is counted in the singular.
  records[0]["machine"] = {"nproc": 2, "cpu": "Other CPU", "platform": "Linux-later"}
  assert "M2 = 2 CPUs (Other CPU), Linux-later (1 run);" in _render(records, {})


def test_headline_extra_is_appended_to_each_settings_headline(tmp_path):
  records = _records(tmp_path)
  baselines = baselines_lib.read_all(tmp_path / "no_baselines", ["ml100k"])
  text = report.render(records, baselines, command="c", generated="g",
                       headline_extra=lambda group: f"Note on {group.title}.")
  headline = text.split("## Headline")[1].split("## Setup")[0]
  assert "baselines (test R@10): baselines not run. Note on ML-100K / tiny.\n" in headline
  quiet = report.render(records, baselines, command="c", generated="g",
                        headline_extra=lambda group: "")
  assert "baselines not run.\n" in quiet.split("## Setup")[0]


def test_no_finished_runs():
  text = report.render([], {}, command="c", generated="g")
  assert "No run has finished yet." in text and "## Results" in text


def test_write_adds_a_marked_discussion_then_preserves_it(tmp_path):
  path = tmp_path / "docs" / "results.md"
  report.write(path, "# Report v1\n")
  first = path.read_text()
  assert first.startswith("# Report v1\n\n## Discussion\n")
  assert "Written by hand" in first
  path.write_text(first.replace("# Report v1", "# stale")
                  + "\nMIM helps a little (hand-written).\n")
  report.write(path, "# Report v2\n")
  second = path.read_text()
  assert second.startswith("# Report v2\n\n## Discussion\n")
  assert second.endswith("\nMIM helps a little (hand-written).\n")
  assert "stale" not in second


def test_extract_discussion():
  assert report.extract_discussion("# A\n## Discussionish\nx\n") is None
  assert report.extract_discussion("# A\n## Discussion\nkeep\n### more\n") == (
      "## Discussion\nkeep\n### more\n")


def test_titles_section_pairs_each_setting_with_its_notitles_variant(tmp_path):
  values = {("ml100k_atomic", "rec_only"): [0.1, 0.2], ("ml100k_atomic_notitles", "rec_only"): [0.3],
            ("ml100k_atomic", "rec_mim"): [0.4], ("ml1m_atomic_notitles", "rec_only"): [0.5],
            ("ml100k_atomic_notitles", "rec_bpr"): [0.6]}
  dirs = [fakes.write_run(tmp_path / "runs", fakes.spec(dataset=d, mixture=m, seed=s), v)
          for (d, m), vs in values.items() for s, v in enumerate(vs)]
  # Same dataset pair, other budget: a setting of its own, with no counterpart.
  dirs.append(fakes.write_run(tmp_path / "runs", fakes.spec(dataset="ml100k_atomic_notitles",
                                                            train_steps=6), 0.9))
  text = _render(runner.load_records(dirs),
                 baselines_lib.read_all(tmp_path / "none", ["ml100k", "ml1m"]))
  section = text.split("### Item text: with and without titles")[1].split("\n#")[0]
  rows = [line for line in section.splitlines() if line.startswith("| ML")]
  # Only rec_only ran both ways on the same setting; ML-1M has no titled run to compare with.
  assert rows == ["| ML-100K (atomic item IDs) / tiny | rec_only | 2 / 1 | 0.1500 ± 0.0707 / "
                  "0.3000 | 0.0500 ± 0.0000 / 0.0500 | 1.1000 ± 0.0000 / 1.1000 | +100.0% |"]
  assert "### ML-100K (atomic item IDs, no titles) / tiny" in text


def test_titles_section_is_left_out_without_pairs(tmp_path):
  assert "Item text" not in _render(_records(tmp_path), {})


def test_rates_section_compares_each_rate_variant_with_its_default_rate_setting(tmp_path):
  base = ("LEARNING_RATE=0.01",)
  thirds = base + ("seqio_tasks.mixing_rates.mim=0.333", "seqio_tasks.mixing_rates.bpr=0.333")
  values = {(base, "rec_only"): [0.1, 0.2], (base, "rec_all"): [0.2], (thirds, "rec_all"): [0.3]}
  dirs = [fakes.write_run(tmp_path / "runs", fakes.spec(mixture=m, seed=s, gin_bindings=g), v)
          for (g, m), vs in values.items() for s, v in enumerate(vs)]
  # Rates on another setting (no default-rate runs of it): no row.
  dirs.append(fakes.write_run(tmp_path / "runs", fakes.spec(
      mixture="rec_mim", train_steps=6, gin_bindings=("seqio_tasks.mixing_rates.mim=3",)), 0.9))
  text = _render(runner.load_records(dirs), {})
  section = text.split("### Mixing rates")[1].split("\n#")[0]
  rows = [line for line in section.splitlines() if line.startswith("| ML")]
  assert rows == ["| ML-100K / tiny | `mim=0.333` `bpr=0.333` | rec_all | 1 | 0.3000 | 0.0500 | "
                  "1.1000 | +50.0% | +100.0% |"]
  headline = [l for l in text.split("## Setup")[0].splitlines() if "mim=0.333" in l]
  assert len(headline) == 1 and headline[0].endswith(
      "Against the setting at default rates, rec_all at mim=0.333 bpr=0.333 (test R@10, Welch's "
      "p): rec_only at default rates (0.1500 ± 0.0707, n=2) +100.0%; rec_all at default rates "
      '(0.2000, n=1) +50.0% (all mixtures under "Mixing rates").')
  assert "Mixing rates mim=3" not in text


def test_rate_variant_headline_tests_the_best_mixture_against_both_references():
  rate = ("seqio_tasks.mixing_rates.mim=9",)
  values = {((), "rec_only"): [0.1, 0.2, 0.15], ((), "rec_mim"): [0.2, 0.25],
            (rate, "rec_mim"): [0.3, 0.35], (rate, "rec_all"): [0.4]}
  records = [fakes.record(fakes.spec(mixture=m, seed=s, gin_bindings=g), v)
             for (g, m), vs in values.items() for s, v in enumerate(vs)]
  (variant,) = aggregate.rate_variants(aggregate.group_records(records))
  p_only = aggregate.welch_p_value([0.3, 0.35], [0.1, 0.2, 0.15])
  p_mim = aggregate.welch_p_value([0.3, 0.35], [0.2, 0.25])
  # rec_all's one seed has the higher mean; the best mixture is the higher mean all the same.
  text = report.rate_variant_headline(variant)
  assert text.startswith("Against the setting at default rates, rec_all at mim=9")
  assert "rec_only at default rates (0.1500 ± 0.0500, n=3) +166.7% (all mixtures" in text
  # rec_all has no run at default rates, so only rec_only is a reference.
  assert "rec_all at default rates" not in text
  variant.variant.runs.pop("rec_all")
  text = report.rate_variant_headline(variant)
  assert (f"rec_only at default rates (0.1500 ± 0.0500, n=3) +116.7% "
          f"({aggregate.format_p_value(p_only)}); rec_mim at default rates (0.2250 ± 0.0354, n=2) "
          f"+44.4% ({aggregate.format_p_value(p_mim)})") in text


def test_rates_section_is_left_out_without_rate_bindings(tmp_path):
  assert "### Mixing rates" not in _render(_records(tmp_path), {})


def test_baseline_results_root_is_shown_relative_to_the_repository_when_inside_it(tmp_path):
  in_ledger = grid_lib.REPO_ROOT / "docs" / "results" / "runs" / "baselines" / "ml100k" / "pop"
  assert report._shown_path(str(in_ledger)) == "docs/results/runs/baselines/ml100k"
  assert report._shown_path(str(tmp_path / "ml100k" / "pop")) == str(tmp_path / "ml100k")


def test_budgets_section_compares_each_length_with_the_fewest_steps(tmp_path):
  values = {(4, "rec_only"): [0.1, 0.2], (4, "rec_mim"): [0.2, 0.4], (8, "rec_mim"): [0.5, 0.7]}
  dirs = [fakes.write_run(tmp_path / "runs", fakes.spec(
      mixture=m, seed=s, train_steps=n, gin_bindings=grid_lib.linear_decay_bindings(0.01, 1, n)), v)
          for (n, m), vs in values.items() for s, v in enumerate(vs)]
  text = _render(runner.load_records(dirs), {})
  section = text.split("### Training length")[1].split("\n#")[0]
  rows = [line for line in section.splitlines() if line.startswith("| ML")]
  assert rows == [
      "| ML-100K / tiny | 4 | rec_only | 2 | 1m05s | 0.1500 ± 0.0707 | 0.0500 ± 0.0000 | "
      "1.1000 ± 0.0000 | (reference) |",
      "| ML-100K / tiny | 4 | rec_mim | 2 | 1m05s | 0.3000 ± 0.1414 | 0.0500 ± 0.0000 | "
      "1.1000 ± 0.0000 | (reference) |",
      "| ML-100K / tiny | 8 | rec_mim | 2 | 1m05s | 0.6000 ± 0.1414 | 0.0500 ± 0.0000 | "
      "1.1000 ± 0.0000 | +100.0% (p = 0.17) |",
  ]
  headline = text.split("## Headline")[1].split("## Setup")[0]
  assert headline.count('The same setting at 4 steps: compared with it under "Training length".') == 1
  # Each length has its own section, and the headings say which is which.
  assert [line for line in text.splitlines() if line.startswith("### ML")] == [
      "### ML-100K / tiny / 4 steps", "### ML-100K / tiny / 8 steps"]
  # A mean over a run whose time includes a killed attempt's estimate is marked as the runs are.
  records = runner.load_records(dirs)
  records[-1]["train_seconds_estimated"] = True
  section = _render(records, {}).split("### Training length")[1].split("\n#")[0]
  assert "| ML-100K / tiny | 8 | rec_mim | 2 | ~1m05s |" in section
  assert "| ML-100K / tiny | 4 | rec_mim | 2 | 1m05s |" in section
  assert "Training length" not in _render(_records(tmp_path), {})
