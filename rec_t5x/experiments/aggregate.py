"""run.json records -> per-setting statistics over seeds, gains over rec_only, headline sentences.

A *group* is one setting (dataset, model, budget, feature lengths, initialisation, extra bindings,
test users): its runs differ only in mixture and seed. Per mixture and metric the group gives
mean, sample standard deviation (ddof = 1; none for a single seed) and n; the relative gain of a
mixture is `100 * (mean - mean_rec_only) / mean_rec_only` on test Recall@10, and its p-value is
the two-sided Welch t-test (scipy.stats.ttest_ind, unequal variances) of the mixture's per-seed
values against rec_only's. The headline adds the two-sided Mann-Whitney U test of the same values
(scipy.stats.mannwhitneyu, exact null distribution when there are no ties), which does not assume
normal seeds: with a handful of seeds the t-test's normality is the weakest link, and the rank test
says how often a split of the seeds at least this lopsided happens by chance. Pure functions of
the records: nothing here reads files.
"""
from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping, Sequence
import dataclasses
import math
from typing import Any

from scipy import stats as scipy_stats

from rec_t5x import item_ids
from rec_t5x.experiments import grid as grid_lib

Record = Mapping[str, Any]
SETTING_FIELDS = ("dataset", "model", "train_steps", "batch_size", "inputs_length",
                  "targets_length", "initial_checkpoint", "vocabulary", "gin_bindings",
                  "decode_max_examples")
DATASET_NAMES = {"ml100k": "ML-100K", "ml1m": "ML-1M", "beauty": "Beauty", "toys": "Toys",
                 "sports": "Sports"}


def dataset_title(dataset: str) -> str:
  """'ML-100K', 'ML-100K (atomic item IDs)' for `ml100k_atomic`, '... (atomic item IDs, no titles)'."""
  variant = item_ids.parse_variant(dataset)
  notes = [] if variant.style == item_ids.DIGITS else [f"{variant.style} item IDs"]
  if not variant.titles:
    notes.append("no titles")
  name = DATASET_NAMES.get(variant.base, variant.base)
  return f"{name} ({', '.join(notes)})" if notes else name


@dataclasses.dataclass(frozen=True)
class Column:
  """One reported metric: the task (retrieval / ranking / rating) and its key in eval_metrics."""
  task: str
  key: str
  label: str
  higher_is_better: bool = True


COLUMNS = (
    Column("retrieval", "recall@5", "R@5"),
    Column("retrieval", "recall@10", "R@10"),
    Column("retrieval", "ndcg@10", "NDCG@10"),
    Column("ranking", "likelihood/hr@1", "rank HR@1"),
    Column("ranking", "likelihood/hr@5", "rank HR@5"),
    Column("rating", "rmse", "RMSE", higher_is_better=False),
    Column("rating", "expected/rmse", "RMSE (exp.)", higher_is_better=False),
)
RECALL_10 = COLUMNS[1]


@dataclasses.dataclass(frozen=True)
class Stat:
  """Mean, sample standard deviation (None when n < 2) and count of one metric over seeds."""
  mean: float
  std: float | None
  n: int


def mean_std(values: Iterable[float]) -> Stat | None:
  """Mean and sample std (ddof = 1) of the finite `values`; None when there are none."""
  finite = [float(v) for v in values if v is not None and math.isfinite(v)]
  if not finite:
    return None
  n = len(finite)
  mean = sum(finite) / n
  std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - 1)) if n > 1 else None
  return Stat(mean, std, n)


def task_metrics(record: Record, task: str) -> Mapping[str, float] | None:
  """The metrics of the record's task named `*.<task>` (e.g. rec_t5x.ml100k.retrieval)."""
  for name, metrics in record.get("metrics", {}).items():
    if name.rsplit(".", 1)[-1] == task:
      return metrics
  return None


def metric(record: Record, column: Column) -> float | None:
  """One metric of one run, None when the run has no such value."""
  metrics = task_metrics(record, column.task)
  value = None if metrics is None else metrics.get(column.key)
  return None if value is None else float(value)


