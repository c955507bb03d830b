"""Registry names, registration validation and its error messages."""
import numpy as np
import pytest
import seqio
import tensorflow as tf

import seqio_tasks
from rec_t5x import prompts
from seqio_tasks import rates
from seqio_tasks import registry

CATALOG = ("ml100k", "ml1m", "beauty", "toys", "sports")
DATASETS = (CATALOG + tuple(f"{name}_atomic" for name in CATALOG)
            + tuple(f"{name}_notitles" for name in CATALOG)
            + tuple(f"{name}_atomic_notitles" for name in CATALOG))
MIXTURES = ("rec_only", "rec_mim", "rec_bpr", "rec_mlm", "rec_all")


def test_every_dataset_has_six_tasks_and_five_mixtures():
  assert seqio_tasks.DEFAULT_DATASETS == DATASETS
  for dataset in DATASETS:
    for task in ("retrieval", "ranking", "rating"):
      assert seqio.get_mixture_or_task(f"rec_t5x.{dataset}.{task}").splits == (
          "train", "validation", "test")
    for task in ("mim", "mlm", "bpr"):
      assert seqio.get_mixture_or_task(f"rec_t5x.{dataset}.{task}").splits == ("train",)
    for mixture in MIXTURES:
      assert f"rec_t5x.{dataset}.{mixture}" in seqio.MixtureRegistry.names()
    members = {t.name for t in seqio.get_mixture_or_task(f"rec_t5x.{dataset}.rec_all").tasks}
    assert members == {f"rec_t5x.{dataset}.{t}" for t in prompts.TASKS}
    members = {t.name for t in seqio.get_mixture_or_task(f"rec_t5x.{dataset}.rec_mim").tasks}
    assert members == {f"rec_t5x.{dataset}.{t}" for t in ("retrieval", "ranking", "rating", "mim")}


def test_default_datasets_are_in_the_data_catalog():
  from rec_t5x.data import catalog  # pylint: disable=g-import-not-at-top
  assert set(CATALOG) <= set(catalog.names())
  assert registry.CATALOG_DATASETS == CATALOG


def test_tasks_carry_features_preprocessors_and_eval_functions():
  task = seqio.get_mixture_or_task("rec_t5x.ml100k.retrieval")
  assert set(task.output_features) == {"inputs", "targets"}
  assert all(f.add_eos for f in task.output_features.values())
  assert isinstance(task.preprocessors[1], seqio.CacheDatasetPlaceholder)
  assert task.preprocessors[0] is seqio.preprocessors.tokenize
  assert task.preprocessors[2] is seqio.preprocessors.append_eos_after_trim
  assert len(task.predict_metric_fns) == 1
  assert task.postprocess_fn(b" 4821 ") == "4821"
  assert seqio.get_mixture_or_task("rec_t5x.ml100k.rating").postprocess_fn("3.5") == 3.5
  assert not seqio.get_mixture_or_task("rec_t5x.ml100k.mim").predict_metric_fns
  # Tasks of one dataset share one (not yet trained) vocabulary.
  vocabs = {id(seqio.get_mixture_or_task(f"rec_t5x.ml100k.{t}").output_features["inputs"].vocabulary)
            for t in prompts.TASKS}
  assert len(vocabs) == 1


def test_registration_loaded_no_dataset_and_trained_no_vocabulary():
  # Only the Amazon datasets: other tests of the session may read MovieLens. test_rates.py checks
  # in a fresh process that importing seqio_tasks writes nothing to the data dir.
  for dataset in ("beauty", "toys", "sports", "beauty_atomic"):
    vocab = seqio.get_mixture_or_task(f"rec_t5x.{dataset}.retrieval").output_features["inputs"].vocabulary
    assert not vocab.is_resolved
    assert dataset not in registry.sources._LOADED  # pylint: disable=protected-access


def test_mixture_rates_default_to_the_rates_table():
  mixture = seqio.get_mixture_or_task("rec_t5x.ml1m.rec_all")
  for task in mixture.tasks:
    assert mixture.get_rate(task) == rates.configured_rates("ml1m")[task.name.split(".")[-1]]


def test_unknown_names_raise_with_the_closest_registered_ones():
  with pytest.raises(ValueError, match=r"unknown dataset 'ml100'; closest registered: \['ml100k'"):
    seqio_tasks.register_task("ml100", "retrieval")
  with pytest.raises(ValueError,
                     match=r"unknown prompt task 'retreival'; closest registered: \['retrieval'\]"):
    seqio_tasks.register_task("ml100k", "retreival")
  with pytest.raises(ValueError, match=r"closest registered: \['rec_t5x.ml100k.rec_all'"):
    seqio_tasks.get("rec_t5x.ml100k.rec_al")
  with pytest.raises(ValueError, match=r"closest registered: \['rec_t5x.ml1m.ranking'"):
    seqio_tasks.register_mixture("rec_t5x.test.bad_member", ["rec_t5x.ml1m.ranking", "rec_t5x.ml1m.rankng"])


