"""SentencePiece vocabularies for rec_t5x: one trained on a dataset's text, or the real T5 vocabulary.

Two ways to get token ids, both `seqio.SentencePieceVocabulary` objects with T5's conventions
(pad 0, eos 1, unk 2, no bos, 100 sentinels `<extra_id_0..99>` appended as the *last* ids, so
`<extra_id_0>` is `vocab_size - 1`, as T5 span corruption expects):

1. A per-dataset vocabulary, `get_vocabulary(dataset_name, corpus_fn, vocab_size)`. It returns at
   once (SeqIO tasks are registered at import time, which must not train anything). On first real
   use (encode, decode, `vocab_size`, ...) it trains a unigram SentencePiece model on `corpus_fn()`
   and caches it at `<data_dir>/vocab/<dataset_name>/spm_<vocab_size>.model`, where `data_dir` is
   `$REC_T5X_DATA_DIR` or `~/.cache/rec_t5x`. Later uses (and other processes) reuse that file;
   concurrent builders serialise on a lock file (`fcntl`, so `data_dir` must be a local or POSIX
   filesystem; the T5 file below may be a `gs://` path) and the model is written with an atomic
   rename.
   Digits are split (`split_digits=True`), so an item id such as 4821 becomes the pieces
   4 8 2 1: every id is spelled with a handful of digit tokens (a small trie fan-out for constrained
   decoding). Byte fallback is on, so no character is ever `<unk>`. Delete the cached file to
   retrain after the dataset's text changes. A dataset in the atomic item-ID style
   (`<dataset>_atomic`, rec_t5x/item_ids.py) passes `symbols_fn`: every `<iN>` becomes a
   user-defined symbol, one piece per item on top of the requested size.

2. The real T5 vocabulary (`cc_all.32000.100extra`, the one FLAN-T5 checkpoints were trained with).
   This project does not download it; point rec_t5x at your copy of its `sentencepiece.model`:

     export REC_T5X_VOCABULARY=/path/to/cc_all.32000.100extra/sentencepiece.model
     # or, in a binary or through gin (at the edges, never in library code):
     rec_t5x.vocabulary.use_vocabulary("/path/to/sentencepiece.model")

   When set, every vocabulary from `get_vocabulary` uses that file instead of training one. The
   choice is read lazily at each vocabulary's first use, so a gin binding parsed after
   `import seqio_tasks` still takes effect; after first use a vocabulary keeps the file it loaded.
   `use_vocabulary(path)` wins over the environment variable; `use_vocabulary(None)` clears it
   (the environment variable, if set, applies again). A missing file raises FileNotFoundError naming
   the path and the variable. Fine-tuning a FLAN-T5 checkpoint needs this vocabulary: the embedding
   rows of a checkpoint mean nothing under a dataset-trained vocabulary.

Model vocabulary size: the network's `vocab_size` must be at least `vocabulary.vocab_size`
(pieces + 100 extra ids); T5 rounds it up to a multiple of 128 (32100 -> 32128).

Training uses the `sentencepiece` library itself; the code here only fixes the T5 conventions,
determinism (one thread, fixed seed), the vocabulary cap, caching and locking.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import tempfile
from typing import Any

from absl import logging
import seqio
import sentencepiece as spm
import tensorflow as tf

from rec_t5x.data import catalog

ENV_VOCABULARY = "REC_T5X_VOCABULARY"
ENV_DATA_DIR = "REC_T5X_DATA_DIR"  # read by rec_t5x.data.catalog.data_dir()
DEFAULT_VOCAB_SIZE = 8000
DEFAULT_EXTRA_IDS = 100
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
# SentencePiece's own default; raised per corpus so that no sentence is skipped.
_SPM_MAX_SENTENCE_LENGTH = 4192
_CAP_PATTERN = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")

# Set by `use_vocabulary`; None means "not set in code" (then $REC_T5X_VOCABULARY applies).
_vocabulary_override: str | None = None


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> str:
  """The rec_t5x data directory, resolved at call time (a later change of the variable applies).

  Args:
    data_dir: explicit directory; when None, `rec_t5x.data.catalog.data_dir()` decides
      (`$REC_T5X_DATA_DIR`, else `~/.cache/rec_t5x`).

  Returns:
    The absolute path.
  """
  chosen = os.fspath(data_dir) if data_dir else os.fspath(catalog.data_dir())
  return os.path.abspath(os.path.expanduser(chosen))


def vocabulary_cache_path(dataset_name: str, vocab_size: int, data_dir: str | None = None) -> str:
  """`<data_dir>/vocab/<dataset_name>/spm_<vocab_size>.model` (the file `get_vocabulary` trains)."""
  if not dataset_name or os.sep in dataset_name or dataset_name in (".", ".."):
    raise ValueError(f"dataset_name must be a non-empty name without '{os.sep}'; got {dataset_name!r}")
  return os.path.join(resolve_data_dir(data_dir), "vocab", dataset_name, f"spm_{vocab_size}.model")


# ---------------------------------------------------------------------------------------------
# Training.
# ---------------------------------------------------------------------------------------------


def _collect_sentences(texts: Iterable[str]) -> tuple[list[str], int, int]:
  """Splits texts into non-empty lines; returns (sentences, skipped blank lines, longest in bytes)."""
  sentences, blank, longest = [], 0, 0
  for index, text in enumerate(texts):
    if not isinstance(text, str):
      raise TypeError(f"corpus text {index} must be str; got {type(text).__name__}: {text!r:.80}")
    for line in text.splitlines():
      if line.strip():
        sentences.append(line)
        longest = max(longest, len(line.encode("utf-8")))
      else:
        blank += 1
  return sentences, blank, longest


def _train_bytes(sentences: list[str], vocab_size: int, seed: int, character_coverage: float,
                 max_sentence_length: int, user_defined_symbols: tuple[str, ...]) -> bytes:
  spm.set_random_generator_seed(seed)
  model = io.BytesIO()
  extra = {"user_defined_symbols": list(user_defined_symbols)} if user_defined_symbols else {}
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(sentences), model_writer=model, model_type="unigram",
      vocab_size=vocab_size, pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
      pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>", split_digits=True,
      byte_fallback=True, character_coverage=character_coverage, num_threads=1,
      input_sentence_size=0, shuffle_input_sentence=False, max_sentence_length=max_sentence_length,
      hard_vocab_limit=True, minloglevel=2, **extra)
  return model.getvalue()


def _atomic_write(path: str, data: bytes) -> None:
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


def train_sentencepiece(texts: Iterable[str], model_path: str, vocab_size: int, *, seed: int = 0,
                        character_coverage: float = 0.9995,
                        user_defined_symbols: Iterable[str] = ()) -> str:
  """Trains a unigram SentencePiece model with T5's special ids and writes it atomically.

  Conventions: pad 0, eos 1, unk 2, no bos; digits split into single-digit pieces; byte fallback
  (256 `<0x..>` pieces, so the smallest usable vocabulary is about 260 + the corpus' distinct
  characters). Deterministic: one thread, a fixed seed, no sampling of the input, so the same corpus
  gives a byte-identical model file. If the corpus cannot support `vocab_size` pieces, the size is
  capped to the largest it supports and a warning says so. A `<model_path minus .model>.json` file
  records the requested and actual sizes, the number of user-defined symbols and a SHA-256 of the
  corpus.

  User-defined symbols (e.g. the atomic item IDs `<i1>` .. `<iN>`, rec_t5x/item_ids.py) are pieces
  of their own wherever they occur in text, whatever the corpus statistics; they take ids right
  after pad/eos/unk and count towards `vocab_size` (the learned pieces get what is left).

  Args:
    texts: training text; each text may hold several lines (each line is one sentence, blank lines
      are skipped and counted).
    model_path: where to write the `.model` file (parent folders are created; written to a
      temporary file and renamed, so readers never see a partial file).
    vocab_size: requested number of pieces, including pad/eos/unk and the byte pieces, not including
      the extra ids that `seqio.SentencePieceVocabulary` appends.
    seed: SentencePiece's random seed.
    character_coverage: share of characters covered by character pieces (the rest use bytes).
    user_defined_symbols: strings that always encode as one piece each (distinct, non-empty).

  Returns:
    `model_path`.

  Raises:
    ValueError: the corpus is empty, or `vocab_size` is below what the corpus requires.
    TypeError: a text is not a str.
  """
  if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 4:
    raise ValueError(f"vocab_size must be an integer >= 4; got {vocab_size!r}")
  if not 0.0 < character_coverage <= 1.0:
    raise ValueError(f"character_coverage must be in (0, 1]; got {character_coverage!r}")
  symbols = tuple(user_defined_symbols)
  bad = [sym for sym in symbols if not isinstance(sym, str) or not sym or sym.isspace()]
  if bad or len(set(symbols)) != len(symbols):
    raise ValueError(f"user_defined_symbols for {model_path} must be distinct non-empty strings; "
                     f"got {len(symbols)} with {len(symbols) - len(set(symbols))} repeated and "
                     f"invalid ones {bad[:5]}")
  if symbols and vocab_size < len(symbols) + 4:
    raise ValueError(f"vocab_size={vocab_size} for {model_path} cannot hold {len(symbols)} "
                     "user-defined symbols plus pad/eos/unk")
  sentences, blank, longest = _collect_sentences(texts)
  if not sentences:
    raise ValueError(f"cannot train {model_path}: the corpus has no non-blank text ({blank} blank lines)")
  max_len = max(_SPM_MAX_SENTENCE_LENGTH, longest + 1)
  actual = vocab_size
  try:
    model = _train_bytes(sentences, actual, seed, character_coverage, max_len, symbols)
  except RuntimeError as e:
    match = _CAP_PATTERN.search(str(e))
    if match is None:
      raise ValueError(f"SentencePiece training for {model_path} failed (vocab_size={vocab_size}, "
                       f"{len(sentences)} sentences): {e}") from e
    actual = int(match.group(2))
    logging.warning("Vocabulary %s: the corpus (%d sentences) supports at most %d pieces; "
                    "capping vocab_size %d -> %d.", model_path, len(sentences), actual, vocab_size, actual)
    model = _train_bytes(sentences, actual, seed, character_coverage, max_len, symbols)
  if blank:
    logging.info("Vocabulary %s: skipped %d blank lines of the corpus.", model_path, blank)
  digest = hashlib.sha256("\n".join(sentences).encode("utf-8")).hexdigest()
  meta = {"requested_vocab_size": vocab_size, "vocab_size": actual, "capped": actual != vocab_size,
          "num_sentences": len(sentences), "blank_lines_skipped": blank, "corpus_sha256": digest,
          "seed": seed, "character_coverage": character_coverage, "model_type": "unigram",
          "split_digits": True, "byte_fallback": True, "pad_id": PAD_ID, "eos_id": EOS_ID,
          "unk_id": UNK_ID, "bos_id": -1, "user_defined_symbols": len(symbols)}
  _atomic_write(os.path.splitext(model_path)[0] + ".json",
                (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode("utf-8"))
  _atomic_write(model_path, model)
  return model_path


@contextlib.contextmanager
def _file_lock(path: str):
  """Exclusive advisory lock on `path + '.lock'` (local filesystems; serialises builders)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".lock", "a+b") as f:
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def ensure_sentencepiece(model_path: str, corpus_fn: Callable[[], Iterable[str]], vocab_size: int,
                         symbols_fn: Callable[[], Iterable[str]] | None = None) -> str:
  """Returns `model_path`, training it from `corpus_fn()` first unless it already exists.

  Safe when several processes call it at once: they serialise on a lock file, and the one that
  finds the model already written returns without calling `corpus_fn`.

  Args:
    model_path: the cached model file.
    corpus_fn: zero-argument callable returning the training text.
    vocab_size: learned pieces requested; user-defined symbols come on top of it.
    symbols_fn: optional zero-argument callable returning user-defined symbols (called only when
      training).
  """
  if os.path.exists(model_path):
    return model_path
  with _file_lock(model_path):
    if not os.path.exists(model_path):
      symbols = tuple(symbols_fn()) if symbols_fn is not None else ()
      logging.info("Training SentencePiece vocabulary %s (vocab_size=%d + %d user-defined symbols).",
                   model_path, vocab_size, len(symbols))
      train_sentencepiece(corpus_fn(), model_path, vocab_size + len(symbols),
                          user_defined_symbols=symbols)
  return model_path


