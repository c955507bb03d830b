"""Tests for rec_t5x.vocabulary: T5 conventions, determinism, laziness, caching and the T5 switch."""

import copy
import json
import os
import pickle
import random
import threading

import pytest
import seqio
import sentencepiece as spm
import tensorflow as tf

from rec_t5x import vocabulary

_WORDS = ("the", "user", "bought", "item", "then", "rated", "stars", "beauty", "toys", "game", "red",
          "lipstick", "puzzle", "ball", "sports", "outdoor", "next", "purchase", "history", "title")


def _corpus(seed: int = 0, n: int = 300) -> list[str]:
  rng = random.Random(seed)
  texts = []
  for _ in range(n):
    words = " ".join(rng.choice(_WORDS) for _ in range(8))
    texts.append(f"{words} {rng.randint(1, 9999)}; {rng.randint(1, 9999)}\ncafé naïve {rng.randint(1, 99)}")
  return texts


class _CountingCorpus:
  """A corpus_fn that records how often it is called."""

  def __init__(self, seed: int = 0):
    self.calls = 0
    self._seed = seed

  def __call__(self):
    self.calls += 1
    return _corpus(self._seed)


@pytest.fixture(autouse=True)
def _no_override(monkeypatch):
  """Every test starts (and ends) without the T5 switch set."""
  monkeypatch.delenv(vocabulary.ENV_VOCABULARY, raising=False)
  vocabulary.use_vocabulary(None)
  yield
  vocabulary.use_vocabulary(None)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> str:
  path = str(tmp_path_factory.mktemp("spm") / "a.model")
  return vocabulary.train_sentencepiece(_corpus(0), path, vocab_size=320)


@pytest.fixture(scope="module")
def stand_in_t5(tmp_path_factory) -> str:
  """A second, different model standing in for the real T5 sentencepiece.model."""
  path = str(tmp_path_factory.mktemp("t5") / "sentencepiece.model")
  texts = [f"completely different text number {i} with other words" for i in range(200)]
  return vocabulary.train_sentencepiece(texts, path, vocab_size=300)


def test_special_ids_follow_t5(trained):
  sp = spm.SentencePieceProcessor(model_file=trained)
  assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
  assert [sp.id_to_piece(i) for i in range(3)] == ["<pad>", "</s>", "<unk>"]
  vocab = seqio.SentencePieceVocabulary(trained, extra_ids=100)
  assert (vocab.pad_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2)


def test_digits_are_split(trained):
  sp = spm.SentencePieceProcessor(model_file=trained)
  pieces = sp.encode("item 4821 and 99017", out_type=str)
  digit_pieces = [p.lstrip("▁") for p in pieces if any(c.isdigit() for c in p)]
  assert "".join(digit_pieces) == "482199017"
  assert all(len(p) == 1 for p in digit_pieces)


def test_extra_ids_are_the_last_ids(trained):
  vocab = seqio.SentencePieceVocabulary(trained, extra_ids=100)
  pieces = spm.SentencePieceProcessor(model_file=trained).get_piece_size()
  assert vocab.vocab_size == pieces + 100
  # T5 convention: <extra_id_0> is the last id, <extra_id_99> the first extra id.
  assert vocab.encode("<extra_id_0>") == [vocab.vocab_size - 1]
  assert vocab.encode("<extra_id_99>") == [pieces]
  ids = vocab.encode("the item <extra_id_0> was <extra_id_1>")
  assert ids.count(vocab.vocab_size - 1) == 1 and ids.count(vocab.vocab_size - 2) == 1
  # The TF path (used in SeqIO pipelines) agrees with the Python path.
  assert vocab.encode_tf(tf.constant("the item <extra_id_0> was <extra_id_1>")).numpy().tolist() == ids


def test_round_trip(trained):
  vocab = seqio.SentencePieceVocabulary(trained, extra_ids=100)
  for text in ("the user bought item 4821; 17", "café naïve", "unseen ☃ 日本 chars"):
    ids = vocab.encode(text)
    assert vocab.unk_id not in ids  # byte fallback: nothing is <unk>
    assert vocab.decode(ids) == text
  # Bytes for unseen characters.
  pieces = vocab.tokenizer.encode("☃", out_type=str)
  assert any(p.startswith("<0x") for p in pieces)


