"""Every task of every ml100k mixture yields well-formed tokenized examples from real ML-100K.

Needs the fetched files (`python -m rec_t5x.data.fetch ml100k`). The dataset is processed and the
vocabulary trained (on a 2,000-sample corpus, a few seconds) in a per-module temporary data dir
whose raw/ links to the real one, so the user's data dir is only read.
"""
import re

import numpy as np
import pytest
import seqio

from rec_t5x import metrics
from rec_t5x.prompts import keys as keys_lib
from seqio_tasks import registry

pytestmark = pytest.mark.real_data
MIXTURES = ("rec_only", "rec_mim", "rec_bpr", "rec_mlm", "rec_all")
LENGTHS = {"inputs": 1024, "targets": 64}


@pytest.fixture(name="ml100k", scope="module")
def _ml100k(tmp_path_factory):
  from rec_t5x.data import catalog  # pylint: disable=g-import-not-at-top
  raw = catalog.data_dir() / "raw"
  if not (raw / "ml-100k").is_dir():
    pytest.fail(f"ML-100K is not fetched under {raw}: run `.venv/bin/python -m rec_t5x.data.fetch ml100k`")
  data_dir = tmp_path_factory.mktemp("rec_t5x_data")
  (data_dir / "raw").symlink_to(raw, target_is_directory=True)
  patch = pytest.MonkeyPatch()
  patch.setenv("REC_T5X_DATA_DIR", str(data_dir))
  patch.setattr(registry, "VOCAB_CORPUS_SAMPLES", 2000)
  try:
    yield registry.load_dataset("ml100k")
  finally:
    patch.undo()


def _check_example(ex, task_kind, vocab, ds):
  for feature in ("inputs", "targets"):
    ids = ex[feature]
    assert ids.dtype == np.int32 and ids.ndim == 1 and len(ids) >= 2
    assert ids[-1] == 1 and np.all(ids[:-1] > 2)  # EOS last; no pad, EOS or unk inside
    assert np.all(ids < vocab.vocab_size)
  targets = ex["targets_pretokenized"].decode()
  assert vocab.decode(ex["targets"][:-1].tolist()) == targets
  inputs = ex["inputs_pretokenized"].decode()
  if len(ex["inputs"]) < LENGTHS["inputs"]:  # not truncated: the ids spell the whole prompt
    assert vocab.decode(ex["inputs"][:-1].tolist()) == inputs
  if task_kind == "rating":
    assert 1.0 <= metrics.parse_rating(targets) <= 5.0
  elif task_kind == "mlm":
    assert re.fullmatch(r"<extra_id_0> .*<extra_id_\d+>", targets)
    assert "<extra_id_0>" in ex["inputs_pretokenized"].decode()
  else:
    ids = metrics.parse_item_ids(targets)
    assert ids and all(1 <= i <= ds.num_items for i in ids)


def _member_tasks(dataset: str = "ml100k"):
  """Every task of every mixture of `dataset` (each checked once)."""
  return sorted({t.name for m in MIXTURES
                 for t in seqio.get_mixture_or_task(f"rec_t5x.{dataset}.{m}").tasks})


def test_the_mixtures_use_all_six_tasks():
  assert _member_tasks() == sorted(f"rec_t5x.ml100k.{t}" for t in
                                   ("retrieval", "ranking", "rating", "mim", "mlm", "bpr"))


@pytest.mark.parametrize("name", _member_tasks() + _member_tasks("ml100k_atomic"))
def test_every_member_task_yields_well_formed_examples(ml100k, name):
  task = seqio.get_mixture_or_task(name)
  vocab = task.output_features["inputs"].vocabulary
  kind = registry.task_entry(name).prompt_task
  for split in task.splits:
    examples = list(task.get_dataset(LENGTHS, split=split, shuffle=True, seed=1).take(8)
                    .as_numpy_iterator())
    assert len(examples) == 8, (name, split)
    for ex in examples:
      _check_example(ex, kind, vocab, ml100k)
      if split in ("validation", "test") and kind != "rating":
        user, _ = keys_lib.decode_key(int(ex["key"]))
        item = ml100k.validation_item(user) if split == "validation" else ml100k.test_item(user)
        assert metrics.parse_item_ids(ex["targets_pretokenized"]) == [ml100k.item_public_ids[item]]


@pytest.mark.parametrize("mixture", MIXTURES)
def test_mixture_yields_well_formed_examples(ml100k, mixture):
  del ml100k
  provider = seqio.get_mixture_or_task(f"rec_t5x.ml100k.{mixture}")
  vocab = provider.output_features["inputs"].vocabulary
  mixed = list(provider.get_dataset(LENGTHS, split="train", shuffle=False, seed=0,
                                    copy_pretokenized=True).take(16).as_numpy_iterator())
  assert len(mixed) == 16
  for ex in mixed:
    assert ex["inputs"][-1] == 1 and ex["targets"][-1] == 1
    assert vocab.decode(ex["targets"][:-1].tolist()) == ex["targets_pretokenized"].decode()
  evaluation = list(provider.get_dataset(LENGTHS, split="validation", shuffle=False).take(4)
                    .as_numpy_iterator())
  assert len(evaluation) == 4  # auxiliary tasks are skipped for validation


