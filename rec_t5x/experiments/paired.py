"""Paired per-user comparison of two retrievers on the same test users (exact McNemar test).

The mean ± std over seeds in the report answers "would another seed give the same gain?". A
single pair of runs (e.g. the ML-1M runs at the whole budget, one seed each) leaves a narrower
question open: could the gap come from which users happened to be evaluated? The two runs
retrieve for the same users, so each user is a matched pair of Bernoulli outcomes (hit@10 or
not), and McNemar's test on the discordant users answers it: under "no difference", a user hit by
exactly one of the two is equally likely to be hit by either, so the number hit only by the first
is Binomial(discordant, 1/2) and the exact two-sided binomial p (scipy.stats.binomtest) is the
test. It says nothing about seed-to-seed variation; the report says so beside the table.

Inputs are the files the runs and baselines already write:
  a T5 run: its retrieval predictions (`key`, `retrieved`, `targets`; rec_t5x/eval.py). Older
    ledger copies kept no `targets` in the retrieval file; then the run's ranking predictions give
    the held-out item of the same key (the ranking task ranks that item among sampled candidates).
    Either way the Recall@10 recomputed from the lists must equal the run's recorded one, or the
    run is left out of the table with the reason (a mismatch means the join is wrong);
  a baseline: the 1-based full-catalogue rank of each user's held-out item (`<split>_full_ranks`
    in `topk.npz`, rec_t5x/baselines/outputs.py), cut to the users the T5 runs decoded.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import math
import os
import pathlib

import numpy as np
from scipy import stats as scipy_stats

from rec_t5x import item_ids
from rec_t5x.experiments import aggregate
from rec_t5x.experiments import commands
from rec_t5x.experiments import grid as grid_lib
from rec_t5x.experiments import retrieval_lists
from rec_t5x.prompts import keys as keys_lib

Hits = dict[int, bool]  # user -> held-out item in the top K
RECALL_TOLERANCE = 1e-6


@dataclasses.dataclass(frozen=True)
class PairedComparison:
  """Hit@K of two retrievers on the users both have, and McNemar's exact test of the difference."""
  users: int
  recall_first: float
  recall_second: float
  only_first: int  # users hit by the first retriever only
  only_second: int
  p_value: float  # exact two-sided; 1.0 when no user is discordant


def compare(first: Hits, second: Hits) -> PairedComparison:
  """McNemar's exact test of `first` against `second` on the users both have.

  Raises:
    ValueError: the two have no user in common.
  """
  users = sorted(set(first) & set(second))
  if not users:
    raise ValueError("paired comparison: the two retrievers share no user")
  a = np.array([first[u] for u in users], dtype=bool)
  b = np.array([second[u] for u in users], dtype=bool)
  only_first, only_second = int(np.sum(a & ~b)), int(np.sum(b & ~a))
  discordant = only_first + only_second
  p = (1.0 if discordant == 0 else
       float(scipy_stats.binomtest(only_first, discordant, 0.5, alternative="two-sided").pvalue))
  return PairedComparison(users=len(users), recall_first=float(a.mean()),
                          recall_second=float(b.mean()), only_first=only_first,
                          only_second=only_second, p_value=min(p, 1.0))


def _targets_by_user(path: pathlib.Path, field: str) -> dict[int, int]:
  """{user: held-out public ID} from a predictions file's `field` (`<i972>` or `972`)."""
  def target(example: dict) -> tuple[int, int]:
    item = item_ids.parse_id(str(example[field]).strip())
    if item is None:
      raise ValueError(f"{field!r} {example[field]!r} is not one item ID")
    return keys_lib.decode_key(example["key"])[0], item

  found: dict[int, int] = {}
  for line_number, (user, item) in retrieval_lists.parsed_lines(
      path, target, f"an int 'key' and a {field!r} naming one item"):
    if found.get(user, item) != item:
      raise ValueError(f"{path}:{line_number}: user {user} has two held-out items "
                       f"({found[user]} and {item})")
    found[user] = item
  return found


def _first_has_field(path: pathlib.Path, field: str) -> bool:
  """Whether the first example of a predictions file has `field` (a file's examples all agree)."""
  first = next(retrieval_lists.parsed_lines(path, dict, "a JSON object"), None)
  return first is not None and field in first[1]


def run_hits(run_dir: str | os.PathLike, split: str = "test",
             k: int = retrieval_lists.K) -> Hits:
  """{user: hit@k} of a T5 run (its run directory or ledger entry).

  Raises:
    ValueError: no retrieval predictions, or a decoded user without a held-out item.
  """
  eval_dir = commands.eval_dir(run_dir, split)
  lists_path = retrieval_lists.find_predictions(eval_dir)
  if lists_path is None:
    raise ValueError(f"{eval_dir}: no retrieval predictions")
  lists = retrieval_lists.read_run_lists(lists_path)
  targets_path = lists_path
  if not _first_has_field(lists_path, "targets"):
    targets_path = retrieval_lists.find_predictions(eval_dir, retrieval_lists.RANKING_GLOB)
    if targets_path is None:
      raise ValueError(f"{lists_path}: no 'targets', and no ranking predictions to take them from")
  targets = _targets_by_user(targets_path, "targets")
  missing = sorted(set(lists) - set(targets))
  if missing:
    raise ValueError(f"{targets_path}: no held-out item for {len(missing)} users of {lists_path} "
                     f"(first: {missing[:5]})")
  return {u: targets[u] in items[:k].tolist() for u, items in lists.items()}