def test_training_is_deterministic(tmp_path, trained):
  again = vocabulary.train_sentencepiece(_corpus(0), str(tmp_path / "b.model"), vocab_size=320)
  with open(trained, "rb") as f1, open(again, "rb") as f2:
    assert f1.read() == f2.read()


def test_vocab_size_is_capped_and_reported(tmp_path):
  path = str(tmp_path / "big.model")
  vocabulary.train_sentencepiece(_corpus(0, n=50), path, vocab_size=50_000)
  meta = json.loads((tmp_path / "big.json").read_text())
  size = spm.SentencePieceProcessor(model_file=path).get_piece_size()
  assert meta["capped"] is True and meta["requested_vocab_size"] == 50_000
  assert meta["vocab_size"] == size < 50_000
  assert meta["num_sentences"] == 100  # two lines per text


def test_training_errors(tmp_path):
  with pytest.raises(ValueError, match="vocab_size"):
    vocabulary.train_sentencepiece(_corpus(0, n=20), str(tmp_path / "x.model"), vocab_size=100)
  with pytest.raises(ValueError, match="no non-blank text"):
    vocabulary.train_sentencepiece(["", "  \n"], str(tmp_path / "x.model"), vocab_size=300)
  with pytest.raises(TypeError, match="corpus text 1"):
    vocabulary.train_sentencepiece(["ok", 5], str(tmp_path / "x.model"), vocab_size=300)
  assert not (tmp_path / "x.model").exists()
  assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


def test_user_defined_symbols_are_single_pieces(tmp_path):
  symbols = [f"<i{i}>" for i in range(1, 61)]
  path = vocabulary.train_sentencepiece(
      [t + f" <i{i % 60 + 1}>: title" for i, t in enumerate(_corpus(0))], str(tmp_path / "s.model"),
      vocab_size=320 + len(symbols), user_defined_symbols=symbols)
  vocab = seqio.SentencePieceVocabulary(path, extra_ids=100)
  for symbol in ("<i1>", "<i9>", "<i10>", "<i60>"):
    pieces = [vocab.decode([i]) for i in vocab.encode(f"the {symbol}: item 12")]
    assert pieces.count(symbol) == 1, pieces
  assert vocab.decode(vocab.encode("rated <i42>: x 42")) == "rated <i42>: x 42"
  assert all(not vocab.decode([i]).startswith("<i") for i in vocab.encode("item 42 <i> <i61>"))
  assert json.loads((tmp_path / "s.json").read_text())["user_defined_symbols"] == 60
  with pytest.raises(ValueError, match="distinct non-empty strings"):
    vocabulary.train_sentencepiece(_corpus(0), str(tmp_path / "d.model"), vocab_size=400,
                                   user_defined_symbols=["<i1>", "<i1>"])
  with pytest.raises(ValueError, match="cannot hold 60 user-defined symbols"):
    vocabulary.train_sentencepiece(_corpus(0), str(tmp_path / "d.model"), vocab_size=50,
                                   user_defined_symbols=symbols)


