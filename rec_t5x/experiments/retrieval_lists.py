"""Top-10 list statistics (coverage, popularity bias) of T5 runs and baselines; Pop as ranker.

Recall@10 says how often a list hits; these statistics say what the lists are made of, which is
how one tells a model that learned personal preferences from one that learned item popularity:

  coverage@K      distinct items over all users' top-K lists / catalogue size (Pop: K / catalogue);
  popular share   share of all top-K slots taken by the `num_popular` most interacted-with items of
                  the training data (Pop: 1.0);
  Pop overlap@K   mean over users of |top-K ∩ Pop's top-K for the same user| / K (Pop: 1.0).

Inputs are the files the runs already write: a T5 run's retrieval predictions
(`<eval dir>/predictions/<task>.retrieval.jsonl`, one JSON object per example with `key` =
user << 24 | position and `retrieved` = public item IDs, best first; rec_t5x/eval.py; or its
gzipped copy in the report's ledger) and a
baseline's `topk.npz` / Pop's `embeddings.npz` (rec_t5x/baselines/outputs.py). Popularity is Pop's
`item_counts` (training interactions), so the statistics need no dataset load. The same counts
order each ranking example's candidates (`<eval dir>/predictions/<task>.ranking.jsonl`, field
`ranked`) to give Pop's rank HR@1/5 next to the T5 runs'. numpy does all the work; no library
computes these numbers from these files.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
import dataclasses
import functools
import gzip
import json
import os
import pathlib
from typing import TypeVar

import numpy as np

from rec_t5x import item_ids
from rec_t5x.baselines import outputs
from rec_t5x.experiments import commands
from rec_t5x.prompts import keys as keys_lib

K = 10
NUM_POPULAR = 100
PREDICTIONS_GLOB = "*.retrieval.jsonl"
RANKING_GLOB = "*.ranking.jsonl"

Lists = dict[int, np.ndarray]  # user -> public item IDs, best first
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Popularity:
  """Training interaction counts of every catalogue item, by public ID."""
  public_ids: np.ndarray  # int64 [num_items]
  counts: np.ndarray  # int64 [num_items]

  def __post_init__(self):
    if self.public_ids.shape != self.counts.shape or self.public_ids.ndim != 1:
      raise ValueError(f"Popularity: public_ids {self.public_ids.shape} and counts "
                       f"{self.counts.shape} must be 1-D and of the same length")

  @property
  def catalogue_size(self) -> int:
    return int(self.public_ids.size)

  @functools.cached_property
  def _index(self) -> dict[int, int]:
    return {int(p): i for i, p in enumerate(self.public_ids)}

  def count(self, public_id: int) -> int:
    """Training interactions of one item; ValueError naming an ID outside the catalogue."""
    try:
      return int(self.counts[self._index[int(public_id)]])
    except KeyError:
      raise ValueError(f"item ID {public_id} is not in the catalogue") from None

  def most_popular(self, n: int) -> set[int]:
    """Public IDs of the `n` items with the most training interactions (ties: lower index first)."""
    order = np.argsort(-self.counts, kind="stable")[:n]
    return {int(i) for i in self.public_ids[order]}


@dataclasses.dataclass(frozen=True)
class ListStats:
  """Statistics of a set of top-K lists (see the module docstring)."""
  coverage: float
  popular_share: float
  pop_overlap: float | None  # None without Pop's lists for these users
  num_lists: int


def list_stats(lists: Lists, popularity: Popularity, pop_lists: Lists | None = None, *,
               k: int = K, num_popular: int = NUM_POPULAR) -> ListStats:
  """Coverage@k, popular share and Pop overlap@k of `lists` (each cut to its first k items).

  Raises:
    ValueError: no lists, or a user of `lists` missing from `pop_lists`.
  """
  if not lists:
    raise ValueError("list_stats: no lists")
  top = {user: np.asarray(items)[:k] for user, items in lists.items()}
  slots = np.concatenate(list(top.values()))
  popular = popularity.most_popular(num_popular)
  overlap = None
  if pop_lists is not None:
    missing = sorted(set(top) - set(pop_lists))
    if missing:
      raise ValueError(f"list_stats: {len(missing)} users have no Pop list (first: {missing[:5]})")
    overlap = float(np.mean([len(set(items.tolist()) & set(np.asarray(pop_lists[u])[:k].tolist()))
                             / k for u, items in top.items()]))
  return ListStats(coverage=len(set(slots.tolist())) / popularity.catalogue_size,
                   popular_share=float(np.mean([int(i) in popular for i in slots])),
                   pop_overlap=overlap, num_lists=len(top))


def read_popularity(pop_dir: str | os.PathLike) -> Popularity:
  """Pop's training counts from `<pop_dir>/embeddings.npz` (item_counts, item_public_ids)."""
  path = pathlib.Path(pop_dir) / outputs.EMBEDDINGS_FILE
  with np.load(path) as arrays:
    for name in ("item_counts", "item_public_ids"):
      if name not in arrays.files:
        raise ValueError(f"{path}: no array {name!r} (expected Pop's outputs, "
                         f"rec_t5x/baselines/outputs.py)")
    return Popularity(public_ids=arrays["item_public_ids"].astype(np.int64),
                      counts=arrays["item_counts"].astype(np.int64))


