"""Tests for rec_t5x.experiments.paired: per-user hits and McNemar's exact test."""
import json

import pytest
from scipy import stats as scipy_stats

from rec_t5x.experiments import baselines as baselines_lib
from rec_t5x.experiments import commands
from rec_t5x.experiments import paired
from rec_t5x.prompts import keys
from tests.experiments import fakes


def _write(run_dir, task, examples):
  path = commands.eval_dir(run_dir, "test") / "predictions" / f"rec_t5x.ml100k.{task}.jsonl"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(json.dumps(e) + "\n" for e in examples))
  return path


def _run(run_dir, lists, targets, *, targets_in="retrieval"):
  """Retrieval predictions of {user: list}; held-out items in the retrieval or ranking file."""
  retrieval = [{"key": keys.encode_key(u, 3), "retrieved": items} for u, items in lists.items()]
  if targets_in == "retrieval":
    for example, user in zip(retrieval, lists):
      example["targets"] = f"<i{targets[user]}>"
  else:
    _write(run_dir, "ranking", [{"key": keys.encode_key(u, 3), "ranked": [t, 99],
                                 "targets": f"<i{t}>"} for u, t in targets.items()])
  _write(run_dir, "retrieval", retrieval)
  return run_dir


def test_compare_counts_discordant_users_and_matches_the_binomial_test():
  first = {u: u < 30 for u in range(100)}  # users 0-29 hit
  second = {u: 20 <= u < 40 for u in range(100)}  # users 20-39 hit
  result = paired.compare(first, second)
  assert (result.users, result.only_first, result.only_second) == (100, 20, 10)
  assert result.recall_first == pytest.approx(0.30)
  assert result.recall_second == pytest.approx(0.20)
  assert result.p_value == pytest.approx(scipy_stats.binomtest(20, 30, 0.5).pvalue)
  assert paired.compare(second, first).p_value == pytest.approx(result.p_value)
  assert paired.compare(first, first).p_value == 1.0  # no discordant user


def test_compare_uses_only_shared_users_and_refuses_disjoint_ones():
  result = paired.compare({0: True, 1: False, 2: True}, {1: True, 2: True, 7: False})
  assert (result.users, result.only_first, result.only_second) == (2, 0, 1)
  with pytest.raises(ValueError, match="share no user"):
    paired.compare({0: True}, {1: True})


@pytest.mark.parametrize("targets_in", ["retrieval", "ranking"])
def test_run_hits_from_either_file_cut_at_k(tmp_path, targets_in):
  run = _run(tmp_path / "run", {0: [10, 11, 12], 1: [13, 14, 15], 2: [16, 17, 18]},
             {0: 12, 1: 13, 2: 30}, targets_in=targets_in)
  assert paired.run_hits(run, k=3) == {0: True, 1: True, 2: False}
  assert paired.run_hits(run, k=2) == {0: False, 1: True, 2: False}


def test_run_hits_refuses_users_without_a_held_out_item(tmp_path):
  run = _run(tmp_path / "run", {0: [10], 1: [11]}, {0: 10}, targets_in="ranking")
  with pytest.raises(ValueError, match="no held-out item for 1 users"):
    paired.run_hits(run)
  bad = tmp_path / "bad"
  _write(bad, "retrieval", [{"key": keys.encode_key(0, 0), "retrieved": [1], "targets": "a b"}])
  with pytest.raises(ValueError, match=r"retrieval.jsonl:1: expected .*'a b' is not one item ID"):
    paired.run_hits(bad)


def test_baseline_hits_by_hand(tmp_path):
  path = fakes.write_baseline(tmp_path, "ml100k", "sasrec", 0.1)  # ranks 1, 12, 3 of users 0-2
  assert paired.baseline_hits(path) == {0: True, 1: False, 2: True}
  assert paired.baseline_hits(path, {1, 2}, k=2) == {1: False, 2: False}
  with pytest.raises(ValueError, match="no test rank for 1 decoded users"):
    paired.baseline_hits(path, {0, 5})


def _record(mixture, seed, run_dir, recall10):
  return {"spec": {"mixture": mixture, "seed": seed}, "run_dir": str(run_dir),
          "metrics": fakes.metrics(recall10)}


def test_setting_lines_against_rec_only_of_the_same_seed_and_the_strongest_baseline(tmp_path):
  for model, recall in (("sasrec", 0.3), ("pop", 0.1)):
    fakes.write_baseline(tmp_path / "baselines", "ml100k", model, recall)
  baselines = {m: baselines_lib.read(tmp_path / "baselines", "ml100k", m)
               for m in ("sasrec", "pop")}
  # Users 0-2; held-out items 10, 11, 12; SASRec and Pop hit users 0 and 2 (fakes.write_baseline).
  targets = {0: 10, 1: 11, 2: 12}
  only = _run(tmp_path / "only0", {0: [10], 1: [1], 2: [1]}, targets)  # hits user 0
  mim0 = _run(tmp_path / "mim0", {0: [10], 1: [11], 2: [12]}, targets)  # hits all
  mim1 = _run(tmp_path / "mim1", {0: [1], 1: [11], 2: [1]}, targets, targets_in="ranking")
  runs = {"rec_only": [_record("rec_only", 0, only, 1 / 3)],
          "rec_mim": [_record("rec_mim", 0, mim0, 1.0), _record("rec_mim", 1, mim1, 1 / 3)]}
  lines = paired.setting_lines(runs, baselines)
  table = [line for line in lines if line.startswith("| rec_mim vs")]
  # rec_mim seed 1 has no rec_only run of seed 1; rec_mim (mean 2/3) is the best mixture.
  assert table[0] == "| rec_mim vs rec_only | 0 | 3 | 1.0000 | 0.3333 | 2 | 0 | p = 0.50 |"
  assert table[1] == "| rec_mim vs *SASRec* | 0 | 3 | 1.0000 | 0.6667 | 1 | 0 | p = 1.00 |"
  assert table[2] == "| rec_mim vs *SASRec* | 1 | 3 | 0.3333 | 0.6667 | 1 | 2 | p = 1.00 |"
  assert len(table) == 3
  assert "does not measure seed-to-seed variation" in lines[0]


def test_setting_lines_leaves_out_a_run_whose_recall_does_not_match_its_record(tmp_path):
  targets = {0: 10, 1: 11}
  only = _run(tmp_path / "only", {0: [10], 1: [1]}, targets)
  mim = _run(tmp_path / "mim", {0: [10], 1: [11]}, targets)
  runs = {"rec_only": [_record("rec_only", 0, only, 0.5)],
          "rec_mim": [_record("rec_mim", 0, mim, 0.25)]}  # recomputed: 1.0
  lines = paired.setting_lines(runs, {})
  assert lines == ["Paired test: nothing to compare. Left out: rec_mim seed 0: Recall@10 from its "
                   "predictions is 1.0000, but the run recorded 0.2500."]
  assert paired.setting_lines({"rec_only": [_record("rec_only", 0, only, 0.5)]}, {}) == []
