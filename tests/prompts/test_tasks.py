"""Every prompt task: well-formed samples on synthetic data, per-split targets, determinism.

The rendered text is parsed back independently (`synthetic.parse_fields` rebuilds a regex from the
phrasing), so these tests check the text a model will read, not the renderer's internals.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings

from rec_t5x import metrics
from rec_t5x import prompts
from rec_t5x.prompts import config as config_lib
from rec_t5x.prompts import keys as keys_lib
from rec_t5x.prompts import templates
from tests.prompts import synthetic

CONFIG = prompts.SampleConfig(max_history=4, num_candidates=5, mim_mask_rate=0.4, mim_max_masks=2)
SEQUENCES = [[0, 1, 2, 3, 4, 5, 6, 7], [8, 9, 10, 11], [12, 13], [14, 15, 16, 1, 2, 3]]


@pytest.fixture(name="ds", scope="module")
def _ds():
  return synthetic.make_dataset(SEQUENCES, 30, seed=3)


def _all_samples(ds, task, config=CONFIG, seed=0):
  module = prompts.TASKS[task]
  for split in module.SPLITS:
    for key in module.sample_keys(ds, split, config):
      yield split, int(key), module.render(ds, int(key), split, config, seed)


def _pid(ds, item):
  return int(ds.item_public_ids[item])


def _expected_target_and_history(ds, key, split, max_history):
  user, position = keys_lib.decode_key(key)
  train = list(ds.train_sequence(user))
  if split == "train":
    return train[position], train[:position][-max_history:]
  if split == "validation":
    return ds.validation_item(user), train[-max_history:]
  return ds.test_item(user), (train + [ds.validation_item(user)])[-max_history:]


def test_registry_lists_six_tasks_with_their_splits():
  assert set(prompts.TASKS) == {"retrieval", "ranking", "rating", "mim", "mlm", "bpr"}
  for name in prompts.RECOMMENDATION_TASKS:
    assert prompts.TASKS[name].SPLITS == ("train", "validation", "test")
  for name in prompts.AUXILIARY_TASKS:
    assert prompts.TASKS[name].SPLITS == ("train",)
    with pytest.raises(ValueError, match=f"prompt task '{name}' has no split 'validation'"):
      prompts.TASKS[name].sample_keys(synthetic.make_dataset(SEQUENCES, 30), "validation", CONFIG)
  with pytest.raises(ValueError, match=r"unknown prompt task 'retrival'"):
    prompts.get_task("retrival")


@pytest.mark.parametrize("task", sorted(prompts.TASKS))
def test_samples_are_non_empty_and_deterministic(ds, task):
  count = 0
  for split, key, sample in _all_samples(ds, task):
    assert sample["inputs"].strip() and sample["targets"].strip()
    assert sample["key"] == key
    assert sample == prompts.TASKS[task].render(ds, key, split, CONFIG, 0)
    count += 1
  assert count > 0


@pytest.mark.parametrize("task", ["retrieval", "ranking", "rating", "mim", "bpr"])
def test_targets_parse_with_the_metric_postprocessors(ds, task):
  for _, _, sample in _all_samples(ds, task):
    if task == "rating":
      assert 1.0 <= metrics.parse_rating(sample["targets"]) <= 5.0
    else:
      ids = metrics.parse_item_ids(sample["targets"])
      assert ids and all(1 <= i <= ds.num_items for i in ids)
      assert len(ids) == len(sample["targets"].split(", "))


@pytest.mark.parametrize("task", sorted(prompts.TASKS))
def test_seed_changes_some_samples(ds, task):
  first = [s for _, _, s in _all_samples(ds, task, seed=0)]
  second = [s for _, _, s in _all_samples(ds, task, seed=1)]
  assert first != second


@pytest.mark.parametrize("task", ["retrieval", "ranking", "rating"])
def test_training_uses_training_phrasings_and_evaluation_held_out_ones(ds, task):
  n_train = len(templates.TEMPLATES[task].training)
  for split, _, sample in _all_samples(ds, task):
    assert (sample["template_id"] < n_train) == (split == "train")
  seen_config = prompts.SampleConfig(num_candidates=5, eval_templates="training")
  for split, _, sample in _all_samples(ds, task, config=seen_config):
    assert sample["template_id"] < n_train


def test_retrieval_targets_and_histories(ds):
  for split, key, sample in _all_samples(ds, "retrieval"):
    target, history = _expected_target_and_history(ds, key, split, CONFIG.max_history)
    assert synthetic.numbers(sample["targets"]) == [_pid(ds, target)]
    fields = synthetic.parse_fields("retrieval", sample["template_id"], sample["inputs"])
    shown = [int(t.split(":")[0]) for t in synthetic.split_items(fields["history"])]
    assert shown == [_pid(ds, i) for i in history]


def test_ranking_candidates_hold_the_positive_once_and_fresh_negatives(ds):
  orders = set()
  for split, key, sample in _all_samples(ds, "ranking"):
    user, _ = keys_lib.decode_key(key)
    target, history = _expected_target_and_history(ds, key, split, CONFIG.max_history)
    fields = synthetic.parse_fields("ranking", sample["template_id"], sample["inputs"])
    candidates = [int(t.split(":")[0]) for t in synthetic.split_items(fields["candidates"])]
    assert len(candidates) == CONFIG.num_candidates == len(set(candidates))
    assert candidates.count(_pid(ds, target)) == 1
    assert synthetic.numbers(sample["targets"]) == [_pid(ds, target)]
    interacted = {_pid(ds, i) for i in ds.sequence(user)}
    assert not (set(candidates) - {_pid(ds, target)}) & interacted
    shown = [int(t.split(":")[0]) for t in synthetic.split_items(fields["history"])]
    assert shown == [_pid(ds, i) for i in history]
    orders.add(candidates.index(_pid(ds, target)))
  assert len(orders) > 1  # the positive is not always in the same slot


def test_rating_targets_are_the_ratings(ds):
  for split, key, sample in _all_samples(ds, "rating"):
    user, position = keys_lib.decode_key(key)
    ratings = ds.sequence_ratings(user)
    index = {"train": position, "validation": len(ratings) - 2, "test": len(ratings) - 1}[split]
    assert float(sample["targets"]) == float(ratings[index])
    fields = synthetic.parse_fields("rating", sample["template_id"], sample["inputs"])
    assert (fields["low"], fields["high"]) == ("1", "5")
    target, history = _expected_target_and_history(ds, key, split, CONFIG.max_history)
    assert fields["item"].startswith(f"{_pid(ds, target)}: ")
    shown = synthetic.split_items(fields["history"])
    assert len(shown) == len(history)
    for text, item, rating in zip(shown, history, ratings[index - len(history):index]):
      assert text.startswith(f"{_pid(ds, item)}: ") and text.endswith(f"(rated {rating:g})")


def test_rating_needs_ratings():
  ds = synthetic.make_dataset(SEQUENCES, 30, with_ratings=False)
  with pytest.raises(ValueError,
                     match="prompt task 'rating' needs ratings, but dataset 'synthetic' has none"):
    prompts.TASKS["rating"].sample_keys(ds, "train", CONFIG)


def test_mim_targets_are_the_masked_items(ds):
  counts = set()
  for _, key, sample in _all_samples(ds, "mim"):
    user, position = keys_lib.decode_key(key)
    window = list(ds.train_sequence(user))[:position + 1][-CONFIG.max_history:]
    fields = synthetic.parse_fields("mim", sample["template_id"], sample["inputs"])
    shown = synthetic.split_items(fields["history"])
    assert len(shown) == len(window)
    masked = [p for p, text in enumerate(shown) if text == templates.MASK]
    expected_count = min(max(round(CONFIG.mim_mask_rate * len(window)), 1), CONFIG.mim_max_masks,
                         len(window) - 1)
    assert len(masked) == expected_count
    assert synthetic.numbers(sample["targets"]) == [_pid(ds, window[p]) for p in masked]
    for p, text in enumerate(shown):
      if p not in masked:
        assert text.startswith(f"{_pid(ds, window[p])}: ")
    counts.add(len(masked))
  assert counts == {1, 2}


def _reconstruct(corrupted: str, targets: str) -> str:
  import re  # pylint: disable=g-import-not-at-top
  spans = [p.strip() for p in re.split(r"<extra_id_\d+>", targets)[1:-1]]
  for i, span in enumerate(spans):
    corrupted = corrupted.replace(f"<extra_id_{i}>", span, 1)
  return corrupted


@pytest.mark.parametrize("titles", [None, ("",) * 30])
def test_mlm_targets_reconstruct_the_corrupted_words(titles):
  ds = synthetic.make_dataset(SEQUENCES, 30, titles=titles, seed=3)
  config = prompts.SampleConfig(max_history=4, mlm_noise_density=0.3, mlm_mean_span_length=2.0)
  for _, key, sample in _all_samples(ds, "mlm", config=config):
    user, position = keys_lib.decode_key(key)
    window = list(ds.train_sequence(user))[:position + 1][-config.max_history:]
    fields = synthetic.parse_fields("mlm", sample["template_id"], sample["inputs"])
    assert "<extra_id_0>" in fields["history"]
    assert sample["targets"].startswith("<extra_id_0> ")
    original = "; ".join(
        f"{_pid(ds, i)}: {ds.item_titles[i]}" if ds.item_titles[i] else str(_pid(ds, i)) for i in window)
    assert _reconstruct(fields["history"], sample["targets"]) == original
    if titles is None:  # titles present: IDs are never corrupted
      shown_ids = [int(t.split(":")[0]) for t in synthetic.split_items(fields["history"])]
      assert shown_ids == [_pid(ds, i) for i in window]


def test_bpr_pairs_hold_a_later_positive_and_a_fresh_negative(ds):
  config = prompts.SampleConfig(max_history=4, bpr_positive_window=2)
  firsts = set()
  for _, key, sample in _all_samples(ds, "bpr", config=config):
    user, position = keys_lib.decode_key(key)
    train = list(ds.train_sequence(user))
    fields = synthetic.parse_fields("bpr", sample["template_id"], sample["inputs"])
    pair = [int(fields[f].split(":")[0]) for f in ("item_a", "item_b")]
    (target,) = synthetic.numbers(sample["targets"])
    assert pair.count(target) == 1
    assert target in {_pid(ds, i) for i in train[position:position + 2]}
    (negative,) = set(pair) - {target}
    assert negative not in {_pid(ds, i) for i in ds.sequence(user)}
    shown = [int(t.split(":")[0]) for t in synthetic.split_items(fields["history"])]
    assert shown == [_pid(ds, i) for i in train[:position][-config.max_history:]]
    firsts.add(pair[0] == target)
  assert firsts == {True, False}


def test_train_keys_are_capped_per_user(ds):
  config = prompts.SampleConfig(max_train_samples_per_user=2, num_candidates=5)
  for task in prompts.TASKS.values():
    keys = task.sample_keys(ds, "train", config)
    users = [keys_lib.decode_key(k)[0] for k in keys]
    assert max(users.count(u) for u in set(users)) == 2


@given(ds=synthetic.datasets())
@settings(max_examples=25, deadline=None)
def test_every_task_renders_every_key_of_random_datasets(ds):
  config = prompts.SampleConfig(max_history=3, num_candidates=4)
  for task in prompts.TASKS.values():
    for split in task.SPLITS:
      for key in task.sample_keys(ds, split, config):
        sample = task.render(ds, int(key), split, config, 0)
        assert sample["inputs"] and sample["targets"]


def test_keys_are_int64_arrays(ds):
  for task in prompts.TASKS.values():
    for split in task.SPLITS:
      keys = task.sample_keys(ds, split, CONFIG)
      assert isinstance(keys, np.ndarray) and keys.dtype == np.int64
  assert config_lib.SPLITS == ("train", "validation", "test")
