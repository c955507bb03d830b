"""Tests for rec_t5x.evaluation / evaluation_fns: the seqio.Evaluator wiring of the three tasks."""
import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

import seqio_tasks
from rec_t5x import evaluation
from rec_t5x import evaluation_fns
from rec_t5x import network
from rec_t5x import partitioning
from rec_t5x import prompts
from rec_t5x import vocabulary
from seqio_tasks import eval_fns
from tests.prompts import synthetic

NAME = "evalsynth"
CONFIG = prompts.SampleConfig(max_history=4, num_candidates=5)
SEQUENCES = [[(u * 7 + k * 3) % 40 for k in range(4 + u % 5)] for u in range(10)]
FAST_COMPILE = {"xla_backend_optimization_level": 0}
LENGTHS = {"inputs": 160, "targets": 8}
EVAL = evaluation.EvalConfig(top_k=5, beam_size=5, sampled_negatives=9,
                             batch_size=4, generate_length=4)


def _dataset():
  return synthetic.make_dataset(SEQUENCES, 48, seed=5, name=NAME)


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
  if NAME not in seqio_tasks.dataset_names():
    ds = _dataset()
    vocab = vocabulary.get_vocabulary(NAME, lambda: prompts.corpus(ds, CONFIG, 200), vocab_size=400,
                                      data_dir=str(tmp_path_factory.mktemp("vocab")))
    seqio_tasks.register_dataset(NAME, loader=_dataset, vocabulary=vocab)
    seqio_tasks.register_dataset_tasks(NAME, config=CONFIG)
  return seqio_tasks.load_dataset(NAME)


@functools.lru_cache(maxsize=None)
def _model(vocab_size=512, emb_dim=16):
  config = network.T5Config(vocab_size=vocab_size, emb_dim=emb_dim, num_heads=2, head_dim=8,
                            mlp_dim=32, num_encoder_layers=1, num_decoder_layers=1)
  module = network.Transformer(config)
  ones = jnp.ones((1, 3), jnp.int32)
  init = jax.jit(lambda rng: nn.unbox(module.init(rng, ones, ones, ones)["params"]),
                 compiler_options=FAST_COMPILE)
  return module, init(jax.random.PRNGKey(0))


@functools.lru_cache(maxsize=None)
def _partitioner():
  return partitioning.Partitioner(devices=jax.devices()[:1], compiler_options=FAST_COMPILE)


def _fns(task_names, split="test", config=EVAL):
  module, params = _model()
  p = _partitioner()
  shardings = jax.tree_util.tree_map(lambda _: p.replicated, params)
  return evaluation.build_task_fns(task_names, split, module, params, p, shardings, config)


@pytest.fixture(scope="module")
def results(registered, tmp_path_factory):
  del registered
  names = evaluation.decoding_tasks(f"rec_t5x.{NAME}.rec_all", "test")
  fns = _fns(names)
  evaluators = {}
  res = evaluation.evaluate_tasks(fns, LENGTHS, step=3, evaluators=evaluators)
  out = tmp_path_factory.mktemp("eval")
  evaluation.write_outputs(str(out), 3, res, fns, evaluators)
  return names, fns, res, out


def test_evaluator_end_to_end_produces_every_metric_key(results, registered):
  names, _, res, out = results
  assert sorted(n.rsplit(".", 1)[1] for n in names) == ["ranking", "rating", "retrieval"]
  users = len(registered.eval_users())
  retrieval = res[f"rec_t5x.{NAME}.retrieval"]
  assert "recall@10" not in retrieval  # beyond top_k=5
  for key in ("recall@5", "ndcg@5", "mrr", "invalid_rate", "sampled/hr@5",
              "sampled/ndcg@5", "sampled/mrr"):
    assert key in retrieval and np.isfinite(retrieval[key])
  ranking = res[f"rec_t5x.{NAME}.ranking"]
  for key in ("likelihood/hr@1", "likelihood/hr@5", "likelihood/ndcg@5", "hr@1", "invalid_rate"):
    assert key in ranking
  assert ranking["likelihood/hr@5"] == 1.0  # 5 candidates: the positive is always in the top 5
  rating = res[f"rec_t5x.{NAME}.rating"]
  for key in ("rmse", "mae", "clipped_rate", "expected/rmse", "expected/mae", "expected/mean_mass"):
    assert key in rating
  assert all(m["num_examples"] == users for m in res.values())
  saved = json.loads((out / "decode_metrics.json").read_text())
  assert saved["tasks"] == json.loads(json.dumps(res))
  lines = (out / "predictions" / f"rec_t5x.{NAME}.retrieval.jsonl").read_text().splitlines()
  first = json.loads(lines[0])
  assert len(lines) == users and {"inputs", "targets", "retrieved", "retrieved_log_probs"} <= set(first)
  assert "Recall@5" in evaluation.metrics_table(res)