# ---------------------------------------------------------------------------------------------
# The switch to the real T5 vocabulary.
# ---------------------------------------------------------------------------------------------


def use_vocabulary(path_or_none: str | os.PathLike[str] | None) -> None:
  """Makes every `get_vocabulary` vocabulary not yet used load `path_or_none` (e.g. T5's model).

  Call it at the edges (a binary, or gin via `gin.external_configurable`). None clears the setting,
  so `$REC_T5X_VOCABULARY` (if set) or the per-dataset vocabulary applies again. The file is checked
  when a vocabulary is first used.
  """
  global _vocabulary_override
  if path_or_none is not None and not isinstance(path_or_none, (str, os.PathLike)):
    raise TypeError(f"use_vocabulary expects a path or None; got {type(path_or_none).__name__}")
  _vocabulary_override = None if path_or_none is None else os.fspath(path_or_none)


def vocabulary_override() -> str | None:
  """The model file chosen by `use_vocabulary`, else `$REC_T5X_VOCABULARY`, else None."""
  return _vocabulary_override or os.environ.get(ENV_VOCABULARY) or None


def _checked_override(path: str) -> str:
  if not tf.io.gfile.exists(path):
    source = "use_vocabulary()" if _vocabulary_override else f"${ENV_VOCABULARY}"
    raise FileNotFoundError(
        f"SentencePiece model {path!r} (set by {source}) does not exist. Point ${ENV_VOCABULARY} or "
        f"rec_t5x.vocabulary.use_vocabulary() at the T5 vocabulary's sentencepiece.model "
        f"(cc_all.32000.100extra), or unset both to train a per-dataset vocabulary.")
  return path


