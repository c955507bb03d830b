"""The auxiliary-task ablation: does fine-tuning on MIM / BPR / MLM teach T5 recommendation?

`python scripts/run_experiment.py --grid headline` trains one T5 per (dataset, model, mixture,
seed) of a grid with the same step and batch budget, evaluates each on the TEST split of the
dataset's `rec_only` mixture, and writes a Markdown report and PNG plots. Modules:

  grid.py       RunSpec (one run's identity and directory) and Grid (presets, overrides, expansion)
  commands.py   the exact train / eval / vocabulary / baseline command lines of a run (pure)
  runner.py     runs one spec through subprocesses: skip finished runs, resume, write run.json
  ledger.py     committed copies of finished runs (record + ranked lists) the report is built from
  provenance.py the commit, uncommitted code changes and package versions a record was made with
  vocab.py      `python -m rec_t5x.experiments.vocab`: a dataset's vocabulary size -> NUM_EMBEDDINGS
  events.py     scalar curves (training loss) read back from TensorBoard event files
  baselines.py  the classical baselines' test metrics (read, or run when asked)
  aggregate.py  run.json records -> mean / std over seeds, gains over rec_only, headline sentences
  retrieval_lists.py  top-10 list statistics of runs and baselines (coverage, popularity, Pop)
  report.py     the Markdown report (keeps a hand-written `## Discussion` section)
  plots.py      Recall@10 bars and training-loss curves (matplotlib, Agg)
  driver.py     the command line of scripts/run_experiment.py
"""
