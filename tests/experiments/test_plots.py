"""Tests for rec_t5x.experiments.plots: both PNGs are written and non-empty."""
import pytest

from rec_t5x.experiments import aggregate
from rec_t5x.experiments import plots
from tests.experiments import fakes

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _groups():
  records = [fakes.record(fakes.spec(mixture=m, seed=s, **extra), 0.1 + 0.1 * s,
                          losses=(5.0 - s, 4.0, 3.5))
             for extra in ({}, {"model": "small"}) for m in ("rec_only", "rec_all") for s in (0, 1)]
  return aggregate.group_records(records)


def test_write_all_writes_two_non_empty_pngs(tmp_path):
  baselines = {"ml100k": {"sasrec": {"name": "SASRec", "test": {"recall@10": 0.18}}, "pop": None}}
  written = plots.write_all(_groups(), baselines, tmp_path / "plots")
  assert [p.name for _, p in written] == [plots.RECALL_FILE, plots.LOSS_FILE]
  for _, path in written:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 5000


def test_single_seed_without_curves_still_plots(tmp_path):
  record = fakes.record(fakes.spec(), 0.1)
  record["train_curve"] = {"step": [], "loss": []}
  groups = aggregate.group_records([record])
  assert plots.loss_plot(groups, tmp_path / "l.png").stat().st_size > 0
  assert plots.recall_plot(groups, {}, tmp_path / "r.png").stat().st_size > 0


def test_no_groups():
  assert plots.write_all([], {}, "/nonexistent") == []
  with pytest.raises(ValueError, match="no finished runs"):
    plots.recall_plot([], {}, "/nonexistent/r.png")


def test_error_bars_only_where_seeds_measured_a_spread():
  stats = [aggregate.Stat(0.05, 0.02, 3), aggregate.Stat(0.08, None, 1), None,
           aggregate.Stat(0.06, 0.0, 2)]
  assert plots.error_bars(stats) == ([0, 3], [0.05, 0.06], [0.02, 0.0])
  assert plots.error_bars([aggregate.Stat(0.1, None, 1)]) == ([], [], [])


def test_seed_points_one_dot_per_finite_seed_within_its_bar():
  xs, ys = plots.seed_points([[0.1, 0.2, 0.3], [0.5], [], [None, float("nan"), 0.4, 0.6]],
                             half_width=0.2)
  assert ys == [0.1, 0.2, 0.3, 0.5, 0.4, 0.6]
  assert xs == pytest.approx([-0.2, 0.0, 0.2, 1.0, 2.8, 3.2])


def test_long_panel_titles_are_wrapped_and_keep_every_binding():
  bindings = ("seqio_tasks.mixing_rates.mim=0.3333", "seqio_tasks.mixing_rates.mlm=0.3333",
              "seqio_tasks.mixing_rates.bpr=0.3333", "LEARNING_RATE=0.01")
  record = fakes.record(fakes.spec(mixture="rec_all", gin_bindings=bindings), 0.1)
  group = aggregate.group_records([record])[0]
  title = plots.panel_title(group)
  lines = title.split("\n")
  assert len(lines) > len(bindings) + 1  # The setting line was long enough to wrap.
  assert all(len(line) <= 64 for line in lines)
  assert lines[-len(bindings):] == list(bindings)
  assert "4 steps x 2, scratch" in " ".join(lines[:-len(bindings)])
