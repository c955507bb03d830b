"""Property: no sample reveals an interaction its split may not see.

Item mentions are parsed from the rendered text (inputs' field values and item-ID targets), never
taken from the renderer. For every user u:
  * training samples of every task mention only items of `train_sequence(u)` or items u never
    interacted with (negatives), so u's validation / test item appears only if it also occurs in
    the training sequence;
  * validation samples may add u's validation item, test samples the validation and test items.
"""
import re

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from rec_t5x import item_ids
from rec_t5x import prompts
from rec_t5x.prompts import keys as keys_lib
from tests.prompts import synthetic

_RATED = re.compile(r" \(rated [0-9.]+\)")
_ITEM_FIELDS = ("history", "candidates", "item", "item_a", "item_b")
_ID_TARGET_TASKS = ("retrieval", "ranking", "mim", "bpr")


def _mentions(task: str, sample: dict) -> set[int]:
  fields = synthetic.parse_fields(task, sample["template_id"], sample["inputs"])
  found = set()
  for name in _ITEM_FIELDS:
    if name in fields:
      found |= set(synthetic.numbers(_RATED.sub("", fields[name])))
  if task in _ID_TARGET_TASKS or task == "mlm":
    found |= set(synthetic.numbers(sample["targets"]))
  return found


@given(ds=synthetic.datasets(titles=False) | synthetic.datasets(titles=True),
       history=st.integers(1, 6), seed=st.integers(0, 2**31), window=st.integers(1, 3),
       style=st.sampled_from(item_ids.STYLES))
@settings(max_examples=60, deadline=None)
def test_no_sample_mentions_items_its_split_cannot_see(ds, history, seed, window, style):
  ds = ds.with_item_id_style(style)
  config = prompts.SampleConfig(max_history=history, num_candidates=4, bpr_positive_window=window,
                                mim_mask_rate=0.5)
  pid = ds.item_public_ids
  for name, task in prompts.TASKS.items():
    for split in task.SPLITS:
      for key in task.sample_keys(ds, split, config):
        sample = task.render(ds, int(key), split, config, seed)
        user, _ = keys_lib.decode_key(int(key))
        sequence = [int(i) for i in ds.sequence(user)]
        train = {int(pid[i]) for i in ds.train_sequence(user)}
        never = {int(pid[i]) for i in range(ds.num_items) if i not in sequence}
        allowed = train | never
        if split != "train":
          allowed.add(int(pid[ds.validation_item(user)]))
        if split == "test":
          allowed.add(int(pid[ds.test_item(user)]))
        mentioned = _mentions(name, sample)
        assert mentioned <= allowed, (name, split, sample, mentioned - allowed)
        if split == "train" and ds.validation_item(user) is not None:
          for held_out in (ds.validation_item(user), ds.test_item(user)):
            if held_out not in ds.train_sequence(user):
              assert int(pid[held_out]) not in mentioned, (name, sample)


def test_the_property_detects_a_leak():
  """A renderer that shows the test item in a training history must fail the check above."""
  ds = synthetic.make_dataset([[0, 1, 2, 3, 4]], 20)
  config = prompts.SampleConfig(num_candidates=4)
  key = int(prompts.TASKS["retrieval"].sample_keys(ds, "train", config)[0])
  sample = prompts.TASKS["retrieval"].render(ds, key, "train", config, 0)
  leaked_id = int(ds.item_public_ids[ds.test_item(0)])
  fields = synthetic.parse_fields("retrieval", sample["template_id"], sample["inputs"])
  leaky = dict(sample, inputs=sample["inputs"].replace(
      fields["history"], f"{fields['history']}; {leaked_id}: Leak"))
  assert leaked_id in _mentions("retrieval", leaky)
  assert leaked_id not in _mentions("retrieval", sample)


def test_the_property_detects_a_leak_of_an_atomic_id():
  ds = synthetic.make_dataset([[0, 1, 2, 3, 4]], 20).with_item_id_style("atomic")
  config = prompts.SampleConfig(num_candidates=4)
  key = int(prompts.TASKS["mim"].sample_keys(ds, "train", config)[0])
  sample = prompts.TASKS["mim"].render(ds, key, "train", config, 0)
  leaked_id = int(ds.item_public_ids[ds.test_item(0)])
  assert leaked_id not in _mentions("mim", sample)
  assert leaked_id in _mentions("mim", dict(sample, targets=f"{sample['targets']}, <i{leaked_id}>"))