def test_retrieval_returns_distinct_catalogue_items_outside_the_history(results, registered):
  _, fns, _, out = results
  ds = registered
  records = [json.loads(l) for l in
             (out / "predictions" / f"rec_t5x.{NAME}.retrieval.jsonl").read_text().splitlines()]
  catalogue = set(ds.item_public_ids.tolist())
  spec = fns[f"rec_t5x.{NAME}.retrieval"].spec
  for record in records:
    retrieved = record["retrieved"]
    assert len(retrieved) == len(set(retrieved)) == EVAL.top_k
    assert set(retrieved) <= catalogue
    history = evaluation_fns.example_context(spec, record["key"]).visible[:-1]
    assert not set(retrieved) & {int(ds.item_public_ids[i]) for i in history}
    assert record["retrieved_log_probs"] == sorted(record["retrieved_log_probs"], reverse=True)


def _teacher_forced(module, params, tokens, targets):
  inputs = jnp.concatenate([jnp.zeros_like(targets[:, :1]), targets[:, :-1]], axis=1)
  logits = module.apply({"params": params}, tokens, inputs, targets)
  lp = jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], axis=-1)[..., 0]
  return np.asarray(jnp.sum(jnp.where(targets > 0, lp, 0.0), axis=1))


def test_ranking_scores_equal_teacher_forced_log_likelihood(results, registered):
  _, fns, _, out = results
  task = fns[f"rec_t5x.{NAME}.ranking"]
  module, params = _model()
  records = [json.loads(l) for l in
             (out / "predictions" / f"rec_t5x.{NAME}.ranking.jsonl").read_text().splitlines()]
  vocab = task.spec.vocabulary
  for record in records[:3]:
    tokens = np.asarray(vocab.encode(record["inputs"]) + [vocab.eos_id], np.int32)[None]
    ids = record["ranked"]
    targets = np.stack([task.item_tokens[registered.item_index_of_public_id(i)] for i in ids])
    expected = _teacher_forced(module, params, np.repeat(tokens, len(ids), 0), targets)
    np.testing.assert_allclose(record["ranked_log_probs"], expected, rtol=1e-4, atol=1e-4)
    shown = evaluation_fns.ranking_candidates(task.spec, record["key"], CONFIG.seed)
    assert sorted(ids) == sorted(int(registered.item_public_ids[i]) for i in shown)


def test_likelihood_ranking_metric_agrees_with_hand_computation():
  # Target ranks: 2 (example 0), 1 (example 1), miss (example 2: not among the candidates).
  targets = ["7", "3", "9"]
  aux = {"ranked_ids": [np.array([5, 7, 1]), np.array([3, 5, 7]), np.array([1, 2, 4])]}
  out = eval_fns.LikelihoodRankingMetricFn(ks=(1, 2))(targets, [None] * 3, aux)
  assert out["likelihood/hr@1"] == pytest.approx(1 / 3)
  assert out["likelihood/hr@2"] == pytest.approx(2 / 3)
  assert out["likelihood/ndcg@2"] == pytest.approx((1 / np.log2(3) + 1.0) / 3)
  assert out["likelihood/mrr"] == pytest.approx((0.5 + 1.0) / 3)
  scores = [np.array([-1.0, -2.0, -0.5]), np.array([-0.1, -3.0, -0.1])]  # ranks 2 and 2 (tie)
  sampled = eval_fns.SampledRankingMetricFn(ks=(1, 2))(["1", "2"], scores)
  assert sampled["sampled/hr@1"] == 0.0 and sampled["sampled/hr@2"] == 1.0
  assert sampled["sampled/ndcg@2"] == pytest.approx(1 / np.log2(3))


