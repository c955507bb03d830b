"""Tests for rec_t5x.experiments.retrieval_lists: coverage, popularity share and Pop overlap."""
import json

import numpy as np
import pytest

from rec_t5x.experiments import baselines as baselines_lib
from rec_t5x.experiments import commands
from rec_t5x.experiments import retrieval_lists
from rec_t5x.prompts import keys
from tests.experiments import fakes

POPULARITY = retrieval_lists.Popularity(public_ids=np.array([10, 11, 12, 13]),
                                        counts=np.array([5, 3, 1, 0]))


def _write_predictions(eval_dir, lists, task="rec_t5x.ml100k.retrieval"):
  path = eval_dir / "predictions" / f"{task}.jsonl"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(json.dumps({"index": i, "key": keys.encode_key(user, 0),
                                      "targets": "<i10>", "retrieved": items}) + "\n"
                          for i, (user, items) in enumerate(lists.items())))
  return path


def test_list_stats_by_hand():
  lists = {0: np.array([10, 12, 13]), 1: np.array([10, 11, 12])}  # cut to k=2
  pop = {0: np.array([10, 11]), 1: np.array([10, 11]), 2: np.array([10, 11])}
  stats = retrieval_lists.list_stats(lists, POPULARITY, pop, k=2, num_popular=1)
  assert stats.coverage == pytest.approx(3 / 4)  # items 10, 12, 11
  assert stats.popular_share == pytest.approx(2 / 4)  # item 10 in 2 of 4 slots
  assert stats.pop_overlap == pytest.approx((1 / 2 + 2 / 2) / 2)
  assert stats.num_lists == 2
  assert retrieval_lists.list_stats(lists, POPULARITY, k=2).pop_overlap is None
  assert retrieval_lists.list_stats(pop, POPULARITY, pop, k=2, num_popular=2) == (
      retrieval_lists.ListStats(coverage=0.5, popular_share=1.0, pop_overlap=1.0, num_lists=3))


def test_list_stats_refuses_users_without_a_pop_list():
  with pytest.raises(ValueError, match="1 users have no Pop list"):
    retrieval_lists.list_stats({7: np.array([10])}, POPULARITY, {0: np.array([10])})
  with pytest.raises(ValueError, match="no lists"):
    retrieval_lists.list_stats({}, POPULARITY)


def test_most_popular_breaks_ties_by_catalogue_order():
  popularity = retrieval_lists.Popularity(np.array([4, 5, 6]), np.array([1, 2, 2]))
  assert popularity.most_popular(1) == {5}
  with pytest.raises(ValueError, match="same length"):
    retrieval_lists.Popularity(np.array([1, 2]), np.array([1]))


def test_read_run_lists_decodes_users_from_keys(tmp_path):
  path = _write_predictions(tmp_path, {3: [12, 10], 0: [11]})
  lists = retrieval_lists.read_run_lists(path)
  assert sorted(lists) == [0, 3]
  np.testing.assert_array_equal(lists[3], [12, 10])
  assert retrieval_lists.find_predictions(tmp_path) == path
  assert retrieval_lists.find_predictions(tmp_path / "missing") is None


@pytest.mark.parametrize("line, message", [
    ('{"key": 0}\n', r"x\.jsonl:2: expected a JSON object"),
    ("not json\n", r"x\.jsonl:2: expected a JSON object"),
    ('{"key": 0, "retrieved": [11]}\n', r"x\.jsonl:2: user 0 appears twice"),
])
def test_read_run_lists_names_file_and_line(tmp_path, line, message):
  path = tmp_path / "x.jsonl"
  path.write_text('{"key": 0, "retrieved": [10]}\n' + line)
  with pytest.raises(ValueError, match=message):
    retrieval_lists.read_run_lists(path)


