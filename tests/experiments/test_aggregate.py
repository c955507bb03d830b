"""Tests for rec_t5x.experiments.aggregate against hand-computed statistics."""
import itertools
import math

import pytest
from scipy import special

from rec_t5x.experiments import aggregate
from rec_t5x.experiments import grid as grid_lib
from tests.experiments import fakes


def _records(values_by_mixture, **overrides):
  return [fakes.record(fakes.spec(mixture=m, seed=i, **overrides), v)
          for m, values in values_by_mixture.items() for i, v in enumerate(values)]


def test_mean_and_sample_std_by_hand():
  stat = aggregate.mean_std([0.1, 0.2, 0.3])
  assert stat.n == 3
  assert stat.mean == pytest.approx(0.2)
  assert stat.std == pytest.approx(0.1)  # sqrt((0.01 + 0 + 0.01) / 2)
  two = aggregate.mean_std([1.0, 4.0])
  assert two.mean == 2.5 and two.std == pytest.approx(math.sqrt(4.5))
  assert aggregate.mean_std([0.5]) == aggregate.Stat(0.5, None, 1)
  assert aggregate.mean_std([]) is None
  assert aggregate.mean_std([float("nan"), None, 2.0]) == aggregate.Stat(2.0, None, 1)


def test_group_statistics_and_relative_gain():
  records = _records({"rec_mim": [0.30, 0.20, 0.25], "rec_only": [0.10, 0.20, 0.30]})
  (group,) = aggregate.group_records(records)
  assert group.mixtures == ["rec_only", "rec_mim"]  # Report order, rec_only first.
  r10 = group.stat("rec_mim", aggregate.RECALL_10)
  assert (r10.mean, r10.n) == (pytest.approx(0.25), 3)
  assert r10.std == pytest.approx(0.05)
  assert group.gain("rec_mim") == pytest.approx(25.0)  # (0.25 - 0.20) / 0.20
  assert group.gain("rec_only") == pytest.approx(0.0)
  r5 = group.stat("rec_only", aggregate.COLUMNS[0])
  assert r5.mean == pytest.approx(0.1)  # fakes: recall@5 = recall@10 / 2
  assert group.stat("rec_only", aggregate.COLUMNS[-1]).mean == pytest.approx(1.1)
  assert group.test_examples() == {"retrieval": [4], "ranking": [4], "rating": [4]}


def test_groups_split_by_setting():
  records = (_records({"rec_only": [0.1]}) + _records({"rec_only": [0.2]}, train_steps=8)
             + _records({"rec_only": [0.3]}, model="small"))
  groups = aggregate.group_records(records)
  assert [(g.setting["model"], g.setting["train_steps"]) for g in groups] == [
      ("tiny", 4), ("tiny", 8), ("small", 4)]
  assert [g.title for g in groups] == ["ML-100K / tiny", "ML-100K / tiny", "ML-100K / small"]


def test_groups_order_a_length_and_rate_sweep_by_steps_then_rate_value():
  rate = "seqio_tasks.mixing_rates.mim="
  records = (_records({"rec_mim": [0.1]}, gin_bindings=(rate + "9",))
             + _records({"rec_only": [0.1]}, model="small")
             + _records({"rec_mim": [0.1]}, train_steps=8)
             + _records({"rec_mim": [0.1]}, gin_bindings=(rate + "3",))
             + _records({"rec_mim": [0.1]}, gin_bindings=(rate + "0.5",))
             + _records({"rec_only": [0.1]}))
  groups = aggregate.group_records(records)
  assert [(g.setting["model"], g.setting["train_steps"], g.title) for g in groups] == [
      ("tiny", 4, "ML-100K / tiny"), ("tiny", 4, "ML-100K / tiny / rates mim=0.5"),
      ("tiny", 4, "ML-100K / tiny / rates mim=3"), ("tiny", 4, "ML-100K / tiny / rates mim=9"),
      ("tiny", 8, "ML-100K / tiny"), ("small", 4, "ML-100K / small")]