def relative_gain(value: float | None, reference: float | None) -> float | None:
  """`100 * (value - reference) / reference`; None when either is missing or the reference is 0."""
  if value is None or reference is None or reference == 0:
    return None
  return 100.0 * (value - reference) / reference


def welch_p_value(values: Iterable[float | None], reference: Iterable[float | None]) -> float | None:
  """Two-sided Welch t-test p of `values` against `reference` (finite values only).

  None when either side has fewer than two values or both have no spread (the test is undefined).
  """
  a = [float(v) for v in values if v is not None and math.isfinite(v)]
  b = [float(v) for v in reference if v is not None and math.isfinite(v)]
  if len(a) < 2 or len(b) < 2 or (len(set(a)) == 1 and len(set(b)) == 1):
    return None  # scipy would answer p = 0 for two constant samples with different values
  p = float(scipy_stats.ttest_ind(a, b, equal_var=False).pvalue)
  return p if math.isfinite(p) else None


def rank_p_value(values: Iterable[float | None], reference: Iterable[float | None]) -> float | None:
  """Two-sided Mann-Whitney U test p of `values` against `reference` (finite values only).

  Exact (every split of the pooled seeds equally likely) when no value is tied, the normal
  approximation otherwise. None when either side has fewer than two values: one seed a side gives
  no p below 1. Five seeds each, all of one side above all of the other: p = 2 / C(10, 5) = 0.008.
  """
  a = [float(v) for v in values if v is not None and math.isfinite(v)]
  b = [float(v) for v in reference if v is not None and math.isfinite(v)]
  if len(a) < 2 or len(b) < 2:
    return None
  method = "exact" if len(set(a + b)) == len(a) + len(b) else "asymptotic"
  p = float(scipy_stats.mannwhitneyu(a, b, alternative="two-sided", method=method).pvalue)
  return p if math.isfinite(p) else None


def format_p_value(p: float | None) -> str:
  """'p = 0.12', 'p = 0.004', 'p < 0.001'; '' when there is no test."""
  if p is None:
    return ""
  if p < 0.001:
    return "p < 0.001"
  return f"p = {p:.2f}" if p >= 0.01 else f"p = {p:.3f}"


def _setting(record: Record) -> tuple[tuple[str, Any], ...]:
  spec = record["spec"]
  return tuple((f, tuple(spec[f]) if isinstance(spec.get(f), list) else spec.get(f))
               for f in SETTING_FIELDS)


def _mixture_order(name: str) -> tuple[int, str]:
  order = grid_lib.MIXTURES
  return (order.index(name), name) if name in order else (len(order), name)


@dataclasses.dataclass
class Group:
  """The runs of one setting, by mixture (each list ordered by seed)."""
  setting: dict[str, Any]
  runs: dict[str, list[Record]]

  @property
  def mixtures(self) -> list[str]:
    return sorted(self.runs, key=_mixture_order)

  @property
  def title(self) -> str:
    """'ML-100K / tiny', plus ' / rates mim=2' for a setting with mixing-rate bindings."""
    rates = [r for b in self.setting.get("gin_bindings") or ()
             if (r := mixing_rate_binding(b)) is not None]
    suffix = f" / rates {' '.join(rates)}" if rates else ""
    return f"{dataset_title(self.setting['dataset'])} / {self.setting['model']}{suffix}"

  def values(self, mixture: str, column: Column) -> list[float | None]:
    """The metric of each of the mixture's runs, in seed order (None where a run lacks it)."""
    return [metric(r, column) for r in self.runs.get(mixture, [])]

  def stat(self, mixture: str, column: Column) -> Stat | None:
    return mean_std(self.values(mixture, column))

  def p_value(self, mixture: str, column: Column = RECALL_10) -> float | None:
    """Welch t-test p of the mixture's seeds against rec_only's (None below two seeds each)."""
    return welch_p_value(self.values(mixture, column),
                         self.values(grid_lib.BASELINE_MIXTURE, column))

  def rank_p_value(self, mixture: str, column: Column = RECALL_10) -> float | None:
    """Mann-Whitney U test p of the mixture's seeds against rec_only's (None below two each)."""
    return rank_p_value(self.values(mixture, column),
                        self.values(grid_lib.BASELINE_MIXTURE, column))

  def gain(self, mixture: str, column: Column = RECALL_10) -> float | None:
    """Relative gain (%) of the mixture's mean over rec_only's mean."""
    base = self.stat(grid_lib.BASELINE_MIXTURE, column)
    value = self.stat(mixture, column)
    return relative_gain(value and value.mean, base and base.mean)

  def test_examples(self) -> dict[str, list[int]]:
    """Distinct test example counts per task over the group's runs (num_examples)."""
    out: dict[str, set[int]] = {}
    for runs in self.runs.values():
      for record in runs:
        for task in ("retrieval", "ranking", "rating"):
          metrics = task_metrics(record, task)
          if metrics is not None and "num_examples" in metrics:
            out.setdefault(task, set()).add(int(metrics["num_examples"]))
    return {task: sorted(counts) for task, counts in out.items()}

  def mean_curve(self, mixture: str) -> tuple[list[int], list[float]]:
    """Training loss averaged over the mixture's seeds, at the steps every seed logged."""
    curves = [r.get("train_curve") or {} for r in self.runs.get(mixture, [])]
    curves = [dict(zip(c.get("step", []), c.get("loss", []))) for c in curves]
    curves = [c for c in curves if c]
    if not curves:
      return [], []
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    return steps, [sum(c[s] for c in curves) / len(curves) for s in steps]