def test_symbols_come_on_top_of_the_requested_size_and_refuse_a_fixed_model(
    tmp_path, monkeypatch, stand_in_t5):
  symbols = [f"<i{i}>" for i in range(1, 31)]
  calls = []

  def symbols_fn():
    calls.append(1)
    return symbols

  vocab = vocabulary.get_vocabulary("toys_atomic", _CountingCorpus(), vocab_size=300,
                                    data_dir=str(tmp_path), symbols_fn=symbols_fn)
  assert not calls
  ids = vocab.encode("x <i30>")
  assert len(calls) == 1 and vocab.decode([ids[-1]]) == "<i30>"
  processor = spm.SentencePieceProcessor(model_file=vocab.sentencepiece_model_file)
  assert processor.get_piece_size() == 300 + 30  # the corpus supports 341: no cap
  # The T5 switch cannot hold the symbols: a clear error instead of silently spelling IDs by bytes.
  monkeypatch.setenv(vocabulary.ENV_VOCABULARY, stand_in_t5)
  other = vocabulary.get_vocabulary("toys_atomic", _CountingCorpus(), vocab_size=320,
                                    data_dir=str(tmp_path / "other"), symbols_fn=symbols_fn)
  with pytest.raises(ValueError, match=r"'toys_atomic' needs 30 user-defined vocabulary symbols.*"
                     r"without the '_atomic' suffix"):
    other.encode("x")
  # A dataset without symbols (digits style) still switches.
  plain = vocabulary.get_vocabulary("toys", _CountingCorpus(), vocab_size=320,
                                    data_dir=str(tmp_path / "other"), symbols_fn=lambda: [])
  assert plain.sentencepiece_model_file == stand_in_t5 and plain.encode("x")


def test_get_vocabulary_is_lazy_and_cached(tmp_path):
  corpus = _CountingCorpus()
  vocab = vocabulary.get_vocabulary("toys", corpus, vocab_size=320, data_dir=str(tmp_path))
  expected = tmp_path / "vocab" / "toys" / "spm_320.model"
  assert corpus.calls == 0 and not vocab.is_resolved and not expected.exists()
  assert vocab.sentencepiece_model_file == str(expected)  # known without training
  assert "toys" in str(vocab) and corpus.calls == 0
  ids = vocab.encode("the item 12")
  assert corpus.calls == 1 and expected.exists() and vocab.is_resolved
  assert vocab.decode(ids) == "the item 12"
  # A second vocabulary (e.g. another process) reuses the cached file.
  other_corpus = _CountingCorpus()
  other = vocabulary.get_vocabulary("toys", other_corpus, vocab_size=320, data_dir=str(tmp_path))
  assert other.encode("the item 12") == ids and other_corpus.calls == 0
  assert other.vocab_size == vocab.vocab_size


def test_data_dir_from_environment(tmp_path, monkeypatch):
  monkeypatch.setenv(vocabulary.ENV_DATA_DIR, str(tmp_path / "env_dir"))
  vocab = vocabulary.get_vocabulary("beauty", _CountingCorpus(), vocab_size=320)
  assert vocab.sentencepiece_model_file == str(tmp_path / "env_dir" / "vocab" / "beauty" / "spm_320.model")


def test_default_data_dir(tmp_path, monkeypatch):
  monkeypatch.delenv(vocabulary.ENV_DATA_DIR, raising=False)
  monkeypatch.setenv("HOME", str(tmp_path))
  vocab = vocabulary.get_vocabulary("beauty", _CountingCorpus(), vocab_size=320)
  assert vocab.sentencepiece_model_file == str(
      tmp_path / ".cache" / "rec_t5x" / "vocab" / "beauty" / "spm_320.model")


def test_equality_and_hash(tmp_path):
  a = vocabulary.get_vocabulary("toys", _CountingCorpus(), vocab_size=320, data_dir=str(tmp_path))
  b = vocabulary.get_vocabulary("toys", _CountingCorpus(1), vocab_size=320, data_dir=str(tmp_path))
  c = vocabulary.get_vocabulary("beauty", _CountingCorpus(), vocab_size=320, data_dir=str(tmp_path))
  assert a == b and hash(a) == hash(b)
  assert a != c
  assert not a.is_resolved  # comparing trains nothing
  # Features holding them compare equal too (SeqIO compares output features).
  assert seqio.Feature(a) == seqio.Feature(b)
  a.load_model()
  plain = seqio.SentencePieceVocabulary(a.sentencepiece_model_file, extra_ids=100)
  assert a == plain and plain == a
  assert a != seqio.SentencePieceVocabulary(a.sentencepiece_model_file, extra_ids=10)