# ---------------------------------------------------------------------------------------------
# The lazy SeqIO vocabulary.
# ---------------------------------------------------------------------------------------------


class DatasetVocabulary(seqio.SentencePieceVocabulary):
  """A `seqio.SentencePieceVocabulary` whose model file is chosen, and trained if needed, lazily.

  Everything that needs the model (encode/decode, ids, `vocab_size`, TF ops) goes through
  `_model_context`, which resolves the file on first call: the override (`use_vocabulary` /
  `$REC_T5X_VOCABULARY`) if set, else the cached per-dataset model, trained from `corpus_fn()` if
  missing. The chosen file is then pinned for this object's lifetime (and its copies and pickles;
  pickling an object not yet used needs a picklable `corpus_fn`, e.g. a module-level function).
  Overriding `_model_context` relies on seqio 0.0.20's SentencePieceVocabulary, where every access
  to the model goes through that method.

  Equality: two vocabularies are equal when they would load the same file with the same extra ids
  (so tasks of one dataset, or of several datasets under the T5 override, compare equal, including
  against a plain `seqio.SentencePieceVocabulary` of that file). Computing it never trains.
  """

  def __init__(self, dataset_name: str, corpus_fn: Callable[[], Iterable[str]],
               vocab_size: int = DEFAULT_VOCAB_SIZE, extra_ids: int = DEFAULT_EXTRA_IDS,
               data_dir: str | None = None,
               symbols_fn: Callable[[], Iterable[str]] | None = None):
    if symbols_fn is not None and not callable(symbols_fn):
      raise TypeError(f"symbols_fn for {dataset_name!r} must be callable or None; got "
                      f"{type(symbols_fn).__name__}")
    if not callable(corpus_fn):
      raise TypeError(f"corpus_fn for {dataset_name!r} must be callable; got {type(corpus_fn).__name__}")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 4:
      raise ValueError(f"vocab_size for {dataset_name!r} must be an integer >= 4; got {vocab_size!r}")
    if isinstance(extra_ids, bool) or not isinstance(extra_ids, int) or extra_ids < 0:
      raise ValueError(f"extra_ids for {dataset_name!r} must be an integer >= 0; got {extra_ids!r}")
    self._dataset_name = dataset_name
    self._corpus_fn = corpus_fn
    self._symbols_fn = symbols_fn
    self._requested_vocab_size = vocab_size
    self._data_dir = data_dir
    self._pinned_file: str | None = None
    # Validates the name now; the data dir itself is re-read at first use.
    vocabulary_cache_path(dataset_name, vocab_size, data_dir)
    super().__init__(sentencepiece_model_file="", extra_ids=extra_ids)

  def __getstate__(self) -> dict[str, Any]:
    state = super().__getstate__()
    if self._pinned_file is not None:
      state["_corpus_fn"] = None  # no longer needed; lets used vocabularies pickle with any corpus_fn
      state["_symbols_fn"] = None
    return state

  @property
  def dataset_name(self) -> str:
    return self._dataset_name

  def _target_file(self) -> str:
    """The file this vocabulary loads (or would load now), without training anything."""
    if self._pinned_file is not None:
      return self._pinned_file
    override = vocabulary_override()
    if override:
      return override
    return vocabulary_cache_path(self._dataset_name, self._requested_vocab_size, self._data_dir)

  def _model_context(self):
    if self._model is None:
      if self._pinned_file is None:
        override = vocabulary_override()
        if override:
          path = _checked_override(override)
          self._check_no_symbols(path)
        else:
          path = ensure_sentencepiece(
              vocabulary_cache_path(self._dataset_name, self._requested_vocab_size, self._data_dir),
              self._corpus_fn, self._requested_vocab_size, self._symbols_fn)
        self._pinned_file = path
      self._sentencepiece_model_file = self._pinned_file
    return super()._model_context()

  def _check_no_symbols(self, override: str) -> None:
    """A fixed (T5) model file cannot hold this dataset's user-defined symbols: refuse it."""
    if self._symbols_fn is None:
      return
    count = len(tuple(self._symbols_fn()))
    if count:
      raise ValueError(
          f"dataset {self._dataset_name!r} needs {count} user-defined vocabulary symbols (atomic "
          f"item IDs, rec_t5x/item_ids.py), but the vocabulary is fixed to {override!r} by "
          f"use_vocabulary() / ${ENV_VOCABULARY}, which has none of them. Use the digits-style "
          f"dataset (without the '_atomic' suffix) with the T5 vocabulary, or unset the override.")

  @property
  def sentencepiece_model_file(self) -> str:
    return self._target_file()

  @property
  def is_resolved(self) -> bool:
    """Whether the model file has been chosen (and trained/loaded) yet."""
    return self._pinned_file is not None

  def _identity(self) -> tuple[Any, ...]:
    return (_normalise_path(self._target_file()), self._extra_ids, self._reverse_extra_ids,
            _normalizer_key(self._normalizer_spec_overrides))

  def __eq__(self, other: object) -> bool:
    if isinstance(other, DatasetVocabulary):
      return self._identity() == other._identity()
    if isinstance(other, seqio.SentencePieceVocabulary):
      return self._identity() == (
          _normalise_path(other.sentencepiece_model_file), other.extra_ids,
          getattr(other, "_reverse_extra_ids", True),
          _normalizer_key(getattr(other, "_normalizer_spec_overrides", None)))
    return False

  def __hash__(self) -> int:
    # Only the parts that cannot change with the override; equal objects still hash equal.
    return hash(("rec_t5x.DatasetVocabulary", self._extra_ids, self._reverse_extra_ids))

  def __str__(self) -> str:
    state = "loaded" if self.is_resolved else "not yet loaded"
    return (f"DatasetVocabulary(dataset={self._dataset_name!r}, file={self._target_file()!r}, "
            f"requested_vocab_size={self._requested_vocab_size}, extra_ids={self._extra_ids}, {state})")

  __repr__ = __str__