def group_records(records: Sequence[Record]) -> list[Group]:
  """Groups run.json records by setting; seeds sorted per mixture.

  Settings that differ only in training length and mixing rates form a family; families come in
  order of first appearance, and inside one the settings by steps, then by rates (default rates
  first, then by rate value), so neither run keys nor file order shuffle a rate or length sweep.
  """
  groups: dict[tuple[tuple[str, Any], ...], Group] = {}
  for record in records:
    key = _setting(record)
    group = groups.setdefault(key, Group(setting=dict(key), runs={}))
    group.runs.setdefault(record["spec"]["mixture"], []).append(record)
  families: dict[Any, int] = {}
  for group in groups.values():
    families.setdefault(_family(group), len(families))
    for runs in group.runs.values():
      runs.sort(key=lambda r: r["spec"]["seed"])
  return sorted(groups.values(), key=lambda g: (families[_family(g)], g.setting["train_steps"] or 0,
                                                _rate_order(g)))


def _family(group: Group) -> tuple[Any, ...]:
  """A setting without its training length and mixing rates (see `group_records`)."""
  bindings = _without_decay_steps(group.setting.get("gin_bindings") or ())
  rest = tuple((k, v) for k, v in group.setting.items() if k not in ("train_steps", "gin_bindings"))
  return rest, tuple(b for b in bindings if mixing_rate_binding(b) is None)


def _rate_order(group: Group) -> tuple[tuple[str, float, str], ...]:
  """The setting's mixing rates as (task, value, text), numeric where the value parses."""
  order = []
  for binding in group.setting.get("gin_bindings") or ():
    if (rate := mixing_rate_binding(binding)) is not None:
      task, _, value = rate.partition("=")
      try:
        number = float(value)
      except ValueError:
        number = float("inf")
      order.append((task, number, value))
  return tuple(order)


def gain_between(group: Group, mixture: str, reference: Group, reference_mixture: str,
                 column: Column = RECALL_10) -> float | None:
  """Relative change (%) of `mixture`'s mean in `group` over `reference_mixture`'s in `reference`."""
  value, base = group.stat(mixture, column), reference.stat(reference_mixture, column)
  return relative_gain(value and value.mean, base and base.mean)


def p_value_between(group: Group, mixture: str, reference: Group, reference_mixture: str,
                    column: Column = RECALL_10) -> float | None:
  """Welch t-test p of `mixture`'s seeds in `group` against `reference_mixture`'s in `reference`."""
  return welch_p_value(group.values(mixture, column), reference.values(reference_mixture, column))


