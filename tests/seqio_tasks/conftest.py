"""A synthetic dataset registered once per session as `rec_t5x.synth.*`, with a small vocabulary.

The vocabulary is trained (about a second) into a per-session temporary data dir, so these tests
never touch the user's data dir.
"""
import pytest

import seqio_tasks
from rec_t5x import prompts
from rec_t5x import vocabulary
from tests.prompts import synthetic

SYNTH = "synth"
CONFIG = prompts.SampleConfig(max_history=4, num_candidates=5, mim_max_masks=2)
SEQUENCES = [[(u * 7 + k * 3) % 40 for k in range(3 + u % 6)] for u in range(24)]


def make_synth_dataset():
  return synthetic.make_dataset(SEQUENCES, 48, seed=11, name=SYNTH)


@pytest.fixture(scope="session")
def synth(tmp_path_factory):
  """Registers dataset 'synth' and its six tasks + five mixtures; returns the RecDataset."""
  ds = make_synth_dataset()
  if SYNTH not in seqio_tasks.dataset_names():
    data_dir = tmp_path_factory.mktemp("vocab")
    vocab = vocabulary.get_vocabulary(
        SYNTH, lambda: prompts.corpus(ds, CONFIG, 300), vocab_size=400, data_dir=str(data_dir))
    seqio_tasks.register_dataset(SYNTH, loader=make_synth_dataset, vocabulary=vocab)
    seqio_tasks.register_dataset_tasks(SYNTH, config=CONFIG)
  return seqio_tasks.load_dataset(SYNTH)
