"""`python -m rec_t5x.experiments.vocab --dataset D`: the vocabulary size of a dataset's tasks.

Prints one JSON line {"dataset", "vocab_size", "num_embeddings", "file"}: the size of the
vocabulary the registered tasks `rec_t5x.<D>.*` use in this environment (the dataset's own
SentencePiece model, trained and cached on first use, or the T5 model when $REC_T5X_VOCABULARY is
set), and NUM_EMBEDDINGS, that size rounded up to a multiple of 128 as T5 does (32100 -> 32128).
It runs as a subprocess with the run's environment, so the answer is the one the train binary
will see; it loads TensorFlow, which the driver itself does not need.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

EMBEDDING_MULTIPLE = 128


def round_up(vocab_size: int, multiple: int = EMBEDDING_MULTIPLE) -> int:
  """`vocab_size` rounded up to a multiple of `multiple` (the network's embedding rows).

  Raises:
    ValueError: for a size or multiple below 1.
  """
  if vocab_size < 1 or multiple < 1:
    raise ValueError(f"round_up({vocab_size}, {multiple}): expected positive integers")
  return -(-vocab_size // multiple) * multiple


def describe(dataset: str) -> dict[str, object]:
  """The registered vocabulary of `dataset`'s tasks: its size, embedding rows and file."""
  import seqio_tasks  # pylint: disable=g-import-not-at-top  (TensorFlow; only in this subprocess)
  from seqio_tasks import registry  # pylint: disable=g-import-not-at-top
  del seqio_tasks  # Imported for its registrations.
  vocabulary = registry.dataset_entry(dataset).vocabulary
  size = int(vocabulary.vocab_size)
  return {"dataset": dataset, "vocab_size": size, "num_embeddings": round_up(size),
          "file": getattr(vocabulary, "sentencepiece_model_file", None)}


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--dataset", required=True, help="a registered dataset, e.g. ml100k")
  args = parser.parse_args(argv)
  print(json.dumps(describe(args.dataset)), flush=True)


if __name__ == "__main__":
  main()