def test_duplicates_are_refused():
  with pytest.raises(ValueError, match=r"SeqIO task 'rec_t5x.ml100k.retrieval' is already registered"):
    seqio_tasks.register_task("ml100k", "retrieval")
  with pytest.raises(ValueError, match=r"SeqIO mixture 'rec_t5x.ml100k.rec_all' is already registered"):
    seqio_tasks.register_mixture("rec_t5x.ml100k.rec_all", ["rec_t5x.ml100k.retrieval"])
  with pytest.raises(ValueError, match=r"dataset 'ml1m' is already registered"):
    seqio_tasks.register_dataset("ml1m")
  with pytest.raises(ValueError, match=r"a task is listed twice"):
    seqio_tasks.register_mixture("rec_t5x.test.twice", ["rec_t5x.ml1m.mim", "rec_t5x.ml1m.mim"])


def test_bad_arguments_name_the_task():
  with pytest.raises(ValueError,
                     match=r"'rec_t5x.ml1m.mim_eval': splits \['test'\] must be a non-empty subset"):
    seqio_tasks.register_task("ml1m", "mim", name="rec_t5x.ml1m.mim_eval", splits=["test"])
  with pytest.raises(ValueError, match=r"dataset name 'my-data'"):
    seqio_tasks.register_dataset("my-data")
  with pytest.raises(ValueError, match=r"rate of task 'rec_t5x.ml1m.mim' is -1"):
    seqio_tasks.register_mixture("rec_t5x.test.neg", ["rec_t5x.ml1m.mim"], rates={"rec_t5x.ml1m.mim": -1})
  with pytest.raises(ValueError, match=r"rates given for tasks not in the mixture: \['rec_t5x.ml1m.bpr'\]"):
    seqio_tasks.register_mixture("rec_t5x.test.extra", ["rec_t5x.ml1m.mim"], rates={"rec_t5x.ml1m.bpr": 1})


def _foreign_task(name, vocabulary, add_eos=True):
  def dataset_fn(split, shuffle_files):
    del split, shuffle_files
    return tf.data.Dataset.from_tensor_slices({"inputs": ["a"], "targets": ["b"]})

  return seqio.TaskRegistry.add(
      name, seqio.FunctionDataSource(dataset_fn, splits=["train"]),
      output_features={"inputs": seqio.Feature(vocabulary, add_eos=add_eos),
                       "targets": seqio.Feature(vocabulary, add_eos=True)},
      preprocessors=[seqio.preprocessors.tokenize])


def test_mixture_feature_mismatch_names_mixture_task_and_feature():
  ours = seqio.get_mixture_or_task("rec_t5x.ml1m.retrieval").output_features["inputs"].vocabulary
  _foreign_task("test_registry.other_vocab", seqio.PassThroughVocabulary(size=10))
  with pytest.raises(ValueError, match=r"mixture 'rec_t5x.test.mix_vocab': task 'test_registry.other_vocab' "
                     r"feature 'inputs' has vocabulary=.*, "
                     r"but task 'rec_t5x.ml1m.retrieval' has vocabulary="):
    seqio_tasks.register_mixture("rec_t5x.test.mix_vocab",
                                 ["rec_t5x.ml1m.retrieval", "test_registry.other_vocab"],
                                 rates={"test_registry.other_vocab": 1.0})
  _foreign_task("test_registry.no_eos", ours, add_eos=False)
  with pytest.raises(ValueError, match=r"task 'test_registry.no_eos' feature 'inputs' has add_eos=False, "
                     r"but task 'rec_t5x.ml1m.retrieval' has add_eos=True"):
    seqio_tasks.register_mixture("rec_t5x.test.mix_eos", ["rec_t5x.ml1m.retrieval", "test_registry.no_eos"],
                                 rates={"test_registry.no_eos": 1.0})
  with pytest.raises(ValueError, match=r"task 'test_registry.no_eos' was not registered by "
                     r"seqio_tasks.register_task, so it has no default rate"):
    seqio_tasks.register_mixture("rec_t5x.test.mix_rate", ["test_registry.no_eos"])
  assert "rec_t5x.test.mix_vocab" not in seqio.MixtureRegistry.names()


def test_example_module_registers_a_task_and_a_mixture():
  from seqio_tasks.examples import my_mixture  # pylint: disable=g-import-not-at-top,unused-import
  task = seqio.get_mixture_or_task("rec_t5x.ml1m.retrieval_h50")
  assert registry.task_entry("rec_t5x.ml1m.retrieval_h50").config.max_history == 50
  mixture = seqio.get_mixture_or_task("rec_t5x.ml1m.retrieval_h50_mim")
  assert {t.name for t in mixture.tasks} == {"rec_t5x.ml1m.retrieval_h50", "rec_t5x.ml1m.mim"}
  assert mixture.get_rate(seqio.get_mixture_or_task("rec_t5x.ml1m.mim")) == 0.5
  assert mixture.get_rate(task) == rates.configured_rates("ml1m")["retrieval"]
  np.testing.assert_equal(registry.DEFAULT_DATASETS, DATASETS)


def test_missing_cache_says_how_to_fix_it():
  task = seqio.get_mixture_or_task("rec_t5x.ml1m.mim")
  with pytest.raises(FileNotFoundError, match=r"use_cached=False.*USE_CACHED_TASKS = False.*"
                     r"cache_tasks_main --module_import=seqio_tasks --tasks=rec_t5x.ml1m.mim"):
    task.get_dataset({"inputs": 8, "targets": 8}, split="train", use_cached=True)