def section_titles(groups: Sequence[Group]) -> list[str]:
  """Each group's title, made unique among `groups` for the report's section headings.

  Groups of one title that differ in length get ' / <steps> steps', then in batch size
  ' / batch <size>'; titles still shared after that get ' (<k> of <n>)' in the groups' order.
  """
  titles = [g.title for g in groups]
  for field, label in (("train_steps", " / {} steps"), ("batch_size", " / batch {}")):
    shared: dict[str, set[Any]] = {}
    for title, group in zip(titles, groups):
      shared.setdefault(title, set()).add(group.setting.get(field))
    titles = [title + label.format(group.setting.get(field)) if len(shared[title]) > 1 else title
              for title, group in zip(titles, groups)]
  counts = collections.Counter(titles)
  seen: collections.Counter[str] = collections.Counter()
  out = []
  for title in titles:
    seen[title] += 1
    out.append(f"{title} ({seen[title]} of {counts[title]})" if counts[title] > 1 else title)
  return out


@dataclasses.dataclass(frozen=True)
class TitlePair:
  """Two groups that differ only in whether their dataset shows titles (`x` / `x_notitles`)."""
  titled: Group
  untitled: Group

  @property
  def title(self) -> str:
    return self.titled.title

  @property
  def mixtures(self) -> list[str]:
    """Mixtures run in both groups, in report order."""
    return [m for m in self.titled.mixtures if m in self.untitled.runs]

  def gain(self, mixture: str, column: Column = RECALL_10) -> float | None:
    """Relative change (%) of the mixture's mean without titles over its mean with them."""
    return gain_between(self.untitled, mixture, self.titled, mixture, column)

  def p_value(self, mixture: str, column: Column = RECALL_10) -> float | None:
    """Welch t-test p of the mixture's seeds without titles against those with titles."""
    return p_value_between(self.untitled, mixture, self.titled, mixture, column)


def title_pairs(groups: Sequence[Group]) -> list[TitlePair]:
  """Pairs of groups whose settings are equal but for a dataset and its `_notitles` variant.

  Ordered like the titled groups; a group without its counterpart is in no pair.
  """
  def key(group: Group, titles: bool):
    variant = item_ids.parse_variant(group.setting["dataset"])
    if variant.titles != titles:
      return None
    rest = tuple((k, v) for k, v in group.setting.items() if k != "dataset")
    return (variant.base, variant.style, rest)

  untitled = {k: g for g in groups if (k := key(g, False)) is not None}
  return [TitlePair(g, untitled[k]) for g in groups
          if (k := key(g, True)) is not None and k in untitled]


MIXING_RATES_CONFIGURABLE = "seqio_tasks.mixing_rates"


def mixing_rate_binding(binding: str) -> str | None:
  """'mim=0.5' for a `[scope/]seqio_tasks.mixing_rates.mim = 0.5` binding ('ml1m/mim=0.5' when
  scoped), None for any other binding."""
  name, sep, value = binding.partition("=")
  scope, _, selector = name.strip().rpartition("/")
  configurable, _, task = selector.rpartition(".")
  if not sep or configurable != MIXING_RATES_CONFIGURABLE:
    return None
  return f"{scope + '/' if scope else ''}{task}={value.strip()}"


@dataclasses.dataclass(frozen=True)
class RateVariant:
  """A group trained with extra `seqio_tasks.mixing_rates` bindings and the group without them."""
  base: Group
  variant: Group

  @property
  def title(self) -> str:
    return self.base.title

  @property
  def rates(self) -> list[str]:
    """The variant's rate bindings, e.g. ['mim=0.333', 'bpr=0.333']."""
    return [r for b in self.variant.setting.get("gin_bindings") or ()
            if (r := mixing_rate_binding(b)) is not None]

  def gain(self, mixture: str, reference: str, column: Column = RECALL_10) -> float | None:
    """Relative change (%) of the variant's mixture mean over the base's `reference` mixture."""
    return gain_between(self.variant, mixture, self.base, reference, column)

  def p_value(self, mixture: str, reference: str, column: Column = RECALL_10) -> float | None:
    """Welch t-test p of the variant's mixture seeds against the base's `reference` seeds."""
    return p_value_between(self.variant, mixture, self.base, reference, column)


