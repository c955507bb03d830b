"""Helpers that register rec_t5x datasets, prompt tasks and mixtures with SeqIO, with validation.

Names: task `rec_t5x.<dataset>.<prompt task>` (e.g. `rec_t5x.ml100k.retrieval`), mixture
`rec_t5x.<dataset>.<mixture>` (e.g. `rec_t5x.ml100k.rec_all`). Registration is cheap: it builds
SeqIO objects around lazy callables; no dataset is loaded and no vocabulary trained until a
dataset is read. Every error names the task / mixture / dataset / feature at fault, and unknown
names come with the closest registered ones *in the exception*.

Adding your own task or mixture takes one small module, imported like `seqio_tasks`
(e.g. `MIXTURE_OR_TASK_MODULE=my_mixture`, or `import my_mixture` in a gin file):

    \"\"\"my_mixture.py: a longer-history retrieval task and a mixture that uses it.\"\"\"
    import seqio_tasks
    from rec_t5x.prompts import SampleConfig

    seqio_tasks.register_task(
        "ml1m", "retrieval", name="rec_t5x.ml1m.retrieval_h50",
        config=SampleConfig(max_history=50, max_train_samples_per_user=20))
    seqio_tasks.register_mixture(
        "rec_t5x.ml1m.retrieval_h50_mim",
        ["rec_t5x.ml1m.retrieval_h50", "rec_t5x.ml1m.mim"],
        rates={"rec_t5x.ml1m.mim": 0.5})   # others: the gin-configurable mixing_rates table

    # A dataset of your own (any callable returning a RecDataset), with all standard tasks:
    # seqio_tasks.register_dataset("mydata", loader=lambda: RecDataset.load("/data/mydata"))
    # seqio_tasks.register_dataset_tasks("mydata")

seqio_tasks/examples/my_mixture.py holds this example as a module (the tests import it).
"""
import dataclasses
import difflib
import functools
import re
from typing import Callable, Iterable, Mapping, Optional, Sequence, Union

import seqio

from rec_t5x import item_ids
from rec_t5x import prompts
from rec_t5x import vocabulary as vocabulary_lib
from rec_t5x.prompts import config as config_lib
from seqio_tasks import eval_fns
from seqio_tasks import rates as rates_lib
from seqio_tasks import sources

PREFIX = "rec_t5x"
CATALOG_DATASETS = ("ml100k", "ml1m", "beauty", "toys", "sports")
# Every catalogue dataset in the digits style, then each in the atomic item-ID style
# (`ml100k_atomic`, ...; rec_t5x/item_ids.py): same data and split, one vocabulary piece per item;
# then both styles without titles (`ml100k_notitles`, `ml100k_atomic_notitles`: items shown by ID).
DEFAULT_DATASETS = tuple(
    item_ids.variant_name(name, style, titles)
    for titles in (True, False) for style in (item_ids.DIGITS, item_ids.ATOMIC)
    for name in CATALOG_DATASETS)
MIXTURES: dict[str, tuple[str, ...]] = {
    "rec_only": ("retrieval", "ranking", "rating"),
    "rec_mim": ("retrieval", "ranking", "rating", "mim"),
    "rec_bpr": ("retrieval", "ranking", "rating", "bpr"),
    "rec_mlm": ("retrieval", "ranking", "rating", "mlm"),
    "rec_all": ("retrieval", "ranking", "rating", "mim", "mlm", "bpr"),
}
# Training samples rendered into the vocabulary corpus (plus every title and phrasing).
VOCAB_CORPUS_SAMPLES = 20_000
_DATASET_NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")

Rate = Union[float, Callable[..., float]]


@dataclasses.dataclass(frozen=True)
class DatasetEntry:
  """A dataset the registry knows: how to load it and which vocabulary its tasks use."""
  name: str
  loader: Callable[[], object]
  vocabulary: seqio.Vocabulary


@dataclasses.dataclass(frozen=True)
class TaskEntry:
  """A task registered through `register_task`."""
  name: str
  dataset: str
  prompt_task: str
  config: config_lib.SampleConfig


_DATASETS: dict[str, DatasetEntry] = {}
_TASKS: dict[str, TaskEntry] = {}


