"""The ablation's Markdown report (docs/results.md), generated from run records only.

The same renderer writes the tuning report (docs/tuning.md) from runs evaluated on the
validation split (`split="validation"`): settings are chosen there, never on test numbers.

Everything above the `## Discussion` heading is regenerated on every call; the Discussion section
(from that heading to the end of the file) is written by hand and kept as it is. A new file gets
an empty, clearly marked Discussion section.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import contextlib
import os
import pathlib
import tempfile
from typing import Any

from rec_t5x import durations
from rec_t5x.experiments import aggregate
from rec_t5x.experiments import baselines as baselines_lib
from rec_t5x.experiments import grid as grid_lib
from rec_t5x.experiments import provenance

Baselines = Mapping[str, Mapping[str, Mapping[str, Any] | None]]
DISCUSSION_HEADING = "## Discussion"
DEFAULT_DISCUSSION = (
    f"{DISCUSSION_HEADING}\n\n"
    "<!-- Written by hand. scripts/run_experiment.py keeps everything from the '## Discussion' "
    "heading to the end of this file when it regenerates the report. -->\n")
BASELINE_COLUMNS = {"recall@5", "recall@10", "ndcg@10"}


def extract_discussion(text: str) -> str | None:
  """The text from the first line that is exactly `## Discussion` to the end, None when absent."""
  lines = text.splitlines(keepends=True)
  for i, line in enumerate(lines):
    if line.strip() == DISCUSSION_HEADING:
      return "".join(lines[i:])
  return None


def _initialisation(setting: Mapping[str, Any]) -> str:
  if setting.get("initial_checkpoint"):
    return (f"initialised from `{setting['initial_checkpoint']}` (T5 vocabulary "
            f"`{setting.get('vocabulary')}`)")
  return "from scratch (random initialisation, the dataset's SentencePiece vocabulary)"


def _setting_line(group: aggregate.Group, split: str) -> str:
  s = group.setting
  users = group.test_examples()
  shown = ", ".join(f"{task} {'/'.join(map(str, counts))}" for task, counts in users.items())
  requested = "all" if s["decode_max_examples"] is None else s["decode_max_examples"]
  bindings = f"; extra bindings `{' '.join(s['gin_bindings'])}`" if s["gin_bindings"] else ""
  return (f"{s['train_steps']} steps x batch {s['batch_size']} packed rows "
          f"({s['inputs_length']} input / {s['targets_length']} target tokens), "
          f"{_initialisation(s)}{bindings}. {split.capitalize()} examples per task (requested: "
          f"{requested}): {shown or 'none recorded'}.")


def _baseline_rows(dataset_baselines: Mapping[str, Mapping[str, Any] | None] | None,
                   width: int, split: str) -> list[str]:
  rows = []
  for model in baselines_lib.MODELS:
    name = baselines_lib.DISPLAY_NAMES[model]
    record = (dataset_baselines or {}).get(model)
    cells = []
    for column in aggregate.COLUMNS:
      if column.task != "retrieval" or column.key not in BASELINE_COLUMNS:
        cells.append("–")
      elif record is None:
        cells.append("not run")
      elif column.key not in (record.get(split) or {}):
        cells.append("not recorded")
      else:
        cells.append(f"{record[split][column.key]:.4f}")
    n = "–" if record is None else "1"
    padding = " | –" * (width - 2 - len(cells))
    rows.append(f"| *{name}* (baseline) | {n} | " + " | ".join(cells) + padding + " |")
  return rows


def _baseline_note(dataset_baselines: Mapping[str, Mapping[str, Any] | None] | None,
                   split: str) -> str:
  present = {m: b for m, b in (dataset_baselines or {}).items() if b is not None}
  if not present:
    return ("Baselines: not run (`--run_baselines` trains them, or "
            "`python -m rec_t5x.baselines.run`, see docs/baselines.md).")
  stops = "; ".join(
      f"{b['name']}: {b['stop_reason']}"
      + (f", best epoch {b['best_epoch']}/{b['epochs']}" if b.get("epochs") else "")
      for b in present.values())
  missing = [baselines_lib.DISPLAY_NAMES[m] for m, b in (dataset_baselines or {}).items()
             if b is None]
  missing_text = f" Not run: {', '.join(missing)}." if missing else ""
  return (f"Baselines: one seed, full ranking of all items for every {split} user "
          f"(docs/baselines.md; `{_shown_path(next(iter(present.values()))['path'])}`); "
          f"{stops}.{missing_text}")


def _shown_path(result_dir: str) -> str:
  """A baseline's results root, relative to the repository when inside it (the ledger)."""
  root = pathlib.Path(result_dir).resolve().parent
  if root.is_relative_to(grid_lib.REPO_ROOT):
    return os.fspath(root.relative_to(grid_lib.REPO_ROOT))
  return os.fspath(root)


