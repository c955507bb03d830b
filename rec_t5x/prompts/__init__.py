"""Natural-language samples for the recommendation and auxiliary tasks (no SeqIO here).

Every task module (retrieval, ranking, rating, mim, mlm, bpr) exposes

    NAME: str; SPLITS: tuple[str, ...]
    sample_keys(ds, split, config) -> np.ndarray   # int64 keys, one per sample
    render(ds, key, split, config, seed) -> dict   # {"inputs": str, "targets": str, "key", "template_id"}

Rendering is a pure function of its arguments (a numpy Generator seeded from the task, split, key
and seed), so a SeqIO source is `from_tensor_slices(keys).map(render)`. Training samples see only
`train_sequence(u)`; validation sees the training sequence; test sees it plus the validation item;
negatives are items the user never interacted with. See docs/architecture.md, "Sample contract".
"""
from typing import Protocol

import numpy as np

from rec_t5x.prompts import bpr
from rec_t5x.prompts import mim
from rec_t5x.prompts import mlm
from rec_t5x.prompts import ranking
from rec_t5x.prompts import rating
from rec_t5x.prompts import retrieval
from rec_t5x.prompts.corpus_text import corpus
from rec_t5x.prompts.config import SPLITS
from rec_t5x.prompts.config import SampleConfig
from rec_t5x.prompts.config import TEST
from rec_t5x.prompts.config import TRAIN
from rec_t5x.prompts.config import VALIDATION


class PromptTask(Protocol):
  """What every task module provides."""
  NAME: str
  SPLITS: tuple[str, ...]

  def sample_keys(self, ds, split: str, config: SampleConfig) -> np.ndarray:
    ...

  def render(self, ds, key: int, split: str, config: SampleConfig, seed: int) -> dict:
    ...


TASKS: dict[str, PromptTask] = {m.NAME: m for m in (retrieval, ranking, rating, mim, mlm, bpr)}
RECOMMENDATION_TASKS = ("retrieval", "ranking", "rating")
AUXILIARY_TASKS = ("mim", "mlm", "bpr")


def get_task(name: str) -> PromptTask:
  """The task module called `name`; ValueError listing the known tasks otherwise."""
  if name not in TASKS:
    raise ValueError(f"unknown prompt task {name!r}; known tasks: {sorted(TASKS)}")
  return TASKS[name]


__all__ = ["AUXILIARY_TASKS", "PromptTask", "RECOMMENDATION_TASKS", "SPLITS", "SampleConfig", "TASKS",
           "TEST", "TRAIN", "VALIDATION", "corpus", "get_task"]