class RecTask(seqio.Task):
  """A seqio.Task whose missing offline cache explains how to fix it."""

  def assert_cached(self) -> None:
    if not self.cache_dir:
      raise FileNotFoundError(
          f"SeqIO task {self.name!r} has no offline cache in {seqio.utils.get_global_cache_dirs()}. "
          "rec_t5x tasks render samples on the fly: read them with use_cached=False (the default; "
          "in T5X gin: USE_CACHED_TASKS = False). To use a cache, build it once with "
          f"`python -m seqio.scripts.cache_tasks_main --module_import=seqio_tasks --tasks={self.name} "
          "--output_cache_dir=DIR` (needs apache-beam) and add DIR with "
          "seqio.add_global_cache_dirs([DIR]).")


def closest_names(name: str, candidates: Iterable[str], n: int = 5) -> list[str]:
  """Up to `n` candidates most similar to `name` (difflib ratio), best first."""
  return difflib.get_close_matches(name, sorted(candidates), n=n, cutoff=0.4)


def _unknown(kind: str, name: str, candidates: Iterable[str]) -> ValueError:
  candidates = sorted(candidates)
  close = closest_names(name, candidates)
  hint = f"closest registered: {close}" if close else f"registered: {candidates[:20]}"
  return ValueError(f"unknown {kind} {name!r}; {hint}")


def task_name(dataset: str, prompt_task: str) -> str:
  """`rec_t5x.<dataset>.<prompt_task>`."""
  return f"{PREFIX}.{dataset}.{prompt_task}"


def mixture_name(dataset: str, mixture: str) -> str:
  """`rec_t5x.<dataset>.<mixture>`."""
  return f"{PREFIX}.{dataset}.{mixture}"


def _catalog_loader(name: str):
  """`catalog.load` of the name's base dataset, in the item-ID style its suffix names."""
  from rec_t5x.data import catalog  # pylint: disable=g-import-not-at-top  (lazy: no I/O at import)
  variant = item_ids.parse_variant(name)
  ds = catalog.load(variant.base)
  if variant.style != item_ids.DIGITS:
    ds = ds.with_item_id_style(variant.style, name=name)
  return ds if variant.titles else ds.without_titles(name=name)


def item_id_symbols(dataset: str) -> list[str]:
  """User-defined vocabulary symbols a registered dataset needs: its atomic IDs, or none."""
  ds = load_dataset(dataset)
  if getattr(ds, "item_id_style", item_ids.DIGITS) != item_ids.ATOMIC:
    return []
  return item_ids.atomic_symbols(ds.num_items)


def load_dataset(dataset: str):
  """The RecDataset of a registered dataset (loaded once per process)."""
  entry = dataset_entry(dataset)
  return sources.load_dataset(entry.name, entry.loader)


def vocabulary_corpus(dataset: str, max_samples: Optional[int] = None):
  """Vocabulary-training text of a registered dataset (`rec_t5x.prompts.corpus`, default config).

  Args:
    dataset: a registered dataset.
    max_samples: rendered training samples; default VOCAB_CORPUS_SAMPLES (read at call time).
  """
  if max_samples is None:
    max_samples = VOCAB_CORPUS_SAMPLES
  return prompts.corpus(load_dataset(dataset), config_lib.SampleConfig(), max_samples)


def register_dataset(name: str, loader: Optional[Callable[[], object]] = None,
                     vocabulary: Optional[seqio.Vocabulary] = None) -> DatasetEntry:
  """Makes a dataset available to `register_task`.

  Args:
    name: dataset name ([A-Za-z0-9_]+); the catalogue's names need no loader.
    loader: zero-argument callable returning the RecDataset; default
      `rec_t5x.data.catalog.load(name)`, or for `<base>_atomic` the catalogue's `<base>` in the
      atomic item-ID style, and for `..._notitles` without titles (rec_t5x/item_ids.py). Called on first read, never here.
    vocabulary: vocabulary of the dataset's tasks; default
      `rec_t5x.vocabulary.get_vocabulary(name, corpus_fn)` (trained lazily on the dataset's text;
      a dataset in the atomic style gets every item ID as a piece of its own).

  Returns:
    The registry entry.
  """
  if not isinstance(name, str) or not _DATASET_NAME_RE.match(name):
    raise ValueError(f"dataset name {name!r}: expected letters, digits and underscores")
  if name in _DATASETS:
    raise ValueError(f"dataset {name!r} is already registered with seqio_tasks")
  if loader is None:
    loader = functools.partial(_catalog_loader, name)
  if not callable(loader):
    raise ValueError(f"dataset {name!r}: loader must be a zero-argument callable, got {loader!r}")
  if vocabulary is None:
    vocabulary = vocabulary_lib.get_vocabulary(name, functools.partial(vocabulary_corpus, name),
                                               symbols_fn=functools.partial(item_id_symbols, name))
  entry = DatasetEntry(name, loader, vocabulary)
  _DATASETS[name] = entry
  return entry