def group_section(group: aggregate.Group,
                  dataset_baselines: Mapping[str, Mapping[str, Any] | None] | None,
                  split: str = "test", extra_lines: Sequence[str] = (),
                  machines: Mapping[str, str] | None = None, title: str | None = None) -> str:
  """The Markdown section of one setting: setting line, mixture table with baselines, extra lines
  (e.g. the top-10 list statistics and paired tests), runs.

  `title` is the section heading (default: the group's title; the report passes
  `aggregate.section_titles`, which tells apart settings that differ only in length).

  `machines` ({description: label}, `machine_labels`) adds a column naming each run's machine
  when the report's runs come from more than one.
  """
  by_machine = machines is not None and len(machines) > 1
  header = ["mixture", "n"] + [c.label for c in aggregate.COLUMNS] + ["R@10 vs rec_only"]
  lines = [f"### {title or group.title}", "", _setting_line(group, split), "",
           "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for mixture in group.mixtures:
    stats = [group.stat(mixture, c) for c in aggregate.COLUMNS]
    n = max((st.n for st in stats if st is not None), default=0)
    gain = ("(reference)" if mixture == grid_lib.BASELINE_MIXTURE
            else aggregate.format_gain(group.gain(mixture), group.p_value(mixture)))
    lines.append(f"| {mixture} | {n} | " + " | ".join(aggregate.format_stat(st) for st in stats)
                 + f" | {gain} |")
  lines += _baseline_rows(dataset_baselines, len(header), split)
  lines += ["", _baseline_note(dataset_baselines, split), ""]
  if extra_lines:
    lines += [*extra_lines, ""]
  columns = ["mixture", "seed", "steps", "train", "eval", "final train loss", "finished (UTC)",
             "run", "commit"] + (["machine"] if by_machine else [])
  lines += ["Runs:", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  for mixture in group.mixtures:
    for record in group.runs[mixture]:
      losses = (record.get("train_curve") or {}).get("loss") or []
      loss = f"{losses[-1]:.4f}" if losses else "–"
      lines.append(
          f"| {mixture} | {record['spec']['seed']} | {record.get('eval_step', '?')} | "
          f"{'~' if record.get('train_seconds_estimated') else ''}"
          f"{durations.format_duration(record.get('train_seconds'))} | "
          f"{durations.format_duration(record.get('eval_seconds'))} | {loss} | "
          f"{record.get('date', '?')} | `{record.get('key', '?')}` | "
          f"{provenance.short_commit(record)} |"
          + (f" {machines[machine_description(record)]} |" if by_machine else ""))
  return "\n".join(lines)


TITLE_COLUMNS = (aggregate.RECALL_10, aggregate.COLUMNS[3], aggregate.COLUMNS[6])


def _comparison_table_head(heading: str, intro: str, header: Sequence[str]) -> list[str]:
  """Heading, explanatory paragraph and table header of a comparison section."""
  return [f"### {heading}", "", intro, "", "| " + " | ".join(header) + " |",
          "|" + "---|" * len(header)]


def titles_section(pairs: Sequence[aggregate.TitlePair], split: str = "test") -> str:
  """Markdown comparing each mixture with and without item titles (settings otherwise equal).

  Empty when no setting was run both ways.
  """
  if not pairs:
    return ""
  labels = [c.label for c in TITLE_COLUMNS]
  header = (["setting", "mixture", "n (titles / none)"]
            + [f"{label} titles / none" for label in labels] + ["R@10 without titles"])
  lines = _comparison_table_head(
      "Item text: with and without titles",
      "The same setting with items shown as `<ID>: <title>` and as `<ID>` alone (the "
      "`<dataset>_notitles` variant: same samples and split, several times shorter prompts, "
      "so the same steps of packed rows show the model more samples). Means over seeds; "
      f"\"R@10 without titles\" is the relative change of the mean {split} Recall@10 with "
      "Welch's p where both have >= 2 seeds.", header)
  for pair in pairs:
    for mixture in pair.mixtures:
      stats = [(pair.titled.stat(mixture, c), pair.untitled.stat(mixture, c))
               for c in TITLE_COLUMNS]
      n = next(((a.n, b.n) for a, b in stats if a is not None and b is not None), None)
      cells = [f"{aggregate.format_stat(a)} / {aggregate.format_stat(b)}" for a, b in stats]
      lines.append(f"| {pair.title} | {mixture} | {f'{n[0]} / {n[1]}' if n else '–'} | "
                   + " | ".join(cells) + " | "
                   + aggregate.format_gain(pair.gain(mixture), pair.p_value(mixture)) + " |")
  return "\n".join(lines)


def rates_section(variants: Sequence[aggregate.RateVariant], split: str = "test") -> str:
  """Markdown comparing runs with `seqio_tasks.mixing_rates` bindings with their setting at the
  default rates: against the same mixture there and against its rec_only. Empty without variants.
  """
  if not variants:
    return ""
  labels = [c.label for c in TITLE_COLUMNS]
  header = (["setting", "rates", "mixture", "n"] + labels
            + ["R@10 vs same mixture, default rates", "R@10 vs rec_only, default rates"])
  lines = _comparison_table_head(
      "Mixing rates",
      "Runs of a setting with extra `seqio_tasks.mixing_rates` bindings (seqio_tasks/rates.py) "
      "against the same setting at the default rates, where every task has rate 1.0, so each "
      "of a mixture's k tasks gives 1/k of its samples. Means over seeds; the last columns are "
      f"the relative change of the mean {split} Recall@10, with Welch's p where both have "
      ">= 2 seeds.", header)
  for variant in variants:
    rates = " ".join(f"`{r}`" for r in variant.rates)
    for mixture in variant.variant.mixtures:
      stats = [variant.variant.stat(mixture, c) for c in TITLE_COLUMNS]
      n = max((st.n for st in stats if st is not None), default=0)
      versus = [aggregate.format_gain(variant.gain(mixture, reference),
                                      variant.p_value(mixture, reference))
                for reference in (mixture, grid_lib.BASELINE_MIXTURE)]
      lines.append(f"| {variant.title} | {rates} | {mixture} | {n} | "
                   + " | ".join(aggregate.format_stat(st) for st in stats) + " | "
                   + " | ".join(versus) + " |")
  return "\n".join(lines)


def rate_variant_headline(variant: aggregate.RateVariant, split: str = "test") -> str:
  """The sentence a rate setting's headline bullet ends with: its best mixture against rec_only
  and against the same mixture at the default rates (the runs of the base setting)."""
  rates = " ".join(variant.rates)
  stats = {m: st for m in variant.variant.mixtures
           if (st := variant.variant.stat(m, aggregate.RECALL_10)) is not None}
  if not stats:
    return (f"Mixing rates {rates} on the setting at default rates: compared with it under "
            '"Mixing rates".')
  best = max(stats, key=lambda m: stats[m].mean)
  against = []
  for reference in dict.fromkeys((grid_lib.BASELINE_MIXTURE, best)):
    base = variant.base.stat(reference, aggregate.RECALL_10)
    if base is not None:
      gain = aggregate.format_gain(variant.gain(best, reference), variant.p_value(best, reference))
      against.append(f"{reference} at default rates ({aggregate.format_stat(base)}, n={base.n}) "
                     f"{gain}")
  if not against:
    return (f"Mixing rates {rates} on the setting at default rates, where neither rec_only nor "
            f"{best} has a run: see \"Mixing rates\".")
  return (f"Against the setting at default rates, {best} at {rates} ({split} R@10, Welch's p): "
          + "; ".join(against) + ' (all mixtures under "Mixing rates").')


def budgets_section(series: Sequence[aggregate.BudgetSeries], split: str = "test") -> str:
  """Markdown comparing each setting run at several training lengths (the linear decay moved to
  end at each one's last step), per mixture against its shortest budget. Empty without series."""
  if not series:
    return ""
  labels = [c.label for c in TITLE_COLUMNS]
  header = (["setting", "steps", "mixture", "n", "training (mean)"] + labels
            + ["R@10 vs same mixture, fewest steps"])
  lines = _comparison_table_head(
      "Training length",
      "The same setting trained for different numbers of steps, everything else equal (the "
      "linear decay ends at each run's last step). Means over seeds; \"training\" is the mean "
      "wall-clock training time of the runs on their machines (\"~\": it includes a killed "
      "attempt's estimated time); the last column is the relative "
      f"change of the mean {split} Recall@10 against the same mixture at the fewest steps, with "
      "Welch's p where both have >= 2 seeds.", header)
  for one in series:
    for group in one.groups:
      for mixture in group.mixtures:
        stats = [group.stat(mixture, c) for c in TITLE_COLUMNS]
        n = max((st.n for st in stats if st is not None), default=0)
        versus = ("(reference)" if group is one.shortest else
                  aggregate.format_gain(one.gain(group, mixture), one.p_value(group, mixture)))
        estimated = any(r.get("train_seconds_estimated") for r in group.runs.get(mixture, []))
        lines.append(
            f"| {one.title} | {group.setting['train_steps']} | {mixture} | {n} | "
            f"{'~' if estimated else ''}"
            f"{durations.format_duration(aggregate.mean_train_seconds(group, mixture))} | "
            + " | ".join(aggregate.format_stat(st) for st in stats) + f" | {versus} |")
  return "\n".join(lines)


def machine_description(record: Mapping[str, Any]) -> str:
  """CPU count, CPU model and platform of the machine a record was written on."""
  m = record.get("machine") or {}
  return f"{m.get('nproc', '?')} CPUs ({m.get('cpu') or 'unknown CPU'}), {m.get('platform', '?')}"


def machine_labels(records: Sequence[Mapping[str, Any]]) -> dict[str, str]:
  """{description: "M1", "M2", ...} for the machines of `records`, numbered in the order of each
  machine's earliest run (its record's "date"), so adding later runs keeps the labels."""
  ordered = sorted(records, key=lambda r: str(r.get("date") or ""))
  descriptions = dict.fromkeys(machine_description(r) for r in ordered)
  return {d: f"M{i}" for i, d in enumerate(descriptions, start=1)}


def _machines(records: Sequence[Mapping[str, Any]], labels: Mapping[str, str]) -> str:
  """The header's machine line: one description, or each labelled with its number of runs."""
  if len(labels) > 1:
    counts = {d: sum(machine_description(r) == d for r in records) for d in labels}
    text = "; ".join(f"{label} = {d} ({counts[d]} run{'' if counts[d] == 1 else 's'})"
                     for d, label in labels.items())
  else:
    text = next(iter(labels), "unknown")
  loads = [l[0] for r in records if (l := (r.get("machine") or {}).get("load_average"))]
  load = (f"; 1-minute load average when the runs finished: {min(loads):.1f}-{max(loads):.1f}"
          if loads else "")
  return text + load


SETUP = """\
Each run trains one T5 on one mixture of the dataset (`rec_t5x.<dataset>.<mixture>`) with the same
steps and batch size as every other run of its setting, then evaluates its final checkpoint on the
{SPLIT} split of the dataset's `rec_only` mixture (`rec_t5x.eval`, gin/experiments/ablation_eval.gin):
R@K / NDCG@10 = Recall / NDCG of the held-out last item in a beam-20 search constrained to the
whole catalogue (history items excluded); rank HR@K = hit rate of the target among the ranking
task's candidates ordered by likelihood; RMSE = rating error of the decoded rating (unparseable
outputs scored at the far end of the scale) and of the expected rating under the model ("exp.").
Cells are mean ± sample standard deviation over seeds (n = seeds); one value when n = 1. "R@10 vs
rec_only" is the relative change of the mean {split} Recall@10 against `rec_only`, with the two-sided
Welch t-test p of the seeds' values against `rec_only`'s where both have >= 2 seeds (the headline adds
the two-sided Mann-Whitney U test, which does not assume normally distributed seeds; it calls a gap
significant at Welch p < 0.05). The T5 runs decode
the seeded subset of {split} users listed per setting; the baselines rank all items for all users.
Training losses average over each mixture's own tasks, so compare their shapes, not their levels.
In the runs' tables, "~" before a training time marks one that includes a killed attempt's time,
estimated from its log (rec_t5x/experiments/runner.py); "commit" is the checkout a run was recorded from ("+": with uncommitted changes
to the code; "–": recorded before runs kept it), followed by "(trained ...)" when its training
started from other code; "machine", where the runs come from more than one, is the machine that
recorded a run, as numbered in the header.
"""


TITLES = {
    "test": ("Auxiliary-task ablation: does fine-tuning on MIM / BPR / MLM give T5 recommendation "
             "knowledge?"),
    "validation": ("Tuning on the validation split: which settings let T5 learn recommendations "
                   "at this budget?"),
}


def render(records: Sequence[Mapping[str, Any]], baselines: Baselines, *, command: str,
           generated: str, planned: int | None = None,
           plots: Sequence[tuple[str, str]] = (), split: str = "test",
           group_extra: Callable[[aggregate.Group], Sequence[str]] | None = None,
           headline_extra: Callable[[aggregate.Group], str] | None = None,
           sources: str = "") -> str:
  """The report above the Discussion section.

  Args:
    records: complete run.json records.
    baselines: {dataset: {model: `baselines.read(...)` or None}}.
    command: the exact driver command line.
    generated: timestamp of this report.
    planned: runs in the grid (None: unknown).
    plots: (caption, path relative to the report) of each plot.
    split: the split the records were evaluated on ("test", or "validation" for tuning).
    group_extra: lines to add to each setting's section after its table (the driver passes the
      top-10 list statistics and the paired per-user tests, which read the runs' prediction
      files).
    headline_extra: a sentence to add to each setting's headline ('' for none; the driver passes
      the baselines' Recall@10 on the users the runs decoded, where that is a subset).
    sources: a sentence on where the records were read from, after the machine line.

  Returns:
    Markdown text ending with a newline.
  """
  groups = aggregate.group_records(records)
  machines = machine_labels(records)
  count = f"{len(records)} of {planned}" if planned is not None else f"{len(records)}"
  lines = [
      f"# {TITLES[split]}", "",
      "<!-- Generated by scripts/run_experiment.py from run.json files; everything above "
      "'## Discussion' is rewritten on each run. -->", "",
      f"Command: `{command}`", "",
      f"Generated {generated} from {count} complete run{'' if count == '1' else 's'}. Machine: {_machines(records, machines)}."
      + (f" {sources}" if sources else ""), "",
      "## Headline", ""]
  variants = aggregate.rate_variants(groups)
  variant_of = {id(v.variant): v for v in variants}
  series = aggregate.budget_series(groups)
  shorter = {id(g): one.shortest.setting["train_steps"] for one in series for g in one.groups[1:]}
  if groups:
    for g in groups:
      line = f"- {aggregate.headline(g, baselines.get(g.setting['dataset']), split)}"
      extra = headline_extra(g) if headline_extra is not None else ""
      if extra:
        line += f" {extra}"
      if id(g) in variant_of:
        line += f" {rate_variant_headline(variant_of[id(g)], split)}"
      if id(g) in shorter:
        line += (f" The same setting at {shorter[id(g)]} steps: compared with it under "
                 "\"Training length\".")
      lines.append(line)
  else:
    lines.append("No run has finished yet.")
  lines += ["", "## Setup", "", SETUP.format(SPLIT=split.upper(), split=split), "## Results", ""]
  for group, title in zip(groups, aggregate.section_titles(groups)):
    extra = group_extra(group) if group_extra is not None else ()
    lines += [group_section(group, baselines.get(group.setting["dataset"]), split, extra,
                            machines, title), ""]
  titles = titles_section(aggregate.title_pairs(groups), split)
  if titles:
    lines += [titles, ""]
  rates = rates_section(variants, split)
  if rates:
    lines += [rates, ""]
  budgets = budgets_section(series, split)
  if budgets:
    lines += [budgets, ""]
  if plots:
    lines += ["## Plots", ""]
    lines += [f"![{caption}]({path})\n" for caption, path in plots]
  return "\n".join(lines).rstrip() + "\n"


def write(path: str | os.PathLike, body: str) -> pathlib.Path:
  """Writes `body` plus the file's existing Discussion section (or an empty one), atomically."""
  path = pathlib.Path(path)
  existing = path.read_text(encoding="utf-8") if path.is_file() else ""
  discussion = extract_discussion(existing) or DEFAULT_DISCUSSION
  text = body.rstrip() + "\n\n" + discussion
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise
  return path
