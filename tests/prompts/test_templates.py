"""Prompt phrasings."""
import numpy as np
import pytest

from rec_t5x.prompts import templates


@pytest.mark.parametrize("task", sorted(templates.TEMPLATES))
def test_enough_phrasings(task):
  template_set = templates.TEMPLATES[task]
  assert len(template_set.training) >= 5
  assert len(set(template_set.training)) == len(template_set.training)
  if task in ("retrieval", "ranking", "rating"):
    assert len(template_set.held_out) >= 2
    assert not set(template_set.held_out) & set(template_set.training)


def test_validate_names_task_and_phrasing():
  bad = {"retrieval": templates.TemplateSet(frozenset({"history"}), ("ok {history}", "bad {histry}"), ())}
  with pytest.raises(ValueError,
                     match=r"retrieval.training\[1\] has fields \['histry'\]; expected \['history'\]"):
    templates.validate(bad)


def test_choose_uses_held_out_phrasings_only_for_evaluation():
  rng = np.random.default_rng(0)
  n_train = len(templates.RETRIEVAL.training)
  train_ids = {templates.choose("retrieval", "train", "held_out", rng)[0] for _ in range(200)}
  eval_ids = {templates.choose("retrieval", "test", "held_out", rng)[0] for _ in range(200)}
  seen_eval = {templates.choose("retrieval", "validation", "training", rng)[0] for _ in range(200)}
  assert train_ids == set(range(n_train))
  assert eval_ids == set(range(n_train, n_train + len(templates.RETRIEVAL.held_out)))
  assert seen_eval == set(range(n_train))
  with pytest.raises(ValueError, match="training-only"):
    templates.choose("mim", "validation", "held_out", rng)
