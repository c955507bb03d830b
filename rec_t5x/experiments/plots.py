"""PNG plots of the ablation (matplotlib, Agg backend: no display needed).

  recall_at_10.png   Recall@10 per mixture on the evaluation split (test, or validation for
                     tuning), bars = mean over seeds, error bars = sample std, dots = the
                     seeds' own values, one panel per setting (dataset x model x budget); the
                     baselines' Recall@10 on the same split as dashed horizontal lines.
  train_loss.png     training loss against step per mixture (mean over seeds at the logged steps),
                     one panel per setting.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
import math
import os
import pathlib
import textwrap
from typing import Any

import matplotlib

matplotlib.use("Agg")
# pylint: disable=g-import-not-at-top,wrong-import-position  (the backend is chosen first)
import matplotlib.pyplot as plt

from rec_t5x.experiments import aggregate
from rec_t5x.experiments import baselines as baselines_lib
# pylint: enable=g-import-not-at-top,wrong-import-position

Baselines = Mapping[str, Mapping[str, Mapping[str, Any] | None]]
RECALL_FILE = "recall_at_10.png"
LOSS_FILE = "train_loss.png"
_PANEL_SIZE = (5.5, 4.0)
# Characters per line of a panel title at fontsize 9, so a long setting name stays inside its
# panel instead of running into the next one.
_TITLE_WIDTH = 64


def _panels(count: int) -> tuple[Any, list[Any]]:
  columns = min(count, 2)
  rows = math.ceil(count / columns)
  size = (_PANEL_SIZE[0] * columns, _PANEL_SIZE[1] * rows)
  figure, axes = plt.subplots(rows, columns, figsize=size, squeeze=False)
  flat = list(axes.ravel())
  for extra in flat[count:]:
    extra.set_visible(False)
  return figure, flat[:count]


def panel_title(group: aggregate.Group) -> str:
  """Setting name, budget and initialisation, wrapped to `_TITLE_WIDTH`, then one gin binding
  per line."""
  s = group.setting
  init = "init ckpt" if s.get("initial_checkpoint") else "scratch"
  head = textwrap.fill(f"{group.title}: {s['train_steps']} steps x {s['batch_size']}, {init}",
                       width=_TITLE_WIDTH)
  return "\n".join([head, *(s.get("gin_bindings") or ())])


def error_bars(stats: Sequence[aggregate.Stat | None]) -> tuple[list[int], list[float], list[float]]:
  """(bar positions, means, stds) of the bars with a measured spread (n >= 2).

  Single-seed bars get no error bar: a zero-height cap would claim a spread of zero.
  """
  kept = [(i, st) for i, st in enumerate(stats) if st is not None and st.std is not None]
  return [i for i, _ in kept], [st.mean for _, st in kept], [st.std for _, st in kept]


def seed_points(values_per_bar: Sequence[Sequence[float | None]],
                half_width: float = 0.25) -> tuple[list[float], list[float]]:
  """(x, y) of one dot per seed: bar i's finite values spread evenly over i ± half_width.

  With three to five seeds the mean and std hide whether one seed carries a gap; the dots show it.
  The spread is deterministic (seed order), so regenerated plots are identical.
  """
  xs: list[float] = []
  ys: list[float] = []
  for i, values in enumerate(values_per_bar):
    kept = [float(v) for v in values if v is not None and math.isfinite(v)]
    for j, value in enumerate(kept):
      offset = 0.0 if len(kept) == 1 else -half_width + 2 * half_width * j / (len(kept) - 1)
      xs.append(i + offset)
      ys.append(value)
  return xs, ys


def recall_plot(groups: Sequence[aggregate.Group], baselines: Baselines,
                path: str | os.PathLike, split: str = "test") -> pathlib.Path:
  """Writes the Recall@10 bar chart (see the module docstring) to `path`.

  Raises:
    ValueError: when there is no group to plot.
  """
  if not groups:
    raise ValueError(f"recall_plot({path}): no finished runs to plot")
  figure, axes = _panels(len(groups))
  for ax, group in zip(axes, groups):
    mixtures = group.mixtures
    stats = [group.stat(m, aggregate.RECALL_10) for m in mixtures]
    means = [st.mean if st else 0.0 for st in stats]
    ax.bar(range(len(mixtures)), means, color="tab:blue", alpha=0.8)
    positions, centres, stds = error_bars(stats)
    if positions:
      ax.errorbar(positions, centres, yerr=stds, fmt="none", ecolor="black", capsize=4)
    xs, ys = seed_points([group.values(m, aggregate.RECALL_10) for m in mixtures])
    ax.scatter(xs, ys, s=12, color="black", alpha=0.7, zorder=3)
    ax.set_xticks(range(len(mixtures)), [f"{m}\n(n={st.n if st else 0})"
                                        for m, st in zip(mixtures, stats)], fontsize=8)
    present = baselines.get(group.setting["dataset"]) or {}
    colors = iter(["tab:red", "tab:green", "tab:purple", "tab:orange"])
    for model in baselines_lib.MODELS:
      value = ((present.get(model) or {}).get(split) or {}).get("recall@10")
      if value is not None:
        ax.axhline(value, linestyle="--", linewidth=1.2, color=next(colors),
                   label=f"{present[model]['name']} {value:.3f}")
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7, loc="best")
    ax.set_ylabel(f"{split} Recall@10")
    ax.set_title(panel_title(group), fontsize=9)
  figure.tight_layout()
  return _save(figure, path)


def loss_plot(groups: Sequence[aggregate.Group], path: str | os.PathLike) -> pathlib.Path:
  """Writes the training-loss curves (see the module docstring) to `path`.

  Raises:
    ValueError: when there is no group to plot.
  """
  if not groups:
    raise ValueError(f"loss_plot({path}): no finished runs to plot")
  figure, axes = _panels(len(groups))
  for ax, group in zip(axes, groups):
    for mixture in group.mixtures:
      steps, losses = group.mean_curve(mixture)
      if steps:
        ax.plot(steps, losses, marker="." if len(steps) < 20 else None,
                label=f"{mixture} (n={len(group.runs[mixture])})")
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7)
    else:
      ax.text(0.5, 0.5, "no training loss logged", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (mean over seeds)")
    ax.set_title(panel_title(group), fontsize=9)
  figure.tight_layout()
  return _save(figure, path)


def _save(figure: Any, path: str | os.PathLike) -> pathlib.Path:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  figure.savefig(path, dpi=110)
  plt.close(figure)
  return path


def write_all(groups: Sequence[aggregate.Group], baselines: Baselines,
              plots_dir: str | os.PathLike, split: str = "test") -> list[tuple[str, pathlib.Path]]:
  """Both plots into `plots_dir`; returns (caption, path) of each (none when no run finished)."""
  if not groups:
    return []
  plots_dir = pathlib.Path(plots_dir)
  return [(f"{split.capitalize()} Recall@10 per mixture (bars: mean ± std over seeds; dots: seeds; dashed: baselines)",
           recall_plot(groups, baselines, plots_dir / RECALL_FILE, split)),
          ("Training loss per mixture (mean over seeds)",
           loss_plot(groups, plots_dir / LOSS_FILE))]