def test_setting_lines_runs_next_to_baselines(tmp_path):
  for model in ("pop", "sasrec"):
    fakes.write_baseline(tmp_path / "baselines", "ml100k", model, 0.1)
  baselines = baselines_lib.read_all(tmp_path / "baselines", ["ml100k"])["ml100k"]
  with_lists, without = tmp_path / "run0", tmp_path / "run1"
  _write_predictions(commands.eval_dir(with_lists), {0: [10, 13], 1: [12, 13]})
  ranking = commands.eval_dir(with_lists) / "predictions" / "rec_t5x.ml100k.ranking.jsonl"
  ranking.write_text('{"targets": "<i11>", "ranked": [11, 10]}\n'
                     '{"targets": "<i10>", "ranked": [12, 10]}\n')
  runs = {"rec_only": [{"spec": {"seed": 0}, "run_dir": str(with_lists)},
                       {"spec": {"seed": 1}, "run_dir": str(without)}]}
  lines = retrieval_lists.setting_lines(runs, baselines, k=2, num_popular=2)
  text = "\n".join(lines)
  assert "No predictions file: rec_only seed 1." in text
  # Pop (counts 10:9, 11:5, 12:2 in fakes.write_baseline) ranks 11 second of [11, 10], 10 first.
  assert "scores rank HR@1 0.5000 and HR@5 1.0000 on these users" in text
  # Coverage {10, 12, 13} / 4; popular items (10, 11) fill 1 of 4 slots; Pop overlap (1/2 + 1/2) / 2.
  assert "| rec_only | 1 | 0.750 | 0.250 | 0.500 |" in lines
  # Baselines are measured on the users the runs decoded (0 and 1): Pop's [10, 11], [10, 12].
  assert "| *Pop* (baseline) | 1 | 0.750 | 0.750 | 1.000 |" in lines
  assert lines[0].startswith("Top-2 lists of the 2 test users the T5 runs decoded (")
  assert "| *LightGCN* (baseline)" not in text  # not run: no row
  # The runs decoded users 0 and 1 of 3 (ranks 1 and 12 in fakes.write_baseline): R@2 = 1/2.
  assert ("On these 2 users the baselines score test R@2 Pop 0.5000, SASRec 0.5000 (the table "
          "above has them on every test user).") in text
  # Without any predictions the baselines are measured on all their users (10, 11 fill 4 of 6 slots).
  only_missing = retrieval_lists.setting_lines({"rec_only": runs["rec_only"][1:]}, baselines, k=2,
                                               num_popular=2)
  assert "| *Pop* (baseline) | 1 | 1.000 | 0.667 | 1.000 |" in only_missing
  no_pop = {**baselines, "pop": None}
  assert "not analysed" in retrieval_lists.setting_lines(runs, no_pop)[0]


def test_headline_note_puts_the_baselines_on_the_decoded_users(tmp_path):
  for model in ("pop", "sasrec"):
    fakes.write_baseline(tmp_path / "baselines", "ml100k", model, 0.1)
  baselines = baselines_lib.read_all(tmp_path / "baselines", ["ml100k"])["ml100k"]
  run0, run1 = tmp_path / "run0", tmp_path / "run1"
  _write_predictions(commands.eval_dir(run0), {0: [10, 13]})
  _write_predictions(commands.eval_dir(run1), {1: [12, 13]})
  runs = {"rec_only": [{"spec": {"seed": 0}, "run_dir": str(run0)}],
          "rec_mim": [{"spec": {"seed": 0}, "run_dir": str(run1)}]}
  assert retrieval_lists.decoded_users(runs) == {0, 1}
  # Users 0 and 1 of 3 have ranks 1 and 12 (fakes.write_baseline): R@10 = 1/2 for both models.
  assert retrieval_lists.headline_note(runs, baselines) == (
      "On the 2 test users the T5 runs decoded, the baselines score test R@10 Pop 0.5000, "
      "SASRec 0.5000.")
  # Every user decoded: the baselines' own numbers are already on the same users.
  _write_predictions(commands.eval_dir(tmp_path / "run2"), {0: [10], 1: [10], 2: [10]})
  every = {"rec_only": [{"spec": {"seed": 1}, "run_dir": str(tmp_path / "run2")}]}
  assert retrieval_lists.headline_note(every, baselines) == ""
  assert retrieval_lists.headline_note({"rec_only": [{"spec": {"seed": 2}}]}, baselines) == ""


def test_baseline_recall_on_users_by_hand(tmp_path):
  path = fakes.write_baseline(tmp_path, "ml100k", "sasrec", 0.1)
  assert retrieval_lists.baseline_recall_on_users(path, {0, 2}, k=2) == (0.5, 3)  # ranks 1, 3
  assert retrieval_lists.baseline_recall_on_users(path, {0, 1, 2}, k=10) == (pytest.approx(2 / 3), 3)
  with pytest.raises(ValueError, match=r"no test rank for 1 decoded users, e\.g\. \[7\]"):
    retrieval_lists.baseline_recall_on_users(path, {0, 7})


def test_pop_ranking_hits_orders_candidates_by_count_not_by_the_model(tmp_path):
  path = tmp_path / "rec_t5x.ml100k.ranking.jsonl"
  # Counts 10:5, 11:3, 12:1, 13:0. Pop ranks the target 11 second, 12 third, 10 first.
  path.write_text("".join(json.dumps({"targets": t, "ranked": r}) + "\n" for t, r in [
      ("<i11>", [13, 12, 11, 10]), ("12", [12, 11, 10, 13]), ("<i10>", [11, 10])]))
  hits = retrieval_lists.pop_ranking_hits(path, POPULARITY, cutoffs=(1, 2))
  assert hits == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3)}
  path.write_text('{"targets": "<i99>", "ranked": [10, 11]}\n')
  with pytest.raises(ValueError, match=r"ranking\.jsonl:1: expected 'targets' naming one of"):
    retrieval_lists.pop_ranking_hits(path, POPULARITY)
  path.write_text('{"targets": "<i10>", "ranked": [10, 77]}\n')
  with pytest.raises(ValueError, match="item ID 77 is not in the catalogue"):
    retrieval_lists.pop_ranking_hits(path, POPULARITY)
