"""The ablation driver's command line (scripts/run_experiment.py): run a grid, then report it.

  python scripts/run_experiment.py --grid headline
  python scripts/run_experiment.py --grid smoke --runs_dir /tmp/exp --results /tmp/exp/results.md \
      --plots_dir /tmp/exp/plots
  python scripts/run_experiment.py --grid full --models tiny --seeds 0 --train_steps 500

Steps: expand the grid (a preset of `rec_t5x.experiments.grid.PRESETS` with the flags' overrides);
optionally train the missing baselines; run every spec (`runner.run_one`: finished runs are
skipped, interrupted ones resume); then regenerate the report and plots from the records of the
grid's runs (`--report_all_runs`: of every run under --runs_dir evaluated on the split). A failed
run stops the grid; the report is still written from the finished runs and the exit status is 1.
Paths given on the command line are relative to the working directory; the defaults are inside
the repository.

Every finished run is also copied into the report's ledger (`--ledger_dir`, default
`<plots_dir>/runs`, i.e. docs/results/runs/; rec_t5x/experiments/ledger.py): its record and ranked
lists, a few hundred kilobytes, committed with the report. The report is built from the runs
directory and the ledger together, so a fresh clone regenerates it (`--report_only`) without the
run directories, and runs made on other machines are never dropped from it. A run the ledger
holds counts as finished and is skipped (`--rerun_recorded` trains it again on this machine).

Tuning: `--eval_split validation` evaluates on the validation split and reports to docs/tuning.md
(docs/tuning/ for plots); settings are chosen there, and only the chosen ones are run on test for
docs/results.md. A trained run is shared: evaluating it on the other split does not retrain it.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
import os
import pathlib
import sys
from typing import Any

from rec_t5x.experiments import aggregate
from rec_t5x.experiments import baselines as baselines_lib
from rec_t5x.experiments import commands
from rec_t5x.experiments import grid as grid_lib
from rec_t5x.experiments import ledger
from rec_t5x.experiments import paired
from rec_t5x.experiments import plots as plots_lib
from rec_t5x.experiments import report as report_lib
from rec_t5x.experiments import retrieval_lists
from rec_t5x.experiments import runner

DEFAULT_RUNS_DIR = grid_lib.REPO_ROOT / "runs" / "experiment"
DEFAULT_RESULTS = {"test": grid_lib.REPO_ROOT / "docs" / "results.md",
                   "validation": grid_lib.REPO_ROOT / "docs" / "tuning.md"}
DEFAULT_PLOTS_DIR = {"test": grid_lib.REPO_ROOT / "docs" / "results",
                     "validation": grid_lib.REPO_ROOT / "docs" / "tuning"}
_ALL = ("all", "none")


def _names(text: str) -> tuple[str, ...]:
  return tuple(part.strip() for part in text.split(",") if part.strip())


def _ints(text: str) -> tuple[int, ...]:
  try:
    return tuple(int(part) for part in _names(text))
  except ValueError as e:
    raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e


def _users(text: str) -> int | None:
  if text.strip().lower() in _ALL:
    return None
  try:
    return int(text)
  except ValueError as e:
    raise argparse.ArgumentTypeError(f"expected an integer or 'all', got {text!r}") from e


def build_parser() -> argparse.ArgumentParser:
  """The driver's flags."""
  p = argparse.ArgumentParser(prog="scripts/run_experiment.py", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--grid", required=True, choices=sorted(grid_lib.PRESETS), help="preset grid")
  p.add_argument("--datasets", type=_names, help="comma-separated, e.g. ml100k,ml1m")
  p.add_argument("--models", type=_names, help="comma-separated model files, e.g. tiny,small")
  p.add_argument("--mixtures", type=_names,
                 help=f"comma-separated, from {','.join(grid_lib.MIXTURES)}")
  p.add_argument("--seeds", type=_ints, help="comma-separated, e.g. 0,1,2")
  p.add_argument("--train_steps", type=int, help="steps of every run")
  p.add_argument("--batch_size", type=int, help="global batch of every run")
  p.add_argument("--decode_max_examples", type=_users, default=argparse.SUPPRESS,
                 help="test users decoded per task (a seeded subset); 'all' for every user")
  p.add_argument("--initial_checkpoint",
                 help="FLAN-T5 / T5X / HF checkpoint to fine-tune (INITIAL_CHECKPOINT_PATH); "
                      "the runs then use the T5 vocabulary (--t5_vocabulary), so digit-ID "
                      "datasets (--datasets ml100k), and T5X's fine-tuning rate (constant 1e-3) "
                      "unless --gin sets one")
  p.add_argument("--t5_vocabulary", default=None,
                 help=f"the T5 sentencepiece.model for --initial_checkpoint (default "
                      f"${commands.ENV_VOCABULARY})")
  p.add_argument("--gin", action="append", default=None, metavar="NAME=VALUE",
                 help="extra training gin binding (repeatable; part of each run's identity), "
                      "added to the grid's own bindings (one of the same name is replaced), "
                      "e.g. seqio_tasks.mixing_rates.mim=2 (compared under 'Mixing rates')")
  p.add_argument("--eval_split", choices=grid_lib.EVAL_SPLITS, default="test",
                 help="test: reported results (docs/results.md); validation: tuning "
                      "(docs/tuning.md)")
  p.add_argument("--runs_dir", type=pathlib.Path, default=DEFAULT_RUNS_DIR)
  p.add_argument("--results", type=pathlib.Path, default=None,
                 help="report path (default docs/results.md, or docs/tuning.md for validation)")
  p.add_argument("--plots_dir", type=pathlib.Path, default=None,
                 help="plots folder (default docs/results/, or docs/tuning/ for validation)")
  p.add_argument("--ledger_dir", type=pathlib.Path, default=None,
                 help="committed copies of the finished runs' records and ranked lists, read "
                      "with --runs_dir for the report (default <plots_dir>/runs: "
                      "docs/results/runs/, docs/tuning/runs/)")
  p.add_argument("--rerun_recorded", action="store_true",
                 help="train and evaluate on this machine the runs that only the ledger holds "
                      "(a reproduction; their ledger copy is then replaced by the new record), "
                      "instead of skipping them as finished")
  p.add_argument("--report_all_runs", action="store_true",
                 help="report every run under --runs_dir evaluated on the split, not only the "
                      "grid's (e.g. a tuning report over several invocations)")
  p.add_argument("--run_baselines", action="store_true",
                 help="train the baselines that have no result yet (otherwise they show 'not run')")
  p.add_argument("--baseline_max_train_seconds", type=float,
                 default=baselines_lib.DEFAULT_MAX_TRAIN_SECONDS,
                 help="wall-clock cap per baseline")
  p.add_argument("--baselines_dir", type=pathlib.Path, default=None,
                 help="baseline results root (default <data_dir>/baselines)")
  p.add_argument("--dry_run", action="store_true",
                 help="list the runs and their state; run nothing")
  p.add_argument("--report_only", action="store_true",
                 help="regenerate the report and plots from the finished runs; train nothing")
  p.add_argument("--quiet", action="store_true", help="keep subprocess output in the logs only")
  return p


def grid_from_args(args: argparse.Namespace,
                   environ: dict[str, str] | None = None) -> grid_lib.Grid:
  """The preset with the flags' overrides (only the flags that were given).

  Raises:
    ValueError: for an invalid override (e.g. --initial_checkpoint without a T5 vocabulary).
  """
  environ = os.environ if environ is None else environ
  overrides: dict[str, Any] = {}
  for name in ("datasets", "models", "mixtures", "seeds", "train_steps", "batch_size"):
    if getattr(args, name) is not None:
      overrides[name] = getattr(args, name)
  if hasattr(args, "decode_max_examples"):  # Absent unless given ('all' gives None).
    overrides["decode_max_examples"] = args.decode_max_examples
  if args.initial_checkpoint:
    overrides["initial_checkpoint"] = os.path.abspath(args.initial_checkpoint)
    vocabulary = args.t5_vocabulary or environ.get(commands.ENV_VOCABULARY)
    overrides["vocabulary"] = os.path.abspath(vocabulary) if vocabulary else None
  elif args.t5_vocabulary:
    raise ValueError("--t5_vocabulary is only used with --initial_checkpoint (runs from scratch "
                     "use the dataset's vocabulary)")
  bindings = grid_lib.preset(args.grid).gin_bindings
  if args.initial_checkpoint:  # fine-tuning: T5X's constant 1e-3, not the from-scratch decay
    bindings = ()
  elif args.train_steps is not None:  # the preset's learning-rate decay follows the new budget
    bindings = grid_lib.rescale_linear_decay(bindings, args.train_steps)
  # --gin adds to those (replacing a binding of the same name); it never drops the others.
  overrides["gin_bindings"] = grid_lib.merge_bindings(bindings, args.gin or ())
  overrides["eval_split"] = args.eval_split
  return grid_lib.preset(args.grid).replace(**overrides)


def _state(spec: grid_lib.RunSpec, run_dir: pathlib.Path) -> str:
  if runner.is_done(spec, run_dir):
    return "done"
  if runner.is_trained(spec, run_dir):
    return "trained, not evaluated"
  return "partly trained" if run_dir.is_dir() else "new"


def _relative(path: pathlib.Path, start: pathlib.Path) -> str:
  return os.path.relpath(path.resolve(), start.resolve())


def write_outputs(records: list[dict[str, Any]], baselines: dict[str, Any], *,
                  results: pathlib.Path, plots_dir: pathlib.Path, command: str,
                  planned: int | None, split: str = "test", sources: str = "") -> pathlib.Path:
  """Plots and the report from `records`; returns the report's path."""
  groups = aggregate.group_records(records)
  plots = [(caption, _relative(path, results.parent))
           for caption, path in plots_lib.write_all(groups, baselines, plots_dir, split)]
  def top_lists_and_paired_test(group: aggregate.Group) -> list[str]:
    in_report_order = {mixture: group.runs[mixture] for mixture in group.mixtures}
    dataset_baselines = baselines.get(group.setting["dataset"]) or {}
    paired_lines = paired.setting_lines(in_report_order, dataset_baselines, split)
    return [*retrieval_lists.setting_lines(in_report_order, dataset_baselines, split),
            *([""] + paired_lines if paired_lines else [])]

  def same_users(group: aggregate.Group) -> str:
    return retrieval_lists.headline_note(group.runs,
                                         baselines.get(group.setting["dataset"]) or {}, split)

  body = report_lib.render(records, baselines, command=command, generated=runner.utc_now(),
                           planned=planned, plots=plots, split=split,
                           group_extra=top_lists_and_paired_test,
                           headline_extra=same_users, sources=sources)
  return report_lib.write(results, body)


def checkout_root(start: str | os.PathLike) -> pathlib.Path | None:
  """The git checkout that holds `start` (the nearest folder up with a `.git`), or None."""
  path = pathlib.Path(start).resolve()
  for folder in (path, *path.parents):
    if (folder / ".git").exists():
      return folder
  return None


def foreign_checkout_warning(cwd: str | os.PathLike,
                             repo_root: str | os.PathLike = grid_lib.REPO_ROOT) -> str | None:
  """A warning when the driver runs inside one checkout but imports rec_t5x from another.

  An editable install (`pip install -e`) fixes the package, and so the defaults (runs/,
  docs/results.md, docs/results/), to the checkout it was installed from; run from a second clone
  with the first one's interpreter, the driver would train that checkout's code and write its
  report there. `PYTHONPATH=<clone>` makes the clone's own code and paths the ones used.
  """
  here = checkout_root(cwd)
  if here is None or here == pathlib.Path(repo_root).resolve():
    return None
  return (f"[experiment] warning: the working directory is in the checkout {here}, but rec_t5x "
          f"is imported from {repo_root}, so that checkout's code runs and the default outputs "
          f"(runs/experiment, docs/results.md, docs/results/) are written there; run with "
          f"PYTHONPATH={here} to use this checkout")



def _runs(n: int) -> str:
  """'1 run', '3 runs'."""
  return f"{n} run{'' if n == 1 else 's'}"


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the driver; returns the exit status."""
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = build_parser()
  args = parser.parse_args(argv)
  warning = foreign_checkout_warning(os.getcwd())
  if warning:
    print(warning, file=sys.stderr)
  try:
    grid = grid_from_args(args)
  except ValueError as e:
    parser.error(str(e))
  specs = list(grid.runs())
  runs_dir = args.runs_dir.resolve()
  run_dirs = [spec.run_dir(runs_dir) for spec in specs]
  print(f"[experiment] grid {grid.name}: {_runs(len(specs))} of {grid.train_steps} steps x batch "
        f"{grid.batch_size} under {runs_dir}")
  split = grid.eval_split
  plots_dir = args.plots_dir or DEFAULT_PLOTS_DIR[split]
  ledger_dir = (args.ledger_dir or ledger.default_dir(plots_dir)).resolve()

  def recorded_elsewhere(spec: grid_lib.RunSpec, run_dir: pathlib.Path) -> bool:
    return (not args.rerun_recorded and not runner.is_done(spec, run_dir)
            and ledger.holds(spec, ledger_dir))

  if args.dry_run:
    for spec, run_dir in zip(specs, run_dirs):
      state = "done (ledger)" if recorded_elsewhere(spec, run_dir) else _state(spec, run_dir)
      print(f"  {state:<22} {spec.dataset}/{spec.model}/{spec.mixture} seed "
            f"{spec.seed}: {run_dir}")
    return 0
  baselines_root = args.baselines_dir or baselines_lib.default_root()
  echo = not args.quiet

  def execute(command, *, env, log_path):
    runner.execute(command, env=env, log_path=log_path, echo=echo)

  status = 0
  exported: list[pathlib.Path] = []  # ledger files written, by the runs and by the final sweep
  if not args.report_only:
    try:
      if args.run_baselines:
        baselines_lib.run_missing(baselines_root, grid.datasets, args.baseline_max_train_seconds,
                                  executor=execute)
      rows = runner.VocabRows()
      for i, spec in enumerate(specs, 1):
        print(f"[experiment] run {i}/{len(specs)}")
        if recorded_elsewhere(spec, spec.run_dir(runs_dir)):
          print(f"[experiment] in the ledger, skipped (--rerun_recorded trains it here): "
                f"{spec.run_dir(ledger_dir)}")
          continue
        record = runner.run_one(spec, runs_dir, executor=execute, num_embeddings=rows)
        exported += ledger.export(record, spec.run_dir(runs_dir), ledger_dir)
    except runner.CommandFailed as e:
      print(f"[experiment] FAILED: {e}", file=sys.stderr)
      status = 1
  local = runner.find_records(runs_dir, split)
  exported += ledger.export_all(local, ledger_dir)
  grid_records = ledger.grid_records(specs, runs_dir, ledger_dir)
  if args.report_all_runs:
    records, stale = runner.split_current(
        ledger.merge(local, runner.find_records(ledger_dir, split)))
    for record in stale:
      print(f"[experiment] left out of the report, trained under an earlier training revision "
            f"(key {record.get('key')} is no longer its spec's): {record['run_dir']}")
    datasets = tuple(dict.fromkeys(r["spec"]["dataset"] for r in records)) or grid.datasets
    planned = None
  else:
    records, datasets, planned = grid_records, grid.datasets, len(specs)
    stale = []
  baselines = baselines_lib.read_all(baselines_root, datasets)
  exported += ledger.export_baselines(baselines, ledger_dir)
  baselines = ledger.fill_baselines(baselines, ledger_dir)
  command = commands.shell(["python", "scripts/run_experiment.py", *argv])
  results = args.results or DEFAULT_RESULTS[split]
  on_machine = sum(1 for r in records if not ledger.inside(r["run_dir"], ledger_dir))
  shown = (_relative(ledger_dir, results.parent) if ledger.inside(ledger_dir, results.parent)
           else os.fspath(ledger_dir))
  sources = (f"Run records: {shown}/ (the ledger, committed with "
             f"this report), {on_machine} of the {len(records)} runs also in run directories on "
             "the machine that wrote it."
             + (f" {_runs(len(stale))} trained under an earlier training revision "
                f"{'is' if len(stale) == 1 else 'are'} left out."
                if stale else ""))
  path = write_outputs(records, baselines, results=results, plots_dir=plots_dir, command=command,
                       planned=planned, split=split, sources=sources)
  print(f"[experiment] {len(grid_records)}/{_runs(len(specs))} of the grid complete; report "
        f"({_runs(len(records))}, {len(records) - on_machine} from the ledger only): {path}; "
        f"ledger {ledger_dir}: {len(exported)} files or baseline folders written")
  return status