def baseline_hits(baseline_dir: str | os.PathLike, users: set[int] | None = None,
                  split: str = "test", k: int = retrieval_lists.K) -> Hits:
  """{user: full-catalogue rank <= k} of a baseline, over `users` (None: all its users).

  Raises:
    ValueError: the outputs have no ranks for `split`, or lack some of `users`.
  """
  ranks = retrieval_lists.read_baseline_ranks(baseline_dir, split, users)
  return {u: ranks[u] <= k for u in (set(ranks) if users is None else users)}


def _checked_hits(record: Mapping, split: str, k: int) -> tuple[Hits | None, str]:
  """(hits, '') of a run whose recomputed Recall@k equals its recorded one, else (None, why)."""
  label = f"{record['spec']['mixture']} seed {record['spec']['seed']}"
  if not record.get("run_dir"):
    return None, f"{label}: no run directory"
  try:
    hits = run_hits(record["run_dir"], split, k)
  except (OSError, ValueError) as e:
    return None, f"{label}: {e}"
  recorded = aggregate.metric(record, aggregate.RECALL_10) if k == 10 else None
  recomputed = float(np.mean(list(hits.values())))
  if recorded is not None and not math.isclose(recomputed, recorded, abs_tol=RECALL_TOLERANCE):
    return None, (f"{label}: Recall@{k} from its predictions is {recomputed:.4f}, but the run "
                  f"recorded {recorded:.4f}")
  return hits, ""


def _row(first: str, second: str, seed: str, c: PairedComparison) -> str:
  p = aggregate.format_p_value(c.p_value) or "–"
  return (f"| {first} vs {second} | {seed} | {c.users} | {c.recall_first:.4f} | "
          f"{c.recall_second:.4f} | {c.only_first} | {c.only_second} | {p} |")


def setting_lines(runs: Mapping[str, Sequence[Mapping]],
                  baselines: Mapping[str, Mapping | None], split: str = "test", *,
                  k: int = retrieval_lists.K) -> list[str]:
  """The report's paired-test paragraph and table for one setting ([] when nothing to compare).

  Rows: every mixture's run against `rec_only`'s run of the same seed, then each run of the
  mixture with the best mean Recall@k against the strongest baseline on the same users.

  Args:
    runs: {mixture: run records}, each with "run_dir" (runner.load_records) to read predictions.
    baselines: {model: `experiments.baselines.read(...)` or None}.
    split: the evaluated split.
  """
  hits: dict[str, dict[int, Hits]] = {}
  left_out = []
  for mixture, records in runs.items():
    for record in records:
      found, why = _checked_hits(record, split, k)
      if found is None:
        left_out.append(why)
      else:
        hits.setdefault(mixture, {})[int(record["spec"]["seed"])] = found
  rows = []
  reference = hits.get(grid_lib.BASELINE_MIXTURE, {})
  for mixture, by_seed in hits.items():
    if mixture == grid_lib.BASELINE_MIXTURE:
      continue
    for seed in sorted(set(by_seed) & set(reference)):
      rows.append(_row(mixture, grid_lib.BASELINE_MIXTURE, str(seed),
                       compare(by_seed[seed], reference[seed])))
  users = set().union(*(h for by_seed in hits.values() for h in by_seed.values()))
  present = [b for b in baselines.values() if b is not None]
  if hits and present:
    on_users = {b["name"]: baseline_hits(b["path"], users, split, k) for b in present}
    strongest = max(on_users, key=lambda name: np.mean(list(on_users[name].values())))
    best = max(hits, key=lambda m: np.mean([np.mean(list(h.values())) for h in hits[m].values()]))
    for seed, run in sorted(hits[best].items()):
      rows.append(_row(best, f"*{strongest}*", str(seed), compare(run, on_users[strongest])))
  notes = (f" Left out: {'; '.join(left_out)}." if left_out else "")
  if not rows:
    return [f"Paired test: nothing to compare.{notes}"] if left_out else []
  return [f"Paired test on the same users (hit@{k} of each user under both; exact McNemar test on "
          f"the users hit by one only; rec_t5x/experiments/paired.py). It tells whether a gap "
          f"could come from which users were evaluated; it does not measure seed-to-seed "
          f"variation, which the mean ± std above does.{notes}", "",
          f"| comparison | seed | users | R@{k} first | R@{k} second | hit by first only | "
          f"hit by second only | McNemar |",
          "|---|---|---|---|---|---|---|---|", *rows]
