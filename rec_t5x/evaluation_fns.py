"""Model callables of the recommendation evaluation: what `seqio.Evaluator` calls for each task.

`seqio.Evaluator` never sees the model: for each task it calls `predict_fn(dataset)`,
`predict_with_aux_fn(dataset)` and / or `score_fn(dataset)` on the enumerated model dataset
(`(index, features)`; the features include the sample `key`, carried with
`rec_t5x.evaluation.KeyedEncDecFeatureConverter`), and they return `[(index, output)]`.
`TaskFns` builds those three callables for one task:

  retrieval  predict_fn: top-K items of a constrained beam search over the trie of EVERY catalogue
               item's target tokens (public ID text + EOS), as `[K, length]` token arrays (empty
               rows when fewer than K items could be completed). History exclusion (default on):
               the sample key names the user, and every item of the sequence the prompt was built
               from (`Context.visible[:-1]`, the whole history, not only the `max_history` shown)
               is masked at its trie leaf. The key is carried instead of parsing IDs from the
               prompt because titles contain numbers ("57: 2001: A Space Odyssey (1968)").
             score_fn: P5's sampled protocol: the log-likelihood of the positive followed by
               `sampled_negatives` items the user never interacted with (seeded by
               (`sampled_seed`, key)), one float array per example, positive first.
  ranking    predict_fn: greedy generation (the model's free choice, for comparison);
             predict_with_aux_fn: every candidate scored by its teacher-forced log-likelihood
               (encoder once, candidates batched); prediction = best candidate's tokens,
               aux = {"ranked_ids": public IDs best first, "ranked_scores"}.
               Candidates are recomputed from the key with the prompt module's own sampler and
               checked against the rendered prompt (an error names the sample when they differ).
  rating     predict_fn: greedy generation of the rating text (parsed by the task postprocessor);
             predict_with_aux_fn: the expected rating under the model's distribution over the
               rating strings; aux = {"expected", "mass"}.

Each callable also keeps per-example details (scores, item IDs, the greedy text of ranking and
rating as `generated`) in `TaskFns.details` for the
predictions JSONL. Batches have a fixed size (a multiple of the mesh's data axis; the last batch is
padded with copies of its first row, whose outputs are dropped); examples are batched longest
prompt first and each batch's encoder length is trimmed to a multiple of 128 covering its longest
prompt (`trim_padding`), so each function compiles at most length / 128 times.
Single-process: every process would evaluate every example (multi-host sharding is not wired).
"""
import dataclasses
from typing import Any

import jax
import numpy as np

from rec_t5x import beam_search
from rec_t5x import decoding
from rec_t5x import item_trie
from rec_t5x import scoring
from rec_t5x.prompts import items as items_lib
from rec_t5x.prompts import keys as keys_lib
from rec_t5x.prompts import ranking as ranking_prompt
from rec_t5x.prompts import templates