def _normalise_path(path: str) -> str:
  return path if "://" in path else os.path.abspath(os.path.expanduser(path))


def _normalizer_key(spec: Any) -> bytes | None:
  return None if spec is None else spec.SerializeToString(deterministic=True)


def get_vocabulary(dataset_name: str, corpus_fn: Callable[[], Iterable[str]],
                   vocab_size: int = DEFAULT_VOCAB_SIZE, extra_ids: int = DEFAULT_EXTRA_IDS,
                   data_dir: str | None = None,
                   symbols_fn: Callable[[], Iterable[str]] | None = None) -> DatasetVocabulary:
  """The SeqIO vocabulary for a dataset; returns immediately, trains on first use.

  Args:
    dataset_name: catalogue name, e.g. "beauty" (names the cache folder).
    corpus_fn: zero-argument callable returning the training text (prompts, titles, ...); called
      only if the cached model is missing and no override is set.
    vocab_size: requested SentencePiece pieces (capped to what the corpus supports, with a warning);
      the vocabulary then has `pieces + extra_ids` ids.
    extra_ids: T5 sentinels appended as the last ids (`<extra_id_0>` = last id).
    data_dir: overrides `$REC_T5X_DATA_DIR` / `~/.cache/rec_t5x` for the cache.
    symbols_fn: optional zero-argument callable returning user-defined symbols that always encode
      as one piece (the atomic item IDs); they come on top of `vocab_size`. Called only when the
      model is trained, or to refuse a T5 override that cannot hold them.

  Returns:
    A lazy `seqio.SentencePieceVocabulary` (see `DatasetVocabulary`).
  """
  return DatasetVocabulary(dataset_name, corpus_fn, vocab_size=vocab_size, extra_ids=extra_ids,
                           data_dir=data_dir, symbols_fn=symbols_fn)
