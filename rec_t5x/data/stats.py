"""Dataset statistics (users, items, interactions, sequence lengths, density) and a text table.

`python -m rec_t5x.data.stats ml100k ml1m` prints the table for catalog datasets (building their
caches on first use).
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Sequence

import numpy as np

from rec_t5x.data import dataset as dataset_lib


@dataclasses.dataclass(frozen=True)
class DatasetStats:
  """Summary numbers of one dataset.

  Attributes:
    name: dataset name.
    num_users, num_items, num_interactions: sizes.
    mean_length, median_length, min_length, max_length: events per user.
    density: num_interactions / (num_users * num_items).
    num_eval_users: users with a validation and a test item.
    items_without_title: items whose title is "".
  """
  name: str
  num_users: int
  num_items: int
  num_interactions: int
  mean_length: float
  median_length: float
  min_length: int
  max_length: int
  density: float
  num_eval_users: int
  items_without_title: int

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def compute(ds: dataset_lib.RecDataset) -> DatasetStats:
  """Statistics of `ds`."""
  lengths = ds.sequence_lengths()
  return DatasetStats(
      name=ds.name, num_users=ds.num_users, num_items=ds.num_items,
      num_interactions=ds.num_interactions, mean_length=float(lengths.mean()),
      median_length=float(np.median(lengths)), min_length=int(lengths.min()),
      max_length=int(lengths.max()),
      density=ds.num_interactions / (ds.num_users * ds.num_items),
      num_eval_users=len(ds.eval_users()),
      items_without_title=sum(1 for title in ds.item_titles if not title))


_COLUMNS = (("dataset", "name", "{}"), ("users", "num_users", "{:,}"),
            ("items", "num_items", "{:,}"), ("interactions", "num_interactions", "{:,}"),
            ("mean len", "mean_length", "{:.1f}"), ("median len", "median_length", "{:g}"),
            ("min len", "min_length", "{:,}"), ("max len", "max_length", "{:,}"),
            ("density", "density", "{:.4%}"), ("eval users", "num_eval_users", "{:,}"),
            ("no title", "items_without_title", "{:,}"))


def format_table(stats: Sequence[DatasetStats]) -> str:
  """A fixed-width text table, one row per dataset (numbers right-aligned)."""
  header = [title for title, _, _ in _COLUMNS]
  rows = [[fmt.format(getattr(s, field)) for _, field, fmt in _COLUMNS] for s in stats]
  widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
  lines = []
  for row in [header] + rows:
    cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
    lines.append("  ".join(cells))
  lines.insert(1, "  ".join("-" * w for w in widths))
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
  """Prints the statistics table of catalog datasets."""
  from rec_t5x.data import catalog  # pylint: disable=g-import-not-at-top  (catalog imports stats)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("names", nargs="+", help=f"datasets: {', '.join(catalog.names())}")
  parser.add_argument("--data_dir", default=None)
  args = parser.parse_args(argv)
  print(format_table([compute(catalog.load(n, data_dir=args.data_dir)) for n in args.names]))


if __name__ == "__main__":
  main()