def test_section_titles_tell_apart_settings_of_one_title():
  rate = "seqio_tasks.mixing_rates.mim="
  records = (_records({"rec_only": [0.1]}) + _records({"rec_only": [0.1]}, train_steps=8)
             + _records({"rec_only": [0.1]}, train_steps=8, batch_size=16)
             + _records({"rec_only": [0.1]}, gin_bindings=(rate + "3",))
             + _records({"rec_only": [0.1]}, model="small")
             + _records({"rec_only": [0.1]}, model="small", gin_bindings=("LEARNING_RATE=0.1",)))
  groups = aggregate.group_records(records)
  assert aggregate.section_titles(groups) == [
      "ML-100K / tiny / 4 steps", "ML-100K / tiny / rates mim=3", "ML-100K / tiny / 8 steps / batch 2",
      "ML-100K / tiny / 8 steps / batch 16", "ML-100K / small (1 of 2)", "ML-100K / small (2 of 2)"]
  assert aggregate.section_titles(groups[:2]) == ["ML-100K / tiny", "ML-100K / tiny / rates mim=3"]
  assert aggregate.section_titles([]) == []


def test_relative_gain_edge_cases():
  assert aggregate.relative_gain(0.3, 0.2) == pytest.approx(50.0)
  assert aggregate.relative_gain(0.1, 0.0) is None
  assert aggregate.relative_gain(None, 0.2) is None


def _welch_p_by_hand(a, b):
  """Welch's t and Welch-Satterthwaite df from the formulas; p = I_{df/(df+t^2)}(df/2, 1/2)."""
  def mean_var(x):
    m = sum(x) / len(x)
    return m, sum((v - m) ** 2 for v in x) / (len(x) - 1)
  (ma, va), (mb, vb) = mean_var(a), mean_var(b)
  sa, sb = va / len(a), vb / len(b)
  t = (ma - mb) / math.sqrt(sa + sb)
  df = (sa + sb) ** 2 / (sa ** 2 / (len(a) - 1) + sb ** 2 / (len(b) - 1))
  return special.betainc(df / 2, 0.5, df / (df + t * t))


def test_welch_p_value_matches_the_formula_and_needs_two_seeds_each():
  mim, only = [0.0795, 0.0848, 0.0870], [0.0604, 0.0361, 0.0732]
  p = aggregate.welch_p_value(mim, only)
  assert p == pytest.approx(_welch_p_by_hand(mim, only), rel=1e-9)
  assert 0.10 < p < 0.15  # the ML-100K rec_mim vs rec_only comparison of docs/results.md
  assert aggregate.welch_p_value(only, mim) == pytest.approx(p)  # two-sided
  assert aggregate.welch_p_value([0.30, 0.20, 0.25], [0.10, 0.20, 0.30]) == pytest.approx(
      _welch_p_by_hand([0.30, 0.20, 0.25], [0.10, 0.20, 0.30]))
  assert aggregate.welch_p_value([0.1, 0.2, None, float("nan")], [0.3]) is None
  assert aggregate.welch_p_value([0.1, 0.1], [0.2, 0.2]) is None  # no spread: undefined
  (group,) = aggregate.group_records(_records({"rec_only": only, "rec_mim": mim, "rec_bpr": [0.04]}))
  assert group.p_value("rec_mim") == pytest.approx(p)
  assert group.p_value("rec_bpr") is None
  assert aggregate.format_p_value(0.1234) == "p = 0.12"
  assert aggregate.format_p_value(0.0042) == "p = 0.004"
  assert aggregate.format_p_value(0.0001) == "p < 0.001"
  assert aggregate.format_gain(48.06, p) == "+48.1% (p = 0.12)"


def _rank_p_by_enumeration(a, b):
  """Two-sided exact Mann-Whitney p: the share of all splits of the pooled values into groups of
  len(a) and len(b) whose U is at least as far from its mean as the observed one."""
  pooled = list(a) + list(b)
  def u(first):
    rest = [v for i, v in enumerate(pooled) if i not in first]
    return sum((pooled[i] > r) + 0.5 * (pooled[i] == r) for i in first for r in rest)
  centre = len(a) * len(b) / 2
  observed = abs(u(range(len(a))) - centre)
  splits = list(itertools.combinations(range(len(pooled)), len(a)))
  return sum(abs(u(s) - centre) >= observed - 1e-12 for s in splits) / len(splits)