KINDS = ("retrieval", "ranking", "rating")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Settings of the decoding evaluation.

  Attributes:
    top_k: retrieval items returned per example (K for Recall/NDCG@K), 1..beam_size.
    beam_size: beam width of the retrieval search (>= top_k).
    exclude_history: mask the user's history items in retrieval.
    sampled_negatives: negatives of P5's sampled protocol on the retrieval prompt (0 disables).
    sampled_seed: seed of those negatives (with the sample key).
    batch_size: examples per compiled call (rounded up to the data-axis size).
    score_chunk_size: candidates per decoder call when scoring (None: all at once).
    generate_length: tokens of greedy generation for ranking / rating (EOS included).
    max_examples: at most this many examples per task (None: the whole split).
  """
  top_k: int = 20
  beam_size: int = 20
  exclude_history: bool = True
  sampled_negatives: int = 99
  sampled_seed: int = 0
  batch_size: int = 32
  score_chunk_size: int | None = None
  generate_length: int = 8
  max_examples: int | None = None

  def __post_init__(self):
    def check(name, low, value=None, allow_none=False):
      value = getattr(self, name) if value is None else value
      if allow_none and value is None:
        return
      if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"EvalConfig.{name}={value!r}: expected an integer >= {low}"
                         + (" or None" if allow_none else ""))
    check("beam_size", 1)
    check("top_k", 1)
    if self.top_k > self.beam_size:
      raise ValueError(f"EvalConfig.top_k={self.top_k}: expected <= beam_size={self.beam_size}")
    check("sampled_negatives", 0)
    check("sampled_seed", 0)
    check("batch_size", 1)
    check("generate_length", 1)
    check("score_chunk_size", 1, allow_none=True)
    check("max_examples", 1, allow_none=True)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """What the callables need to know about one task.

  Attributes:
    name: SeqIO task name.
    kind: "retrieval", "ranking" or "rating".
    split: "validation" or "test".
    dataset: the RecDataset.
    sample_config: the task's `rec_t5x.prompts.SampleConfig`.
    vocabulary: the task's output vocabulary (seqio).
  """
  name: str
  kind: str
  split: str
  dataset: Any
  sample_config: Any
  vocabulary: Any

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"TaskSpec.kind={self.kind!r} of task {self.name!r}: expected one of {KINDS}")


def example_context(spec: TaskSpec, key: int) -> keys_lib.Context:
  """The leakage-safe view of the sample `key`; ValueError when the user has no history."""
  ctx = keys_lib.context(spec.dataset, int(key), spec.split, spec.kind)
  if ctx.visible.size < 2:
    raise ValueError(f"task {spec.name!r} split {spec.split!r}: sample key {int(key)} (user "
                     f"{ctx.user}) has no history item before its target; evaluation users need "
                     "at least one earlier interaction")
  return ctx


def build_catalogue_trie(spec: TaskSpec, vocab_size: int | None = None) -> item_trie.ItemTrie:
  """Trie of every catalogue item's target tokens (public ID text + EOS) in the task vocabulary."""
  ds = spec.dataset
  if ds.num_items == 0:
    raise ValueError(f"task {spec.name!r}: dataset {ds.name!r} has an empty item catalogue; "
                     "nothing to retrieve or rank")
  texts = [items_lib.public_id(ds, i) for i in range(ds.num_items)]
  return item_trie.build_item_trie_from_texts(texts, spec.vocabulary.encode,
                                              eos_id=spec.vocabulary.eos_id, vocab_size=vocab_size)


def candidate_indices(ds, public_ids, where: str) -> np.ndarray:
  """Item indices int32 [n] of public IDs; ValueError naming `where` and an unknown ID."""
  out = np.empty(len(public_ids), np.int32)
  for i, pid in enumerate(public_ids):
    try:
      out[i] = ds.item_index_of_public_id(int(pid))
    except (KeyError, ValueError) as e:
      raise ValueError(f"{where}: candidate {i} has public ID {pid!r}, which is not an item of "
                       f"dataset {ds.name!r} ({ds.num_items} items)") from e
  return out


def ranking_candidates(spec: TaskSpec, key: int, seed: int) -> np.ndarray:
  """The ranking sample's candidate item indices int64 [num_candidates], in prompt order.

  Replays `rec_t5x.prompts.ranking.render`'s random draws (template, then candidates) and checks
  that the candidates appear, in this order, in the rendered prompt.
  """
  ds, config = spec.dataset, spec.sample_config
  rng = keys_lib.sample_rng(ranking_prompt.NAME, spec.split, key, seed)
  ctx = example_context(spec, key)
  templates.choose(ranking_prompt.NAME, spec.split, config.eval_templates, rng)
  cands = ranking_prompt.candidates(ds, ctx, config, rng)
  rendered = ranking_prompt.render(ds, key, spec.split, config, seed)["inputs"]
  if items_lib.join_items(ds, cands) not in rendered:
    raise ValueError(f"task {spec.name!r}: the candidates recomputed for sample key {key} do not "
                     "match its rendered prompt; rec_t5x.prompts.ranking changed its random draws")
  return cands