def dataset_entry(name: str) -> DatasetEntry:
  """The entry of a registered dataset; ValueError with the closest names otherwise."""
  if name not in _DATASETS:
    raise _unknown("dataset", name, _DATASETS)
  return _DATASETS[name]


def dataset_names() -> tuple[str, ...]:
  return tuple(_DATASETS)


def task_entry(name: str) -> TaskEntry:
  """What `register_task` recorded for task `name`."""
  if name not in _TASKS:
    raise _unknown("rec_t5x task", name, _TASKS)
  return _TASKS[name]


def output_features(vocabulary: seqio.Vocabulary) -> dict[str, seqio.Feature]:
  """{"inputs", "targets"}: int32 token ids of `vocabulary`, EOS appended after trimming."""
  return {"inputs": seqio.Feature(vocabulary, add_eos=True, required=True),
          "targets": seqio.Feature(vocabulary, add_eos=True, required=True)}


def register_task(dataset: str, prompt_task: str, *, name: Optional[str] = None,
                  config: Optional[config_lib.SampleConfig] = None,
                  splits: Optional[Sequence[str]] = None,
                  vocabulary: Optional[seqio.Vocabulary] = None) -> seqio.Task:
  """Registers one prompt task of one dataset as a SeqIO task.

  Args:
    dataset: a registered dataset (`register_dataset`; the catalogue's are registered on import).
    prompt_task: one of retrieval, ranking, rating, mim, mlm, bpr.
    name: SeqIO name; default `rec_t5x.<dataset>.<prompt_task>`.
    config: sample configuration; default `SampleConfig()`.
    splits: subset of the prompt task's splits (train/validation/test for the recommendation
      tasks, train for the auxiliary ones); default all of them.
    vocabulary: default the dataset's vocabulary.

  Returns:
    The registered seqio.Task (source: a lazy PromptSource; preprocessors: tokenize, cache
    placeholder, append EOS after trim; recommendation tasks carry postprocess_fn and metric_fns).
  """
  entry = dataset_entry(dataset)
  if prompt_task not in prompts.TASKS:
    raise _unknown("prompt task", prompt_task, prompts.TASKS)
  module = prompts.TASKS[prompt_task]
  name = name or task_name(dataset, prompt_task)
  if name in seqio.TaskRegistry.names() or name in seqio.MixtureRegistry.names():
    raise ValueError(f"SeqIO task {name!r} is already registered; pass another name=")
  config = config or config_lib.SampleConfig()
  if not isinstance(config, config_lib.SampleConfig):
    raise ValueError(f"SeqIO task {name!r}: config must be a SampleConfig, got {type(config).__name__}")
  splits = tuple(splits or module.SPLITS)
  bad = [s for s in splits if s not in module.SPLITS]
  if bad or not splits:
    raise ValueError(f"SeqIO task {name!r}: splits {list(splits)} must be a non-empty subset of "
                     f"{module.SPLITS} for prompt task {prompt_task!r}")
  dataset_fn = sources.PromptDatasetFn(name, dataset, entry.loader, prompt_task, config)
  postprocess_fn, metric_fns = eval_fns.eval_functions(
      prompt_task, functools.partial(load_dataset, dataset))
  task = RecTask(
      name,
      source=sources.PromptSource(dataset_fn, splits),
      output_features=output_features(vocabulary or entry.vocabulary),
      preprocessors=[seqio.preprocessors.tokenize, seqio.CacheDatasetPlaceholder(),
                     seqio.preprocessors.append_eos_after_trim],
      postprocess_fn=postprocess_fn,
      metric_fns=metric_fns,
      shuffle_buffer_size=None)
  seqio.TaskRegistry.add_provider(name, task)
  _TASKS[name] = TaskEntry(name, dataset, prompt_task, config)
  return task


def _provider(name: str):
  if name in seqio.TaskRegistry.names():
    return seqio.TaskRegistry.get(name)
  if name in seqio.MixtureRegistry.names():
    return seqio.MixtureRegistry.get(name)
  raise _unknown("SeqIO task or mixture", name,
                 list(seqio.TaskRegistry.names()) + list(seqio.MixtureRegistry.names()))