def rate_variants(groups: Sequence[Group]) -> list[RateVariant]:
  """Groups with `seqio_tasks.mixing_rates` bindings, each paired with the group whose setting
  is the same without those bindings (default rates). A variant without that group is in no pair.
  """
  def key(group: Group, drop_rates: bool):
    bindings = tuple(group.setting.get("gin_bindings") or ())
    kept = tuple(b for b in bindings if mixing_rate_binding(b) is None)
    if drop_rates and kept == bindings:
      return None
    rest = tuple((k, v) for k, v in group.setting.items() if k != "gin_bindings")
    return (rest, kept)

  bases = {key(g, False): g for g in groups
           if not any(mixing_rate_binding(b) for b in g.setting.get("gin_bindings") or ())}
  return [RateVariant(bases[k], g) for g in groups
          if (k := key(g, True)) is not None and k in bases]


DECAY_STEPS_BINDING = "optimizers.LearningRateConfig.decay_steps"


def _without_decay_steps(bindings: Sequence[str]) -> tuple[str, ...]:
  """`bindings` less the linear decay's decay_steps, which follows the budget (grid.py)."""
  return tuple(b for b in bindings
               if b.partition("=")[0].strip().rpartition("/")[2] != DECAY_STEPS_BINDING)


@dataclasses.dataclass(frozen=True)
class BudgetSeries:
  """Groups whose settings are equal but for the training length: `train_steps` and the linear
  decay's `decay_steps`, which the driver moves with it. Ordered by steps, shortest first."""
  groups: tuple[Group, ...]

  @property
  def title(self) -> str:
    return self.groups[0].title

  @property
  def shortest(self) -> Group:
    return self.groups[0]

  def gain(self, group: Group, mixture: str, column: Column = RECALL_10) -> float | None:
    """Relative change (%) of the mixture's mean in `group` over its mean at the shortest budget."""
    return gain_between(group, mixture, self.shortest, mixture, column)

  def p_value(self, group: Group, mixture: str, column: Column = RECALL_10) -> float | None:
    """Welch t-test p of the mixture's seeds in `group` against those at the shortest budget."""
    return p_value_between(group, mixture, self.shortest, mixture, column)


def budget_series(groups: Sequence[Group]) -> list[BudgetSeries]:
  """Settings run at more than one training length, each as a series ordered by steps.

  In order of each series' first group; a setting run at one length only is in no series.
  """
  def key(group: Group):
    rest = tuple((k, v) for k, v in group.setting.items()
                 if k not in ("train_steps", "gin_bindings"))
    return rest, _without_decay_steps(group.setting.get("gin_bindings") or ())

  series: dict[Any, list[Group]] = {}
  for group in groups:
    series.setdefault(key(group), []).append(group)
  return [BudgetSeries(tuple(sorted(members, key=lambda g: g.setting["train_steps"])))
          for members in series.values() if len(members) > 1]


def mean_train_seconds(group: Group, mixture: str) -> float | None:
  """Mean wall-clock training seconds of the mixture's runs (None if no run recorded it)."""
  seconds = [s for r in group.runs.get(mixture, []) if (s := r.get("train_seconds")) is not None]
  return sum(seconds) / len(seconds) if seconds else None


def format_stat(stat: Stat | None, digits: int = 4) -> str:
  """'0.0123 ± 0.0040', '0.0123' (one seed) or '–' (no value)."""
  if stat is None:
    return "–"
  if stat.std is None:
    return f"{stat.mean:.{digits}f}"
  return f"{stat.mean:.{digits}f} ± {stat.std:.{digits}f}"


def format_gain(gain: float | None, p: float | None = None) -> str:
  """'+12.3%', '+12.3% (p = 0.12)' with a test, '–' without a gain."""
  if gain is None:
    return "–"
  return f"{gain:+.1f}%" + (f" ({format_p_value(p)})" if p is not None else "")


SIGNIFICANCE_LEVEL = 0.05


def _noise_note(best_name: str, best: Stat, base: Stat, welch_p: float | None) -> str:
  """What the seeds say about the gap: the Welch t-test's verdict at `SIGNIFICANCE_LEVEL` where
  both mixtures have >= 2 seeds, else how the gap compares with the one spread there is."""
  if welch_p is not None:
    verdict = "significant" if welch_p < SIGNIFICANCE_LEVEL else "not significant"
    return f"the gap is {verdict} at the {SIGNIFICANCE_LEVEL:.0%} level"
  spreads = {name: st.std for name, st in ((best_name, best),
                                            (grid_lib.BASELINE_MIXTURE, base))
             if st.std is not None}
  if not spreads:
    return "one seed each, so no spread to compare with"
  whose = "" if len(spreads) == 2 else f" of {next(iter(spreads))}"
  gap = abs(best.mean - base.mean)
  if gap <= max(spreads.values()):
    return f"the gap is within one seed standard deviation{whose}"
  return f"the gap exceeds the seed standard deviation{'s' if not whose else ''}{whose}"