def test_rank_p_value_is_the_exact_mann_whitney_test_and_needs_two_seeds_each():
  mim = [0.0795, 0.0848, 0.0870, 0.0785, 0.0742]
  only = [0.0604, 0.0361, 0.0732, 0.0445, 0.0679]
  # Every rec_mim seed above every rec_only seed: 2 of the C(10, 5) = 252 splits are as lopsided.
  assert aggregate.rank_p_value(mim, only) == pytest.approx(2 / 252)
  assert aggregate.rank_p_value(mim[:3], only[:3]) == pytest.approx(
      _rank_p_by_enumeration(mim[:3], only[:3]))
  interleaved = [0.0795, 0.0604, 0.0870]
  assert aggregate.rank_p_value(interleaved, only[1:4]) == pytest.approx(
      _rank_p_by_enumeration(interleaved, only[1:4]))
  assert aggregate.rank_p_value(only, mim) == pytest.approx(2 / 252)  # two-sided
  tied = aggregate.rank_p_value([0.30, 0.20, 0.25], [0.10, 0.20, 0.30])  # ties: approximation
  assert tied is not None and 0.5 < tied < 1.0
  assert aggregate.rank_p_value([0.1, None, float("nan")], [0.2, 0.3]) is None
  (group,) = aggregate.group_records(_records({"rec_only": only, "rec_mim": mim, "rec_bpr": [0.04]}))
  assert group.rank_p_value("rec_mim") == pytest.approx(2 / 252)
  assert group.rank_p_value("rec_bpr") is None


def test_mean_curve_over_common_steps():
  records = [fakes.record(fakes.spec(seed=0), 0.1, losses=(4.0, 3.0, 2.0)),
             fakes.record(fakes.spec(seed=1), 0.1, losses=(6.0, 5.0))]
  (group,) = aggregate.group_records(records)
  assert group.mean_curve("rec_only") == ([2, 4], [5.0, 4.0])
  assert group.mean_curve("rec_all") == ([], [])


def test_formatting():
  assert aggregate.format_stat(aggregate.Stat(0.12345, 0.01, 3)) == "0.1235 ± 0.0100"
  assert aggregate.format_stat(aggregate.Stat(0.5, None, 1)) == "0.5000"
  assert aggregate.format_stat(None) == "–"
  assert aggregate.format_gain(12.345) == "+12.3%" and aggregate.format_gain(None) == "–"


def test_headline_best_mixture_vs_rec_only_with_baselines():
  records = _records({"rec_only": [0.10, 0.20, 0.30], "rec_mim": [0.30, 0.20, 0.25],
                      "rec_bpr": [0.0, 0.1, 0.2]})
  (group,) = aggregate.group_records(records)
  baselines = {"pop": {"name": "Pop", "test": {"recall@10": 0.0859}},
               "sasrec": {"name": "SASRec", "test": {"recall@10": 0.1771}}, "lightgcn": None}
  text = aggregate.headline(group, baselines)
  assert text == (
      "ML-100K / tiny (4 steps x batch 2): best mixture rec_mim: test R@10 0.2500 ± 0.0500 (n=3) "
      "vs rec_only 0.2000 ± 0.1000 (n=3), relative gain +25.0%; the gap is not significant at "
      "the 5% level (Welch t-test p = 0.50; Mann-Whitney U test p = 0.65); baselines "
      "(test R@10): SASRec 0.1771, "
      "Pop 0.0859.")


def test_headline_when_no_auxiliary_mixture_wins_and_no_baselines():
  (group,) = aggregate.group_records(_records({"rec_only": [0.4], "rec_all": [0.2]}))
  text = aggregate.headline(group, None)
  assert "no auxiliary mixture beats rec_only; best auxiliary mixture rec_all" in text
  assert "relative gain -50.0%; one seed each" in text
  assert text.endswith("baselines (test R@10): baselines not run.")


