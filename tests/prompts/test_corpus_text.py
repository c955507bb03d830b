"""Vocabulary-training corpus."""
import pytest

from rec_t5x import prompts
from rec_t5x.prompts import templates
from tests.prompts import synthetic

SEQUENCES = [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9], [10, 11, 12]]


def test_corpus_has_items_phrasings_and_training_samples_only():
  ds = synthetic.make_dataset(SEQUENCES, 25)
  config = prompts.SampleConfig(num_candidates=4)
  texts = list(prompts.corpus(ds, config, max_samples=10))
  assert all(isinstance(t, str) and t.strip() for t in texts)
  for item in range(ds.num_items):
    assert f"{ds.item_public_ids[item]}: {ds.item_titles[item]}" in texts
  num_phrasings = sum(len(t.training) + len(t.held_out) for t in templates.TEMPLATES.values())
  samples = texts[ds.num_items + num_phrasings:]
  assert len(samples) == 2 * 10  # inputs and targets of 10 samples
  assert not any("<extra_id_" in t for t in texts)
  # Every sample is a training sample: its input parses under a training phrasing, and matches
  # the render of one of the task's training keys.
  for inputs in samples[0::2]:
    matches = []
    for task in ("retrieval", "ranking", "rating", "mim", "bpr"):
      for template_id in range(len(templates.TEMPLATES[task].training)):
        try:
          synthetic.parse_fields(task, template_id, inputs)
          matches.append(task)
        except AssertionError:
          pass
    assert matches, inputs
    rendered = {prompts.TASKS[t].render(ds, int(k), "train", config, config.seed)["inputs"]
                for t in matches for k in prompts.TASKS[t].sample_keys(ds, "train", config)}
    assert inputs in rendered
  assert texts == list(prompts.corpus(ds, config, max_samples=10))


def test_corpus_stops_when_samples_run_out_and_validates_max_samples():
  ds = synthetic.make_dataset(SEQUENCES, 25)
  config = prompts.SampleConfig(num_candidates=4)
  per_task = len(prompts.TASKS["retrieval"].sample_keys(ds, "train", config))
  texts = list(prompts.corpus(ds, config, max_samples=10_000))
  num_fixed = ds.num_items + sum(len(t.training) + len(t.held_out) for t in templates.TEMPLATES.values())
  assert len(texts) - num_fixed == 2 * 5 * per_task  # retrieval, ranking, rating, mim, bpr
  with pytest.raises(ValueError, match=r"corpus\(max_samples=-1\)"):
    list(prompts.corpus(ds, config, max_samples=-1))