def _stat_text(mixture: str, stat: Stat) -> str:
  return f"{mixture} {format_stat(stat)} (n={stat.n})"


def baseline_text(baselines: Mapping[str, Mapping[str, Any] | None] | None,
                  split: str = "test") -> str:
  """'SASRec 0.1771, BPR-MF 0.1273, ...' (Recall@10 on `split`), best first; 'baselines not run'."""
  present = [b for b in (baselines or {}).values()
             if b is not None and "recall@10" in (b.get(split) or {})]
  if not present:
    return "baselines not run"
  present.sort(key=lambda b: -b[split]["recall@10"])
  return ", ".join(f"{b['name']} {b[split]['recall@10']:.4f}" for b in present)


def headline(group: Group, baselines: Mapping[str, Mapping[str, Any] | None] | None,
             split: str = "test") -> str:
  """One computed sentence on Recall@10 of `split`: the best mixture against rec_only, baselines.

  The best mixture is chosen among those with at least rec_only's number of seeds (all of them
  when none has); mixtures with fewer seeds and a higher mean are listed after the comparison.
  """
  s = group.setting
  bindings = f", `{' '.join(s['gin_bindings'])}`" if s.get("gin_bindings") else ""
  head = f"{group.title} ({s['train_steps']} steps x batch {s['batch_size']}{bindings}): "
  stats = {m: group.stat(m, RECALL_10) for m in group.mixtures}
  stats = {m: st for m, st in stats.items() if st is not None}
  tail = f"; baselines ({split} R@10): {baseline_text(baselines, split)}."
  if not stats:
    return head + f"no run has {split} Recall@10" + tail
  base = stats.get(grid_lib.BASELINE_MIXTURE)
  others = {m: st for m, st in stats.items() if m != grid_lib.BASELINE_MIXTURE}
  if base is None:
    best = max(others, key=lambda m: others[m].mean)
    return (head + f"no rec_only run in this setting; best mixture by {split} R@10: "
            f"{_stat_text(best, others[best])}" + tail)
  if not others:
    return head + f"only rec_only was run: {split} R@10 {_stat_text('rec_only', base)}" + tail
  # The comparison is made at rec_only's number of seeds where a mixture has them; a mixture with
  # fewer seeds and a higher mean is named after it instead of heading the sentence.
  seeded = {m: st for m, st in others.items() if st.n >= base.n} or others
  best = max(seeded, key=lambda m: seeded[m].mean)
  fewer = sorted((m for m in others if m not in seeded and others[m].mean > others[best].mean),
                 key=lambda m: -others[m].mean)
  fewer_text = ("; higher means from fewer seeds: " + ", ".join(
      f"{m} {format_stat(others[m])} (n={others[m].n})" for m in fewer)) if fewer else ""
  gain = format_gain(relative_gain(others[best].mean, base.mean))
  if gain == "–":
    gain = "n/a (rec_only is 0)"
  verdict = ("best mixture" if others[best].mean > base.mean
             else "no auxiliary mixture beats rec_only; best auxiliary mixture")
  welch_p = group.p_value(best)
  tests = [f"{name} {format_p_value(p)}" for name, p in (
      ("Welch t-test", welch_p), ("Mann-Whitney U test", group.rank_p_value(best)))
             if p is not None]
  test_text = f" ({'; '.join(tests)})" if tests else ""
  return (head + f"{verdict} {best}: {split} R@10 {format_stat(others[best])} (n={others[best].n}) vs "
          f"rec_only {format_stat(base)} (n={base.n}), relative gain {gain}; "
          f"{_noise_note(best, others[best], base, welch_p)}{test_text}{fewer_text}" + tail)
