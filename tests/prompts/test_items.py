"""Item rendering and negative sampling."""
import numpy as np
import pytest

from rec_t5x.prompts import items as items_lib
from tests.prompts import synthetic


def test_item_text_is_public_id_and_title():
  ds = synthetic.make_dataset([[0, 1]], 3, titles=("Toy Story (1995)", "", "A  B"))
  pid = [int(p) for p in ds.item_public_ids]
  assert items_lib.item_text(ds, 0) == f"{pid[0]}: Toy Story (1995)"
  assert items_lib.item_text(ds, 1) == str(pid[1])
  assert items_lib.public_id(ds, 2) == str(pid[2])
  assert items_lib.item_words(ds, 0) == ([f"{pid[0]}:", "Toy", "Story", "(1995)"], 1)
  assert items_lib.item_words(ds, 1) == ([str(pid[1])], 1)
  assert items_lib.join_items(ds, [1, 0]) == f"{pid[1]}; {pid[0]}: Toy Story (1995)"


def test_atomic_style_spells_ids_as_single_symbols():
  digits = synthetic.make_dataset([[0, 1]], 3, titles=("Toy Story (1995)", "", "A  B"))
  ds = digits.with_item_id_style("atomic")
  pid = [int(p) for p in ds.item_public_ids]
  assert items_lib.item_text(ds, 0) == f"<i{pid[0]}>: Toy Story (1995)"
  assert items_lib.item_text(ds, 1) == f"<i{pid[1]}>"
  assert items_lib.item_words(ds, 0) == ([f"<i{pid[0]}>:", "Toy", "Story", "(1995)"], 1)
  assert items_lib.join_items(ds, [1, 0]) == f"<i{pid[1]}>; <i{pid[0]}>: Toy Story (1995)"
  # Only the spelling changes: same arrays, same IDs.
  assert ds.items is digits.items and ds.name == digits.name
  assert ds.with_item_id_style("atomic", name="x_atomic").name == "x_atomic"


def test_format_rating():
  assert items_lib.format_rating(4.0) == "4"
  assert items_lib.format_rating(np.float32(3.5)) == "3.5"
  with pytest.raises(ValueError, match="not finite"):
    items_lib.format_rating(float("nan"))


@pytest.mark.parametrize("num_items", [12, 40, 400])
def test_negatives_are_distinct_and_never_interacted(num_items):
  sequence = [0, 3, 5, 7, 9, 10]
  ds = synthetic.make_dataset([sequence, [1, 2]], num_items)
  for seed in range(20):
    negatives = items_lib.sample_negatives(ds, 0, 5, np.random.default_rng(seed), "ranking")
    assert negatives.shape == (5,)
    assert len(set(negatives.tolist())) == 5
    assert not set(negatives.tolist()) & set(sequence)
    assert all(0 <= n < num_items for n in negatives)


def test_negatives_cover_the_free_items():
  ds = synthetic.make_dataset([[0, 1, 2]], 30)
  seen = set()
  for seed in range(200):
    seen |= set(items_lib.sample_negatives(ds, 0, 1, np.random.default_rng(seed), "bpr").tolist())
  assert seen == set(range(3, 30))


def test_too_few_negatives_is_an_error_naming_the_fix():
  ds = synthetic.make_dataset([[0, 1, 2, 3]], 6)
  with pytest.raises(ValueError, match=r"ranking: user 0 of 'synthetic' interacted with 4 of 6 items, "
                     r"leaving 2 possible negatives; 3 are needed \(lower SampleConfig.num_candidates\)"):
    items_lib.sample_negatives(ds, 0, 3, np.random.default_rng(0), "ranking")