def read_baseline_lists(baseline_dir: str | os.PathLike, split: str = "test") -> Lists:
  """{user: top public IDs} of a baseline's `topk.npz` for `split`."""
  path = pathlib.Path(baseline_dir) / outputs.TOPK_FILE
  with np.load(path) as arrays:
    name = f"{split}_public_ids"
    if name not in arrays.files or "users" not in arrays.files:
      raise ValueError(f"{path}: no arrays 'users' and {name!r} (rec_t5x/baselines/outputs.py)")
    return {int(u): row for u, row in zip(arrays["users"], arrays[name].astype(np.int64))}


def baseline_recall_on_users(baseline_dir: str | os.PathLike, users: set[int], split: str = "test",
                             k: int = K) -> tuple[float, int]:
  """A baseline's Recall@k over `users` only, from its saved full-catalogue target ranks.

  Returns:
    (recall, number of users the baseline has): the T5 runs may decode a seeded subset of the
    users, and this puts the baselines on the same users.

  Raises:
    ValueError: the outputs have no ranks for `split`, or lack some of `users`.
  """
  ranks = read_baseline_ranks(baseline_dir, split, users)
  return float(np.mean([ranks[u] <= k for u in users])), len(ranks)


def read_baseline_ranks(baseline_dir: str | os.PathLike, split: str = "test",
                        users: set[int] | None = None) -> dict[int, int]:
  """{user: 1-based full-catalogue rank of the held-out item} of a baseline's `topk.npz`.

  Raises:
    ValueError: the outputs have no ranks for `split`, or lack some of `users` (None: no check).
  """
  path = pathlib.Path(baseline_dir) / outputs.TOPK_FILE
  with np.load(path) as arrays:
    name = f"{split}_full_ranks"
    if name not in arrays.files or "users" not in arrays.files:
      raise ValueError(f"{path}: no arrays 'users' and {name!r} (rec_t5x/baselines/outputs.py)")
    ranks = dict(zip(arrays["users"].tolist(), arrays[name].tolist()))
  missing = sorted(set(users or ()) - set(ranks))
  if missing:
    raise ValueError(f"{path}: no {split} rank for {len(missing)} decoded users, e.g. {missing[:5]}")
  return ranks


def find_predictions(eval_dir: str | os.PathLike,
                     pattern: str = PREDICTIONS_GLOB) -> pathlib.Path | None:
  """The retrieval (or `pattern`) predictions file of an eval output dir, None when there is none.

  A gzipped copy (`<name>.gz`, as the report's ledger keeps them, rec_t5x/experiments/ledger.py)
  is found as well; a folder holding both a file and its gzipped copy is ambiguous.
  """
  folder = pathlib.Path(eval_dir) / "predictions"
  found = sorted([*folder.glob(pattern), *folder.glob(pattern + ".gz")])
  if len(found) > 1:
    raise ValueError(f"{eval_dir}/predictions: several {pattern} files {[p.name for p in found]}")
  return found[0] if found else None