def sampled_candidates(spec: TaskSpec, key: int, num_negatives: int, seed: int) -> np.ndarray:
  """P5 protocol: [1 + num_negatives] item indices, the positive first, then seeded negatives."""
  ctx = example_context(spec, key)
  rng = np.random.default_rng([int(seed), int(key), 99])
  negatives = items_lib.sample_negatives(spec.dataset, ctx.user, num_negatives, rng,
                                         "sampled ranking")
  return np.concatenate([[ctx.target], negatives]).astype(np.int64)


LENGTH_BUCKET = 128


def trim_padding(tokens: np.ndarray, bucket: int = LENGTH_BUCKET) -> np.ndarray:
  """Drops trailing all-padding columns of int [batch, L], keeping a multiple of `bucket` (<= L).

  The Evaluator pads every example to the task's feature length (1024 for ML prompts of ~300
  tokens); the encoder and every decoder step's cross-attention cost grow with that length, and
  trailing padding changes no output (it is masked), so each batch runs at its own bucketed length
  (at most L / bucket compilations).
  """
  used = np.flatnonzero(np.any(tokens != 0, axis=0))
  width = 0 if used.size == 0 else int(used[-1]) + 1
  width = min(tokens.shape[1], max(bucket, -(-width // bucket) * bucket))
  return tokens[:, :width]


def _prompt_length(features) -> int:
  return int(np.count_nonzero(np.asarray(features["encoder_input_tokens"])))


def _fixed_batches(dataset, batch_size: int):
  """(indices [n], encoder_input_tokens [batch_size, L'], keys [n], n) per batch, padded rows,
  trailing padding columns trimmed (`trim_padding`).

  Examples are batched longest prompt first (ties in dataset order), so prompts of similar length
  share a batch and trimming removes most padding: on ML-1M retrieval prompts this roughly halves
  the encoder and cross-attention work of dataset-order batches. Every output carries its
  dataset index, which the SeqIO Evaluator sorts by, so the order of batches changes no result.
  """
  examples = list(dataset.as_numpy_iterator())
  examples.sort(key=lambda pair: -_prompt_length(pair[1]))  # stable: ties keep dataset order
  rows = []

  def flush():
    indices = [int(i) for i, _ in rows]
    tokens = np.stack([np.asarray(f["encoder_input_tokens"]) for _, f in rows])
    keys = [int(np.asarray(f["key"]).reshape(-1)[0]) for _, f in rows]
    n = len(rows)
    if n < batch_size:
      tokens = np.concatenate([tokens, np.repeat(tokens[:1], batch_size - n, axis=0)])
    return indices, trim_padding(tokens.astype(np.int32)), keys, n

  for index, features in examples:
    rows.append((index, features))
    if len(rows) == batch_size:
      yield flush()
      rows = []
  if rows:
    yield flush()


def _pad_rows(rows: list[np.ndarray], batch_size: int, fill: int, width: int | None = None):
  """int32 [batch_size, width] from ragged rows (padding `fill`); width >= 1."""
  width = max([len(r) for r in rows] + [1]) if width is None else width
  out = np.full((batch_size, width), fill, np.int32)
  for b, r in enumerate(rows):
    out[b, :len(r)] = r
  return out


def _bucket(n: int) -> int:
  """Next power of two >= max(n, 8): few distinct shapes, so few compilations."""
  return max(8, 1 << max(0, int(n - 1).bit_length()))


class TaskFns:
  """The seqio model callables of one task (see module docstring).

  Args:
    spec: the task.
    module: the `rec_t5x.network.Transformer`.
    params: its parameters (on `params_shardings`).
    partitioner: a `rec_t5x.partitioning.Partitioner`.
    params_shardings: the parameters' NamedSharding tree.
    config: `EvalConfig`.
  """

  def __init__(self, spec: TaskSpec, module, params, partitioner, params_shardings,
               config: EvalConfig):
    self.spec, self.module, self.params = spec, module, params
    self.partitioner, self.params_shardings, self.config = partitioner, params_shardings, config
    data = partitioner.data_size
    self.batch_size = -(-config.batch_size // data) * data
    vocab_size = getattr(getattr(module, "config", None), "vocab_size", None)
    self.trie = build_catalogue_trie(spec, vocab_size)
    self.trie_arrays = self.trie.arrays()
    self.item_tokens = np.asarray(self.trie.item_tokens, np.int32)
    self.public_ids = np.asarray(spec.dataset.item_public_ids, np.int64)
    self.seed = spec.sample_config.seed
    self.details: dict[int, dict[str, Any]] = {}
    self._compiled: dict[str, Any] = {}

  # Compiled functions (built on first use).

  def _fn(self, name: str):
    if name in self._compiled:
      return self._compiled[name]
    p, shard = self.partitioner, self.params_shardings
    if name == "search":
      search_config = beam_search.BeamSearchConfig(beam_size=self.config.beam_size,
                                                   top_k=self.config.top_k,
                                                   eos_id=self.spec.vocabulary.eos_id)
      fn = beam_search.compile_beam_search(p, self.module, search_config, shard,
                                           with_exclusions=self.config.exclude_history)
    elif name == "score":
      fn = scoring.compile_score_candidates(p, self.module, shard,
                                            chunk_size=self.config.score_chunk_size)
    elif name == "rating":
      ds = self.spec.dataset
      values = np.arange(ds.rating_scale[0], ds.rating_scale[1] + 1.0)
      self.rating = scoring.rating_tokens(self.spec.vocabulary.encode, values,
                                          eos_id=self.spec.vocabulary.eos_id)
      fn = scoring.compile_expected_rating(p, self.module, shard, self.rating)
    elif name == "generate":
      module, length, eos = self.module, self.config.generate_length, self.spec.vocabulary.eos_id

      def generate(params, tokens):
        return decoding.generate(module, params, tokens, length, eos_id=eos)[0][:, 0, :]
      fn = p.partition(generate, in_shardings=(shard, p.batch_sharding),
                       out_shardings=p.batch_sharding)
    else:
      raise KeyError(name)
    self._compiled[name] = fn
    return fn

  def _device(self, **arrays):
    return self.partitioner.shard_batch(arrays, self.batch_size)

  def _record(self, index: int, **values) -> None:
    self.details.setdefault(index, {}).update(values)

  # Building blocks (also used by the benchmark).

  def search(self, tokens: np.ndarray, keys: list[int]):
    """Constrained top-K over the catalogue for a padded batch -> host BeamSearchOutput."""
    beam_search.check_inputs(tokens, vocab_size=None)
    excluded = None
    if self.config.exclude_history:
      rows = [np.unique(example_context(self.spec, k).visible[:-1]) for k in keys]
      width = _bucket(max(len(r) for r in rows))
      excluded = _pad_rows(rows, self.batch_size, -1, width)
      excluded = self._device(e=excluded)["e"]
    batch = self._device(t=tokens)
    out = self._fn("search")(self.params, batch["t"], self.trie_arrays, excluded)
    return _host(out)

  def score(self, tokens: np.ndarray, candidates: list[np.ndarray]):
    """Teacher-forced candidate log-likelihoods for a padded batch -> host CandidateScores."""
    cands = _pad_rows(candidates, self.batch_size, -1)
    cands[len(candidates):] = cands[0]
    scoring.check_candidates(cands, self.trie.num_items)
    batch = self._device(t=tokens, c=cands)
    return _host(self._fn("score")(self.params, batch["t"], batch["c"], self.item_tokens))

  def generate(self, tokens: np.ndarray) -> np.ndarray:
    """Greedy generation int32 [batch, generate_length]."""
    return np.asarray(self._fn("generate")(self.params, self._device(t=tokens)["t"]))

  # SeqIO callables.

  def predict_fn(self, dataset, model_feature_shapes=None):
    """retrieval: [(index, tokens [K, L])]; ranking / rating: [(index, greedy tokens [L])]."""
    del model_feature_shapes
    out = []
    for indices, tokens, keys, n in _fixed_batches(dataset, self.batch_size):
      if self.spec.kind == "retrieval":
        result = self.search(tokens, keys)
        for b in range(n):
          items = result.items[b]
          seqs = np.where(result.valid[b][:, None], self.item_tokens[np.maximum(items, 0)], 0)
          out.append((indices[b], seqs))
          self._record(indices[b], key=keys[b],
                       retrieved=[int(self.public_ids[i]) for i in items if i >= 0],
                       retrieved_log_probs=[float(s) for s, v in
                                            zip(result.log_probs[b], result.valid[b]) if v])
      else:
        generated = self.generate(tokens)
        for b in range(n):
          out.append((indices[b], generated[b]))
          self._record(indices[b], key=keys[b],
                       generated=self.spec.vocabulary.decode(generated[b].tolist()))
    return out

  def predict_with_aux_fn(self, dataset, model_feature_shapes=None):
    """ranking: likelihood ranking; rating: expected rating (see module docstring)."""
    del model_feature_shapes
    if self.spec.kind == "ranking":
      return self._rank(dataset)
    if self.spec.kind == "rating":
      return self._expected_rating(dataset)
    raise ValueError(f"task {self.spec.name!r} ({self.spec.kind}) has no predict_with_aux output")

  def score_fn(self, dataset, model_feature_shapes=None):
    """retrieval: [(index, float [1 + sampled_negatives] log-likelihoods, positive first)]."""
    del model_feature_shapes
    if self.spec.kind != "retrieval" or self.config.sampled_negatives < 1:
      raise ValueError(f"task {self.spec.name!r}: score_fn is the sampled-negatives protocol of "
                       "retrieval tasks (EvalConfig.sampled_negatives >= 1)")
    out = []
    for indices, tokens, keys, n in _fixed_batches(dataset, self.batch_size):
      cands = [sampled_candidates(self.spec, k, self.config.sampled_negatives,
                                  self.config.sampled_seed) for k in keys]
      scores = self.score(tokens, cands).scores
      for b in range(n):
        out.append((indices[b], scores[b]))
        rank = 1 + int(np.sum(scores[b][1:] >= scores[b][0]))
        self._record(indices[b], sampled_rank=rank)
    return out

  def _rank(self, dataset):
    preds, ranked_ids, ranked_scores = [], [], []
    for indices, tokens, keys, n in _fixed_batches(dataset, self.batch_size):
      cands = [ranking_candidates(self.spec, k, self.seed) for k in keys]
      result = self.score(tokens, cands)
      for b in range(n):
        items = result.ranked_items[b]
        ids = [int(self.public_ids[i]) for i in items if i >= 0]
        preds.append((indices[b], self.item_tokens[items[0]]))
        ranked_ids.append(np.asarray(ids, np.int64))
        ranked_scores.append(np.asarray(result.ranked_scores[b][:len(ids)], np.float32))
        self._record(indices[b], key=keys[b], ranked=ids,
                     ranked_log_probs=[float(s) for s in ranked_scores[-1]])
    return preds, {"ranked_ids": ranked_ids, "ranked_scores": ranked_scores}

  def _expected_rating(self, dataset):
    if self.spec.dataset.rating_scale is None:
      raise ValueError(f"task {self.spec.name!r}: dataset {self.spec.dataset.name!r} has no "
                       "rating scale")
    fn = self._fn("rating")
    table = self.rating.sequence_table()
    preds, expected, mass = [], [], []
    for indices, tokens, keys, n in _fixed_batches(dataset, self.batch_size):
      result = _host(fn(self.params, self._device(t=tokens)["t"]))
      for b in range(n):
        best = int(np.argmax(result.probs[b]))
        preds.append((indices[b], table[best]))
        expected.append(float(result.expected[b]))
        mass.append(float(result.mass[b]))
        self._record(indices[b], key=keys[b], expected_rating=expected[-1],
                     rating_probs=[float(x) for x in result.probs[b]], rating_mass=mass[-1])
    return preds, {"expected": expected, "mass": mass}


def _host(tree):
  return jax.tree_util.tree_map(np.asarray, jax.device_get(tree))