def test_copies_keep_the_pinned_file(tmp_path):
  # A lambda cannot be pickled; a used vocabulary no longer needs (or pickles) its corpus_fn.
  vocab = vocabulary.get_vocabulary("toys", lambda: _corpus(0), vocab_size=320, data_dir=str(tmp_path))
  vocab.load_model()
  for clone in (copy.deepcopy(vocab), pickle.loads(pickle.dumps(vocab))):
    assert clone == vocab and clone.is_resolved
    assert clone.encode("item 7") == vocab.encode("item 7")


def test_concurrent_builders_train_once(tmp_path):
  corpus = _CountingCorpus()
  path = str(tmp_path / "vocab" / "shared.model")
  barrier = threading.Barrier(4)
  errors = []

  def build():
    try:
      barrier.wait()
      vocabulary.ensure_sentencepiece(path, corpus, 320)
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)

  threads = [threading.Thread(target=build) for _ in range(4)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors and corpus.calls == 1
  assert spm.SentencePieceProcessor(model_file=path).get_piece_size() > 0


def test_setter_switches_to_another_model(tmp_path, stand_in_t5):
  corpus = _CountingCorpus()
  # Created before the switch is set (as at `import seqio_tasks` before gin is parsed).
  toys = vocabulary.get_vocabulary("toys", corpus, vocab_size=320, data_dir=str(tmp_path))
  beauty = vocabulary.get_vocabulary("beauty", corpus, vocab_size=320, data_dir=str(tmp_path))
  vocabulary.use_vocabulary(stand_in_t5)
  assert toys.sentencepiece_model_file == stand_in_t5
  assert toys == beauty  # both now load the same file
  reference = seqio.SentencePieceVocabulary(stand_in_t5, extra_ids=100)
  assert toys.encode("completely different 12") == reference.encode("completely different 12")
  assert toys.vocab_size == reference.vocab_size
  assert corpus.calls == 0 and not (tmp_path / "vocab").exists()
  # Once loaded, a vocabulary keeps its file even if the switch is cleared.
  vocabulary.use_vocabulary(None)
  assert toys.sentencepiece_model_file == stand_in_t5
  assert beauty.sentencepiece_model_file.endswith(os.path.join("beauty", "spm_320.model"))


def test_environment_variable_switch(tmp_path, monkeypatch, stand_in_t5, trained):
  monkeypatch.setenv(vocabulary.ENV_VOCABULARY, stand_in_t5)
  vocab = vocabulary.get_vocabulary("toys", _CountingCorpus(), vocab_size=320, data_dir=str(tmp_path))
  assert vocab.vocab_size == seqio.SentencePieceVocabulary(stand_in_t5, extra_ids=100).vocab_size
  # The setter wins over the environment variable.
  vocabulary.use_vocabulary(trained)
  other = vocabulary.get_vocabulary("toys", _CountingCorpus(), vocab_size=320, data_dir=str(tmp_path))
  assert other.sentencepiece_model_file == trained
  assert other.vocab_size == seqio.SentencePieceVocabulary(trained, extra_ids=100).vocab_size


def test_missing_switch_file_names_path_and_variable(tmp_path, monkeypatch):
  missing = str(tmp_path / "nope" / "sentencepiece.model")
  monkeypatch.setenv(vocabulary.ENV_VOCABULARY, missing)
  vocab = vocabulary.get_vocabulary("toys", _CountingCorpus(), vocab_size=320, data_dir=str(tmp_path))
  with pytest.raises(FileNotFoundError) as info:
    vocab.encode("x")
  assert missing in str(info.value) and vocabulary.ENV_VOCABULARY in str(info.value)


def test_argument_validation(tmp_path):
  with pytest.raises(ValueError, match="dataset_name"):
    vocabulary.get_vocabulary("a/b", _CountingCorpus())
  with pytest.raises(TypeError, match="corpus_fn"):
    vocabulary.get_vocabulary("toys", ["not", "callable"])
  with pytest.raises(ValueError, match="vocab_size"):
    vocabulary.get_vocabulary("toys", _CountingCorpus(), vocab_size=0)
  with pytest.raises(TypeError, match="use_vocabulary"):
    vocabulary.use_vocabulary(42)