def test_headline_compares_at_rec_only_seed_count_and_names_better_single_seeds():
  records = _records({"rec_only": [0.10, 0.20, 0.30], "rec_all": [0.20, 0.25, 0.30],
                      "rec_mim": [0.40], "rec_bpr": [0.05], "rec_mlm": [0.30]})
  (group,) = aggregate.group_records(records)
  text = aggregate.headline(group, None)
  assert "best mixture rec_all: test R@10 0.2500 ± 0.0500 (n=3) vs rec_only" in text
  assert ("relative gain +25.0%; the gap is not significant at the 5% level "
          "(Welch t-test p = 0.50; Mann-Whitney U test p = 0.65); ") in text
  # rec_mlm (0.30) and rec_mim (0.40) beat rec_all's mean on one seed; rec_bpr does not.
  assert ("; higher means from fewer seeds: rec_mim 0.4000 (n=1), rec_mlm 0.3000 (n=1); "
          "baselines") in text
  (single,) = aggregate.group_records(_records({"rec_only": [0.10, 0.20, 0.30], "rec_mim": [0.5]}))
  text = aggregate.headline(single, None)  # no mixture has 3 seeds: all compete
  assert "best mixture rec_mim: test R@10 0.5000 (n=1)" in text
  assert "the gap exceeds the seed standard deviation of rec_only; baselines" in text


def test_headline_verdict_follows_the_welch_test_not_the_spread():
  # Both gaps exceed both seed standard deviations; only the first passes the test at 5 %.
  clear = _records({"rec_only": [0.10, 0.11, 0.12], "rec_mim": [0.20, 0.21, 0.22]})
  (group,) = aggregate.group_records(clear)
  assert "the gap is significant at the 5% level (Welch t-test p < 0.001" in aggregate.headline(group, None)
  noisy = _records({"rec_only": [0.0944, 0.0933, 0.0891], "rec_mim": [0.0933, 0.0997, 0.0976]})
  (group,) = aggregate.group_records(noisy)
  text = aggregate.headline(group, None)
  assert group.p_value("rec_mim") > 0.05
  assert "relative gain +5.0%; the gap is not significant at the 5% level (Welch t-test p = 0.14" in text


def test_headline_without_rec_only():
  (group,) = aggregate.group_records(_records({"rec_mlm": [0.2, 0.4]}))
  assert "no rec_only run in this setting; best mixture by test R@10: rec_mlm 0.3000 ± 0.1414 (n=2)" in aggregate.headline(
      group, {})


def test_dataset_title_names_the_variant():
  assert aggregate.dataset_title("ml100k") == "ML-100K"
  assert aggregate.dataset_title("ml1m_atomic") == "ML-1M (atomic item IDs)"
  assert aggregate.dataset_title("ml1m_atomic_notitles") == "ML-1M (atomic item IDs, no titles)"
  assert aggregate.dataset_title("beauty_notitles") == "Beauty (no titles)"
  assert aggregate.dataset_title("mydata") == "mydata"


def test_title_pairs_compare_the_same_setting_without_titles():
  records = [fakes.record(fakes.spec(dataset=d, mixture="rec_only", seed=s), v)
             for d, vs in {"ml1m_atomic": [0.1, 0.2, 0.3], "ml1m_atomic_notitles": [0.4, 0.5],
                           "ml1m": [0.9]}.items() for s, v in enumerate(vs)]
  groups = aggregate.group_records(records)
  (pair,) = aggregate.title_pairs(groups)
  assert pair.titled.setting["dataset"] == "ml1m_atomic"
  assert pair.untitled.setting["dataset"] == "ml1m_atomic_notitles"
  assert pair.mixtures == ["rec_only"] and pair.title == "ML-1M (atomic item IDs) / tiny"
  assert pair.gain("rec_only") == pytest.approx((0.45 - 0.2) / 0.2 * 100)
  assert pair.p_value("rec_only") == pytest.approx(
      aggregate.welch_p_value([0.4, 0.5], [0.1, 0.2, 0.3]))
  assert aggregate.title_pairs([g for g in groups if g.setting["dataset"] != "ml1m_atomic"]) == []


def test_mixing_rate_binding_reads_task_scope_and_value():
  assert aggregate.mixing_rate_binding("seqio_tasks.mixing_rates.mim = 0.5") == "mim=0.5"
  assert aggregate.mixing_rate_binding("seqio_tasks.mixing_rates.bpr=0.333") == "bpr=0.333"
  assert aggregate.mixing_rate_binding(" ml1m/seqio_tasks.mixing_rates.mlm = 2") == "ml1m/mlm=2"
  assert aggregate.mixing_rate_binding("LEARNING_RATE=0.01") is None
  assert aggregate.mixing_rate_binding("other.mixing_rates.mim=0.5") is None
  assert aggregate.mixing_rate_binding("seqio_tasks.mixing_rates.mim") is None