def parsed_lines(path: str | os.PathLike, parse: Callable[[dict], T],
                  expected: str) -> Iterator[tuple[int, T]]:
  """(line number, parse(JSON object)) of each non-blank line of a JSON-lines file.

  Raises:
    ValueError: naming the file, the line and `expected` when a line does not parse.
  """
  opener = gzip.open if str(path).endswith(".gz") else open
  with opener(path, "rt", encoding="utf-8") as f:
    for line_number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        yield line_number, parse(json.loads(line))
      except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}:{line_number}: expected {expected} ({e})") from e


def pop_ranking_hits(path: str | os.PathLike, popularity: Popularity,
                     cutoffs: Sequence[int] = (1, 5)) -> dict[int, float]:
  """Hit rates of Pop ordering the candidates of a T5 run's ranking predictions.

  Each line's `ranked` holds the example's candidates (in the model's order) and `targets` the
  held-out item (`<i972>` or `972`); Pop orders the candidates by training count, ties by public ID,
  so the reference never depends on the model's order.

  Returns:
    {cutoff: HR@cutoff} over the file's examples.
  """
  def pop_rank(example: dict) -> int:
    order = sorted((int(i) for i in example["ranked"]), key=lambda i: (-popularity.count(i), i))
    return order.index(item_ids.parse_id(example["targets"]))

  ranks = [rank for _, rank in parsed_lines(
      path, pop_rank, "'targets' naming one of the 'ranked' catalogue items")]
  if not ranks:
    raise ValueError(f"{path}: no examples")
  return {c: sum(rank < c for rank in ranks) / len(ranks) for c in cutoffs}


def read_run_lists(path: str | os.PathLike) -> Lists:
  """{user: retrieved public IDs} of a T5 run's retrieval predictions (JSON lines).

  Raises:
    ValueError: naming the file and line of a malformed line or a user seen twice.
  """
  def user_list(example: dict) -> tuple[int, np.ndarray]:
    user, _ = keys_lib.decode_key(example["key"])
    return user, np.asarray([int(i) for i in example["retrieved"]], dtype=np.int64)

  lists: Lists = {}
  for line_number, (user, retrieved) in parsed_lines(
      path, user_list, "a JSON object with an int 'key' and a list of int 'retrieved'"):
    if user in lists:
      raise ValueError(f"{path}:{line_number}: user {user} appears twice")
    lists[user] = retrieved
  return lists


def mean(values: Sequence[float | None]) -> float | None:
  present = [v for v in values if v is not None]
  return float(np.mean(present)) if present else None


def table(run_stats: Mapping[str, Sequence[ListStats]],
          baseline_stats: Mapping[str, ListStats | None], *, k: int = K,
          num_popular: int = NUM_POPULAR) -> list[str]:
  """Markdown rows: one per mixture (mean over its runs) and one per baseline."""
  def cell(value):
    return "–" if value is None else f"{value:.3f}"
  lines = [f"| lists | n | coverage@{k} | top-{num_popular} share | Pop overlap@{k} |",
           "|---|---|---|---|---|"]
  for mixture, stats in run_stats.items():
    if not stats:
      continue
    lines.append(f"| {mixture} | {len(stats)} | {cell(mean([s.coverage for s in stats]))} | "
                 f"{cell(mean([s.popular_share for s in stats]))} | "
                 f"{cell(mean([s.pop_overlap for s in stats]))} |")
  for name, stats in baseline_stats.items():
    if stats is not None:
      lines.append(f"| *{name}* (baseline) | 1 | {cell(stats.coverage)} | "
                   f"{cell(stats.popular_share)} | {cell(stats.pop_overlap)} |")
  return lines


def baseline_scores_on_users(baselines: Mapping[str, Mapping | None], users: set[int],
                             split: str = "test", k: int = K) -> str:
  """'SASRec 0.2710, BPR-MF 0.0830, ...' (Recall@k on `users` only, best first), or '' when the
  baselines have no user outside `users` (then their own numbers are already on the same users)."""
  if not users:
    return ""
  on_users = {b["name"]: baseline_recall_on_users(b["path"], users, split, k)
              for b in baselines.values() if b is not None}
  if not any(total > len(users) for _, total in on_users.values()):
    return ""
  return ", ".join(f"{name} {recall:.4f}" for name, (recall, _) in
                   sorted(on_users.items(), key=lambda item: -item[1][0]))