def get(name: str):
  """`seqio.get_mixture_or_task(name)`, but an unknown name raises with the closest names."""
  return _provider(name)


def check_mixture_features(mixture: str, tasks: Sequence[seqio.Task]) -> None:
  """Raises ValueError unless every task has the same output features as the first.

  Compares feature names, and per feature the vocabulary, add_eos, dtype, rank and required;
  the message names the mixture, both tasks, the feature and both values.
  """
  first = tasks[0]
  for task in tasks[1:]:
    expected, actual = set(first.output_features), set(task.output_features)
    if expected != actual:
      raise ValueError(f"mixture {mixture!r}: task {task.name!r} has output features {sorted(actual)}, "
                       f"but task {first.name!r} has {sorted(expected)}")
    for feature in sorted(expected):
      a, b = first.output_features[feature], task.output_features[feature]
      for attribute in ("vocabulary", "add_eos", "dtype", "rank", "required"):
        va, vb = getattr(a, attribute), getattr(b, attribute)
        if not (va is vb or va == vb):
          raise ValueError(f"mixture {mixture!r}: task {task.name!r} feature {feature!r} has "
                           f"{attribute}={vb!r}, but task {first.name!r} has {attribute}={va!r}")


def register_mixture(name: str, tasks: Sequence[str], rates: Optional[Mapping[str, Rate]] = None,
                     ) -> seqio.Mixture:
  """Registers a SeqIO mixture of registered tasks, after validating it.

  Args:
    name: mixture name, e.g. "rec_t5x.ml1m.my_mix".
    tasks: names of registered SeqIO tasks (or mixtures).
    rates: optional {task name: rate (number >= 0 or callable(task) -> float)}. A task without an
      entry that was registered by `register_task` gets the lazily resolved, gin-configurable
      `seqio_tasks.mixing_rates` value of its prompt task; any other task needs an entry.

  Returns:
    The registered seqio.Mixture.
  """
  if name in seqio.MixtureRegistry.names() or name in seqio.TaskRegistry.names():
    raise ValueError(f"SeqIO mixture {name!r} is already registered; pick another name")
  if not tasks:
    raise ValueError(f"mixture {name!r}: no tasks given")
  rates = dict(rates or {})
  unknown_rates = sorted(set(rates) - set(tasks))
  if unknown_rates:
    raise ValueError(f"mixture {name!r}: rates given for tasks not in the mixture: {unknown_rates}")
  if len(set(tasks)) != len(tasks):
    raise ValueError(f"mixture {name!r}: a task is listed twice in {list(tasks)}")
  providers = [_provider(t) for t in tasks]
  leaf_tasks = []
  for provider in providers:
    leaf_tasks.extend(provider.tasks if isinstance(provider, seqio.Mixture) else [provider])
  check_mixture_features(name, leaf_tasks)
  pairs = []
  for task in tasks:
    if task in rates:
      rate = rates[task]
      if not callable(rate) and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate < 0):
        raise ValueError(f"mixture {name!r}: rate of task {task!r} is {rate!r}; expected a number >= 0 "
                         "or a callable")
    elif task in _TASKS:
      rate = rates_lib.TaskRate(_TASKS[task].dataset, _TASKS[task].prompt_task)
    else:
      raise ValueError(f"mixture {name!r}: task {task!r} was not registered by seqio_tasks.register_task, "
                       "so it has no default rate; pass rates={task: rate}")
    pairs.append((task, rate))
  return seqio.MixtureRegistry.add(name, pairs)


def register_dataset_tasks(dataset: str, config: Optional[config_lib.SampleConfig] = None) -> None:
  """Registers the six prompt tasks and the five standard mixtures of a registered dataset.

  Tasks `rec_t5x.<dataset>.{retrieval,ranking,rating,mim,mlm,bpr}`; mixtures
  `rec_t5x.<dataset>.{rec_only,rec_mim,rec_bpr,rec_mlm,rec_all}` (see MIXTURES).
  """
  for prompt_task in prompts.TASKS:
    register_task(dataset, prompt_task, config=config)
  for mixture, members in MIXTURES.items():
    register_mixture(mixture_name(dataset, mixture), [task_name(dataset, t) for t in members])