def test_evaluation_splits_cover_every_eval_user_once(ml100k):
  task = seqio.get_mixture_or_task("rec_t5x.ml100k.retrieval")
  assert task.num_input_examples("test") == len(ml100k.eval_users()) == 943
  assert task.num_input_examples("train") == sum(max(len(ml100k.train_sequence(u)) - 1, 0)
                                                 for u in range(ml100k.num_users))


def test_atomic_variant_respells_the_same_samples_with_one_piece_per_item_id(ml100k):
  atomic = registry.load_dataset("ml100k_atomic")
  assert atomic.item_id_style == "atomic" and ml100k.item_id_style == "digits"
  np.testing.assert_array_equal(atomic.items, ml100k.items)
  np.testing.assert_array_equal(atomic.item_public_ids, ml100k.item_public_ids)
  task = seqio.get_mixture_or_task("rec_t5x.ml100k_atomic.retrieval")
  vocab = task.output_features["inputs"].vocabulary
  digits_vocab = seqio.get_mixture_or_task("rec_t5x.ml100k.retrieval").output_features[
      "inputs"].vocabulary
  assert vocab != digits_vocab and vocab.vocab_size > ml100k.num_items
  for public_id in (1, 9, 10, 99, 100, ml100k.num_items):
    pieces = [i for i in vocab.encode(f"x <i{public_id}>: y") if vocab.decode([i]).strip()]
    assert [vocab.decode([i]) for i in pieces] == ["x", f"<i{public_id}>", ":", "y"]
  # A number in a title or rating never turns into an item token.
  assert all(not vocab.decode([i]).startswith("<i") for i in vocab.encode("Apollo 13 (1995) rated 4"))
  for split in ("train", "test"):
    ours = list(task.get_dataset(LENGTHS, split=split, shuffle=False).take(6).as_numpy_iterator())
    theirs = list(seqio.get_mixture_or_task("rec_t5x.ml100k.retrieval").get_dataset(
        LENGTHS, split=split, shuffle=False).take(6).as_numpy_iterator())
    for a, d in zip(ours, theirs):
      assert a["key"] == d["key"]
      assert (re.sub(r"<i(\d+)>", r"\1", a["inputs_pretokenized"].decode())
              == d["inputs_pretokenized"].decode())
      assert metrics.parse_item_ids(a["targets_pretokenized"]) == metrics.parse_item_ids(
          d["targets_pretokenized"])
      assert len(a["targets"]) <= 3  # [word boundary,] the item token, EOS
      assert len(a["inputs"]) < len(d["inputs"])


def test_variant_without_titles_shows_the_same_samples_by_id_alone(ml100k):
  bare = registry.load_dataset("ml100k_atomic_notitles")
  assert bare.item_id_style == "atomic" and set(bare.item_titles) == {""}
  assert bare.info["titles_dropped"] == sum(1 for t in ml100k.item_titles if t) > 1600
  np.testing.assert_array_equal(bare.items, ml100k.items)
  titled = seqio.get_mixture_or_task("rec_t5x.ml100k_atomic.retrieval")
  task = seqio.get_mixture_or_task("rec_t5x.ml100k_atomic_notitles.retrieval")
  assert task.output_features["inputs"].vocabulary != titled.output_features["inputs"].vocabulary
  for split in ("train", "test"):
    ours = list(task.get_dataset(LENGTHS, split=split, shuffle=False).take(6).as_numpy_iterator())
    theirs = list(titled.get_dataset(LENGTHS, split=split, shuffle=False).take(6)
                  .as_numpy_iterator())
    assert len(ours) == len(theirs) == 6
    for b, t in zip(ours, theirs):
      assert b["key"] == t["key"] and b["targets_pretokenized"] == t["targets_pretokenized"]
      text = b["inputs_pretokenized"].decode()
      shown = re.findall(r"<i(\d+)>", text)
      assert shown == re.findall(r"<i(\d+)>", t["inputs_pretokenized"].decode())
      for public_id in shown:
        title = ml100k.item_titles[ml100k.item_index_of_public_id(int(public_id))]
        assert title not in text
      assert len(b["inputs"]) < len(t["inputs"])
    if split == "test":  # full 20-item histories: titles are most of a prompt's tokens
      assert sum(len(b["inputs"]) for b in ours) * 3 < sum(len(t["inputs"]) for t in theirs)