def decoded_users(runs: Mapping[str, Sequence[Mapping]], split: str = "test") -> set[int]:
  """The users whose retrieval predictions any of `runs` ({mixture: records}) wrote."""
  users: set[int] = set()
  for records in runs.values():
    for record in records:
      path = record.get("run_dir") and find_predictions(
          commands.eval_dir(record["run_dir"], split))
      if path:
        users.update(read_run_lists(path))
  return users


def headline_note(runs: Mapping[str, Sequence[Mapping]], baselines: Mapping[str, Mapping | None],
                  split: str = "test", k: int = K) -> str:
  """The baselines' Recall@k on the users the T5 runs decoded, for a setting's headline, when the
  runs decoded a subset of the users (the baselines' own numbers cover all of them); else ''."""
  users = decoded_users(runs, split)
  scores = baseline_scores_on_users(baselines, users, split, k)
  if not scores:
    return ""
  return (f"On the {len(users)} {split} users the T5 runs decoded, the baselines score {split} "
          f"R@{k} {scores}.")


def setting_lines(runs: Mapping[str, Sequence[Mapping]], baselines: Mapping[str, Mapping | None],
                  split: str = "test", *, k: int = K,
                  num_popular: int = NUM_POPULAR) -> list[str]:
  """The report's "top-10 lists" paragraph and table of one setting.

  Args:
    runs: {mixture: run records}; a record's "run_dir" (added by `runner.load_records`) locates
      its predictions under `<run_dir>/<split>_eval/predictions/`.
    baselines: {model: `experiments.baselines.read(...)` or None}; Pop's outputs give popularity.
      Their lists are cut to the users the runs decoded (coverage grows with the number of lists),
      or all users when no run has predictions.
    split: the evaluated split.

  Returns:
    Markdown lines; a single explanatory line when Pop's outputs (the popularity) are missing.
  """
  pop = baselines.get("pop")
  if pop is None:
    return [f"Top-{k} lists: not analysed (Pop's outputs give the item popularity; run the "
            "baselines first)."]
  popularity = read_popularity(pop["path"])
  pop_lists = read_baseline_lists(pop["path"], split)
  run_stats: dict[str, list[ListStats]] = {}
  without = []
  users: set[int] = set()
  for mixture, records in runs.items():
    for record in records:
      path = record.get("run_dir") and find_predictions(
          commands.eval_dir(record["run_dir"], split))
      if not path:
        without.append(f"{mixture} seed {record['spec']['seed']}")
        continue
      lists = read_run_lists(path)
      users.update(lists)
      run_stats.setdefault(mixture, []).append(
          list_stats(lists, popularity, pop_lists, k=k, num_popular=num_popular))

  def same_users(lists: Lists) -> Lists:  # coverage grows with the number of lists
    return {u: items for u, items in lists.items() if u in users} if users else lists

  baseline_stats = {
      b["name"]: list_stats(same_users(read_baseline_lists(b["path"], split)), popularity,
                            pop_lists, k=k, num_popular=num_popular)
      for b in baselines.values() if b is not None}
  notes = f" No predictions file: {', '.join(without)}." if without else ""
  scores = baseline_scores_on_users(baselines, users, split, k)
  if scores:
    notes += (f" On these {len(users)} users the baselines score {split} R@{k} {scores} (the "
              f"table above has them on every {split} user).")
  ranking = next((path for records in runs.values() for record in records
                  if record.get("run_dir") and (path := find_predictions(
                      commands.eval_dir(record["run_dir"], split), RANKING_GLOB))), None)
  if ranking is not None:
    pop_hits = pop_ranking_hits(ranking, popularity)
    notes += (f" Pop ordering the ranking task's candidates by training count scores rank "
                f"HR@1 {pop_hits[1]:.4f} and HR@5 {pop_hits[5]:.4f} on these users (the T5 "
                f"runs' rank HR@K above).")
  whose = (f"the {len(users)} {split} users the T5 runs decoded" if users
           else f"every {split} user")
  return [f"Top-{k} lists of {whose} (coverage@{k}: distinct items in all lists / "
          f"catalogue; top-{num_popular} share: share of list slots taken by the {num_popular} "
          f"items with most training interactions; Pop overlap@{k}: items shared with Pop's list "
          f"for the same user / {k}; rec_t5x/experiments/retrieval_lists.py).{notes}", "",
          *table(run_stats, baseline_stats, k=k, num_popular=num_popular)]
