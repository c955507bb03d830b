"""The auxiliary-task ablation: run a grid of T5 trainings, evaluate them on TEST, write the report.

  python scripts/run_experiment.py --grid headline
  python scripts/run_experiment.py --grid smoke --runs_dir /tmp/exp --results /tmp/exp/results.md \
      --plots_dir /tmp/exp/plots

A thin command line: everything lives in rec_t5x/experiments (see `driver.py` for the flags).
"""
import sys

from rec_t5x.experiments import driver

if __name__ == "__main__":
  sys.exit(driver.main())
