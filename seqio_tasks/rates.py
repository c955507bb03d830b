"""Mixing rates of the rec_t5x mixtures, resolved lazily so gin can set them after import.

The rate of every prompt task in a mixture is a callable that SeqIO evaluates when it builds the
mixture's dataset. It calls `mixing_rates` through gin when gin has registered it (so bindings
parsed after `import seqio_tasks` apply) under the gin scope of the dataset name, and falls back to
the defaults otherwise. Defaults: every task 1.0, i.e. equal numbers of examples from each task
(the paper's rates were not found; see /work/shared/reference/papers.md).

Gin, with T5X-style dynamic registration (no decorator in this package):

    from __gin__ import dynamic_registration
    import seqio_tasks

    seqio_tasks.mixing_rates.mim = 0.5          # every dataset
    ml1m/seqio_tasks.mixing_rates.bpr = 2.0     # only the ml1m mixtures

or, in a binary, `gin.external_configurable(seqio_tasks.mixing_rates)` and
`mixing_rates.mim = 0.5`.
"""
import sys

from rec_t5x import prompts


def mixing_rates(retrieval: float = 1.0, ranking: float = 1.0, rating: float = 1.0, mim: float = 1.0,
                 mlm: float = 1.0, bpr: float = 1.0) -> dict[str, float]:
  """The relative rate of each prompt task in a mixture (bind with gin to change them).

  Args:
    retrieval: next-item retrieval.
    ranking: candidate ranking.
    rating: rating prediction.
    mim: masked item modeling.
    mlm: masked language modeling on item text.
    bpr: pairwise preference (BPR).

  Returns:
    {task: rate}; every rate is a finite number >= 0.
  """
  rates = {"retrieval": retrieval, "ranking": ranking, "rating": rating, "mim": mim, "mlm": mlm,
           "bpr": bpr}
  for task, rate in rates.items():
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < float("inf"):
      raise ValueError(f"seqio_tasks.mixing_rates.{task}={rate!r}: expected a finite number >= 0")
  return {task: float(rate) for task, rate in rates.items()}


def _gin_module():
  """The gin-config module if it has been imported (no bindings can exist otherwise)."""
  gin = sys.modules.get("gin")
  return gin if gin is not None and hasattr(gin, "get_configurable") else None


def configured_rates(dataset: str) -> dict[str, float]:
  """`mixing_rates()` with the gin bindings of scope `dataset` (and unscoped ones) applied."""
  gin = _gin_module()
  if gin is None:
    return mixing_rates()
  try:
    fn = gin.get_configurable(mixing_rates)
  except ValueError:  # gin is loaded, but mixing_rates is not registered with it: no bindings.
    return mixing_rates()
  if not dataset.isidentifier():  # gin scopes are identifiers; such datasets get unscoped bindings only.
    return fn()
  with gin.config_scope(dataset):
    return fn()


class TaskRate:
  """A SeqIO mixing-rate callable: `rate(task) -> float`, looked up when the mixture is read.

  Attributes:
    dataset: gin scope of the lookup (the dataset name).
    prompt_task: key of `mixing_rates`.
  """

  def __init__(self, dataset: str, prompt_task: str):
    if prompt_task not in prompts.TASKS:
      raise ValueError(f"TaskRate: unknown prompt task {prompt_task!r}; known: {sorted(prompts.TASKS)}")
    self.dataset = dataset
    self.prompt_task = prompt_task

  def __repr__(self) -> str:
    return f"TaskRate({self.dataset!r}, {self.prompt_task!r})"

  def __call__(self, task=None) -> float:
    del task
    return configured_rates(self.dataset)[self.prompt_task]