def test_bad_inputs_have_clear_messages(registered):
  spec = evaluation.task_spec(f"rec_t5x.{NAME}.retrieval", "test")
  small, small_params = _model(vocab_size=64)
  with pytest.raises(ValueError, match=r"vocabulary has \d+ ids but the network has vocab_size=64"):
    evaluation.check_compatible(spec, small, small_params)
  module, _ = _model()
  _, other_params = _model(emb_dim=8)
  with pytest.raises(ValueError, match=r"embedding has shape \(512, 8\).*\(512, 16\)"):
    evaluation.check_compatible(spec, module, other_params)
  empty = synthetic.make_dataset([[]], 0, name="empty")
  with pytest.raises(ValueError, match="'empty' has an empty item catalogue"):
    evaluation_fns.build_catalogue_trie(evaluation_fns.TaskSpec(
        "t", "retrieval", "test", empty, CONFIG, spec.vocabulary))
  with pytest.raises(ValueError, match=r"candidate 1 has public ID 999, which is not an item"):
    evaluation_fns.candidate_indices(registered, [int(registered.item_public_ids[0]), 999],
                                     "example 4")
  lonely = synthetic.make_dataset([[1, 2, 3], [4]], 8, name="lonely")
  lonely_spec = evaluation_fns.TaskSpec("t", "retrieval", "train", lonely, CONFIG, spec.vocabulary)
  with pytest.raises(ValueError, match=r"user 1, whose training sequence has 1 items"):
    evaluation_fns.example_context(lonely_spec, 1 << 24)
  with pytest.raises(ValueError, match="top_k=6: expected <= beam_size=5"):
    evaluation.EvalConfig(top_k=6, beam_size=5)
  with pytest.raises(ValueError, match="no retrieval / ranking / rating task"):
    evaluation.build_task_fns([], "test", module, None, None, None, EVAL)


def test_trim_padding_keeps_every_token_and_a_bucketed_width():
  tokens = np.zeros((2, 1024), np.int32)
  tokens[0, :300] = 5
  tokens[1, :10] = 7
  trimmed = evaluation_fns.trim_padding(tokens)
  assert trimmed.shape == (2, 384)
  np.testing.assert_array_equal(trimmed, tokens[:, :384])
  assert evaluation_fns.trim_padding(np.ones((1, 100), np.int32)).shape == (1, 100)


def test_fixed_batches_group_prompts_by_length_and_keep_every_index():
  lengths = [5, 300, 40, 290, 10, 200, 7]
  tokens = np.zeros((len(lengths), 512), np.int32)
  for row, n in enumerate(lengths):
    tokens[row, :n] = row + 3
  ds = tf.data.Dataset.from_tensor_slices(
      {"encoder_input_tokens": tokens, "key": np.arange(len(lengths), dtype=np.int32) + 100})
  batches = list(evaluation_fns._fixed_batches(ds.enumerate(), 3))  # pylint: disable=protected-access
  assert [b[0] for b in batches] == [[1, 3, 5], [2, 4, 6], [0]]
  assert [b[1].shape for b in batches] == [(3, 384), (3, 128), (3, 128)]
  for indices, batch_tokens, keys, n in batches:
    assert keys == [i + 100 for i in indices] and n == len(indices)
    for row, index in enumerate(indices):
      np.testing.assert_array_equal(batch_tokens[row], tokens[index, :batch_tokens.shape[1]])


def test_ranking_and_rating_records_carry_the_greedy_generation(results):
  _, fns, res, out = results
  for kind in ("ranking", "rating"):
    task = fns[f"rec_t5x.{NAME}.{kind}"]
    vocab = task.spec.vocabulary
    records = [json.loads(l) for l in
               (out / "predictions" / f"rec_t5x.{NAME}.{kind}.jsonl").read_text().splitlines()]
    assert len(records) == res[f"rec_t5x.{NAME}.{kind}"]["num_examples"]
    assert all(isinstance(r["generated"], str) for r in records)
    for record in records[:2]:
      ids = vocab.encode(record["inputs"]) + [vocab.eos_id]
      tokens = np.zeros((task.batch_size, -(-len(ids) // 128) * 128), np.int32)
      tokens[:, :len(ids)] = ids  # the callables' fixed batch size, every row this prompt
      assert record["generated"] == vocab.decode(task.generate(tokens)[0].tolist())
