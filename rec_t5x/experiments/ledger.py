"""The report's committed copy of finished runs: each run's record and its ranked lists.

Run directories (checkpoints, TensorBoard events, logs: hundreds of megabytes per run) are not
committed, so a fresh clone or a new machine has none of them, and a report regenerated from
run directories alone would silently lose every run made elsewhere. The ledger keeps, for every
finished run, exactly what the report reads, in the run directory's own layout
(`RunSpec.run_dir` under the ledger):

  <ledger>/<dataset>/<model>/<mixture>/<seed...-key>/run.json   (run_validation.json: tuning)
  <ledger>/.../<split>_eval/predictions/<task>.retrieval.jsonl.gz   key, retrieved (top-K lists),
                                                                    targets (paired tests)
  <ledger>/.../<split>_eval/predictions/<task>.ranking.jsonl.gz     key, ranked, targets (Pop's HR)

(the predictions cut to the fields the report reads: ~90 KB per ML-100K run instead of ~600 KB
with the prompts and log-probabilities),

so `runner.load_records` and `retrieval_lists` read a ledger entry as they read a run directory.
The classical baselines the report sets beside them are kept the same way, in the layout of their
own results root (`rec_t5x.baselines.outputs`), cut to what the report reads:

  <ledger>/baselines/<dataset>/<model>/metrics.json   as written by rec_t5x.baselines.run
  <ledger>/baselines/<dataset>/<model>/topk.npz       users, <split>_public_ids[:, :10], <split>_full_ranks
  <ledger>/baselines/<dataset>/<model>/embeddings.npz item_public_ids (Pop: and item_counts)

(their full top-100 lists, scores and embeddings, the signal sources of other components, stay
in the results root; `python -m rec_t5x.baselines.run` rewrites them).
The driver copies a run into the ledger when it finishes (and, when it reports, every finished run
of its runs directory that the ledger lacks or holds in another version), and reports the union:
a run present in both counts once, from its run directory. Files are rewritten only when their
content changes, and gzip is written with a fixed timestamp, so exporting an unchanged run leaves
the ledger byte-identical (no spurious diffs in git).

Only the standard library is needed (json, gzip); no library keeps such an experiment ledger.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
import gzip
import json
import os
import pathlib
from typing import Any

import numpy as np

from rec_t5x.baselines import outputs
from rec_t5x.experiments import baselines as baselines_lib
from rec_t5x.experiments import commands
from rec_t5x.experiments import grid as grid_lib
from rec_t5x.experiments import retrieval_lists
from rec_t5x.experiments import runner

# The predictions the report reads (retrieval_lists) and their fields; rating ones are not read.
KEPT_FIELDS = {retrieval_lists.PREDICTIONS_GLOB: ("key", "retrieved", "targets"),
               retrieval_lists.RANKING_GLOB: ("key", "ranked", "targets")}
LEDGER_DIR_NAME = "runs"  # inside the report's plots folder: docs/results/runs, docs/tuning/runs
BASELINES_DIR_NAME = "baselines"
SPLITS = ("validation", "test")


def default_dir(plots_dir: str | os.PathLike) -> pathlib.Path:
  """The ledger of a report: `<plots_dir>/runs` (docs/results/runs for docs/results.md)."""
  return pathlib.Path(plots_dir) / LEDGER_DIR_NAME


def identity(record: Mapping[str, Any]) -> str:
  """What makes two records the same run: the spec (evaluation split included), as JSON."""
  return json.dumps(record["spec"], sort_keys=True)


def entry_dir(record: Mapping[str, Any], ledger_dir: str | os.PathLike) -> pathlib.Path:
  """The ledger folder of a record's run (the run directory's path under the ledger)."""
  return grid_lib.RunSpec.from_dict(record["spec"]).run_dir(ledger_dir)


def _write_if_changed(path: pathlib.Path, data: bytes) -> bool:
  try:
    if path.read_bytes() == data:
      return False
  except FileNotFoundError:
    pass
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_bytes(data)
  os.replace(tmp, path)
  return True


def _record_bytes(record: Mapping[str, Any]) -> bytes:
  stored = {k: v for k, v in record.items() if k != "run_dir"}  # where it was read from, not data
  return (json.dumps(stored, indent=2, sort_keys=True) + "\n").encode("utf-8")


def export(record: Mapping[str, Any], run_dir: str | os.PathLike,
           ledger_dir: str | os.PathLike) -> list[pathlib.Path]:
  """Copies one finished run (its record, gzipped retrieval/ranking predictions) into the ledger.

  Args:
    record: the run's complete record (`runner.run_one` / `runner.load_records`).
    run_dir: the run directory the predictions are read from.
    ledger_dir: the ledger root.

  Returns:
    The ledger files written or changed (empty when the ledger already held this version).

  Raises:
    ValueError: the record is not complete.
  """
  if record.get("status") != "complete" or "spec" not in record:
    raise ValueError(f"ledger.export: the record of {run_dir} is not a complete run record")
  split = record.get("eval_split") or record["spec"].get("eval_split", "test")
  target = entry_dir(record, ledger_dir)
  changed = []
  if _write_if_changed(target / runner.record_file(split), _record_bytes(record)):
    changed.append(target / runner.record_file(split))
  for pattern, fields in KEPT_FIELDS.items():
    source = retrieval_lists.find_predictions(commands.eval_dir(run_dir, split), pattern)
    if source is None or source.suffix == ".gz":
      continue
    destination = commands.eval_dir(target, split) / "predictions" / (source.name + ".gz")
    if _write_if_changed(destination, gzip.compress(_kept_lines(source, fields), mtime=0)):
      changed.append(destination)
  return changed


def _kept_lines(path: pathlib.Path, fields: Sequence[str]) -> bytes:
  """The JSON lines of a predictions file with only `fields` (blank lines dropped).

  Raises:
    ValueError: naming the file and line that is not a JSON object holding every field.
  """
  kept = []
  with open(path, encoding="utf-8") as f:
    for line_number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        example = json.loads(line)
        kept.append(json.dumps({name: example[name] for name in fields}, separators=(",", ":")))
      except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}:{line_number}: expected a JSON object with fields "
                         f"{', '.join(fields)} ({e!r})") from e
  return ("\n".join(kept) + "\n").encode("utf-8")


def export_all(records: Iterable[Mapping[str, Any]],
               ledger_dir: str | os.PathLike) -> list[pathlib.Path]:
  """`export` of every record read from a run directory (its "run_dir"); the files changed."""
  changed = []
  for record in records:
    if record.get("run_dir") and not inside(record["run_dir"], ledger_dir):
      changed += export(record, record["run_dir"], ledger_dir)
  return changed


def inside(path: str | os.PathLike, ledger_dir: str | os.PathLike) -> bool:
  """Whether `path` (e.g. a record's "run_dir") lies in the ledger."""
  return pathlib.Path(path).resolve().is_relative_to(pathlib.Path(ledger_dir).resolve())


def merge(local: Sequence[Mapping[str, Any]],
          archived: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """The union of run-directory records and ledger records; a run in both counts once (local)."""
  seen = {identity(r) for r in local}
  return [dict(r) for r in local] + [dict(r) for r in archived if identity(r) not in seen]


def holds(spec: grid_lib.RunSpec, ledger_dir: str | os.PathLike) -> bool:
  """Whether the ledger has a complete record written for exactly `spec`."""
  return bool(runner.load_records([spec.run_dir(ledger_dir)], [spec]))


def grid_records(specs: Sequence[grid_lib.RunSpec], runs_dir: str | os.PathLike,
                 ledger_dir: str | os.PathLike) -> list[dict[str, Any]]:
  """The finished runs of a grid, each from its run directory or else from the ledger."""
  records = []
  for spec in specs:
    for root in (runs_dir, ledger_dir):
      found = runner.load_records([spec.run_dir(root)], [spec])
      if found:
        records.append(found[0])
        break
  return records


def baselines_dir(ledger_dir: str | os.PathLike) -> pathlib.Path:
  """The baselines' results root inside the ledger (`rec_t5x.experiments.baselines.read` reads it)."""
  return pathlib.Path(ledger_dir) / BASELINES_DIR_NAME


def _baseline_arrays(source: pathlib.Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """The report's part of a baseline's topk.npz and embeddings.npz (module docstring)."""
  loaded = outputs.load(source)
  topk = {"users": loaded["topk"]["users"]}
  for split in SPLITS:
    for name, cut in ((f"{split}_public_ids", retrieval_lists.K), (f"{split}_full_ranks", None)):
      if name in loaded["topk"]:
        array = loaded["topk"][name]
        topk[name] = array[:, :cut] if cut else array
  embeddings = {name: array for name, array in loaded["embeddings"].items()
                if name in ("item_public_ids", "item_counts")}
  return topk, embeddings


def export_baselines(baselines: Mapping[str, Mapping[str, Mapping[str, Any] | None]],
                     ledger_dir: str | os.PathLike) -> list[pathlib.Path]:
  """Copies the report's part of each baseline result into the ledger, unless it holds that run.

  Args:
    baselines: {dataset: {model: `baselines.read(...)` or None}} read from a results root.
    ledger_dir: the ledger root.

  Returns:
    The ledger folders written (a baseline whose metrics.json the ledger already holds is kept).
  """
  written = []
  root = baselines_dir(ledger_dir)
  for models in baselines.values():
    for model, result in (models or {}).items():
      if result is None or inside(result["path"], ledger_dir):
        continue
      source = pathlib.Path(result["path"])
      target = root / source.parent.name / model
      metrics = (source / outputs.METRICS_FILE).read_bytes()
      if (target / outputs.METRICS_FILE).is_file() and (
          target / outputs.METRICS_FILE).read_bytes() == metrics:
        continue
      topk, embeddings = _baseline_arrays(source)
      target.mkdir(parents=True, exist_ok=True)
      (target / outputs.METRICS_FILE).unlink(missing_ok=True)  # incomplete until rewritten
      np.savez_compressed(target / outputs.TOPK_FILE, **topk)
      np.savez_compressed(target / outputs.EMBEDDINGS_FILE, **embeddings)
      _write_if_changed(target / outputs.METRICS_FILE, metrics)  # last: marks the copy complete
      written.append(target)
  return written


def fill_baselines(baselines: Mapping[str, Mapping[str, Mapping[str, Any] | None]],
                   ledger_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
  """`baselines` with each missing result (None) read from the ledger, when it holds one."""
  root = baselines_dir(ledger_dir)
  return {dataset: {model: result if result is not None
                    else baselines_lib.read(root, dataset, model)
                    for model, result in (models or {}).items()}
          for dataset, models in baselines.items()}