def test_rate_variants_pair_each_rate_setting_with_its_default_rate_setting():
  base = ["LEARNING_RATE=0.01"]
  thirds = base + [f"seqio_tasks.mixing_rates.{t}=0.333" for t in ("mim", "mlm", "bpr")]
  records = ([fakes.record(fakes.spec(mixture=m, seed=s, gin_bindings=tuple(base)), v)
              for m, vs in {"rec_only": [0.1, 0.2, 0.3], "rec_all": [0.2, 0.3]}.items()
              for s, v in enumerate(vs)]
             + [fakes.record(fakes.spec(mixture="rec_all", seed=s, gin_bindings=tuple(thirds)), v)
                for s, v in enumerate([0.4, 0.5])]
             # Another learning rate with the same rates has no default-rate setting to pair with.
             + [fakes.record(fakes.spec(mixture="rec_all", gin_bindings=(
                 "LEARNING_RATE=0.1", "seqio_tasks.mixing_rates.mim=2")), 0.9)])
  groups = aggregate.group_records(records)
  assert len(groups) == 3
  (variant,) = aggregate.rate_variants(groups)
  assert variant.base is groups[0] and variant.variant is groups[1]
  assert variant.rates == ["mim=0.333", "mlm=0.333", "bpr=0.333"]
  assert variant.title == "ML-100K / tiny"
  assert variant.variant.title == "ML-100K / tiny / rates mim=0.333 mlm=0.333 bpr=0.333"
  assert variant.gain("rec_all", "rec_all") == pytest.approx((0.45 - 0.25) / 0.25 * 100)
  assert variant.gain("rec_all", "rec_only") == pytest.approx((0.45 - 0.2) / 0.2 * 100)
  assert variant.p_value("rec_all", "rec_only") == pytest.approx(
      aggregate.welch_p_value([0.4, 0.5], [0.1, 0.2, 0.3]))
  assert variant.gain("rec_mim", "rec_only") is None
  assert aggregate.rate_variants([g for g in groups if g is not groups[0]]) == []


def test_budget_series_pairs_a_setting_across_training_lengths():
  def bindings(steps):
    return grid_lib.linear_decay_bindings(0.01, 1, steps)

  values = {(4, "rec_only"): [0.1, 0.2], (4, "rec_mim"): [0.2], (8, "rec_mim"): [0.3, 0.5],
            (16, "rec_mim"): [0.6]}
  records = [fakes.record(fakes.spec(mixture=m, seed=s, train_steps=n, gin_bindings=bindings(n)), v)
             for (n, m), vs in values.items() for s, v in enumerate(vs)]
  # Another learning rate at another length: a different setting, in no series.
  records.append(fakes.record(fakes.spec(train_steps=8, gin_bindings=(
      "LEARNING_RATE=0.1",) + bindings(8)[1:]), 0.9))
  groups = aggregate.group_records(list(reversed(records)))
  (series,) = aggregate.budget_series(groups)
  assert [g.setting["train_steps"] for g in series.groups] == [4, 8, 16]
  assert series.title == "ML-100K / tiny"
  longer = series.groups[1]
  assert series.gain(longer, "rec_mim") == pytest.approx((0.4 - 0.2) / 0.2 * 100)
  assert series.gain(longer, "rec_only") is None  # Not run at 8 steps.
  assert series.p_value(longer, "rec_mim") is None  # One seed at 4 steps.
  assert series.gain(series.shortest, "rec_only") == pytest.approx(0.0)
  assert aggregate.mean_train_seconds(longer, "rec_mim") == pytest.approx(65.0)
  assert aggregate.mean_train_seconds(longer, "rec_all") is None
  assert aggregate.budget_series([g for g in groups if g.setting["train_steps"] == 4]) == []


def test_budget_series_ignores_only_the_decay_steps_binding():
  assert aggregate._without_decay_steps(
      ("LEARNING_RATE=0.01", "optimizers.LearningRateConfig.decay_steps = 900",
       "ml1m/optimizers.LearningRateConfig.decay_steps=3",
       "optimizers.LearningRateConfig.warmup_steps=100")) == ("LEARNING_RATE=0.01", "optimizers.LearningRateConfig.warmup_steps=100")
