"""Two JAX processes on localhost (gloo, 2 CPU devices each) against one process.

One module-scoped run of `worker --scenario=full` (see worker.py) produces everything the tests
inspect; the one-process references run here, in the test process (8 simulated devices).

Tolerance for "equal to one process": the two-process step sums gradients with a gloo all-reduce
across processes instead of inside one XLA program, which can reorder float32 additions; losses must
agree to rtol 1e-5 and parameters after TOTAL_STEPS Adafactor steps to rtol 1e-5 / atol 1e-6 (the
trainer tests' tolerance for sharded vs one-device runs). Measured differences are far smaller.
"""
import json

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from rec_t5x import checkpoints
from rec_t5x import partitioning
from rec_t5x import trainer as trainer_lib
from tests.multihost import common
from tests.multihost import launch

pytestmark = pytest.mark.multiprocess

RTOL, ATOL = 1e-5, 1e-6
RUN_TIMEOUT_S = 420  # generous: two TensorFlow-importing processes on a shared 2-core machine


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """Results of the two-process run: {"dir", "procs": [process_0.json, process_1.json]}."""
  out = tmp_path_factory.mktemp("two_process_run")
  finished = launch.wait(launch.start(out, "full", 2), RUN_TIMEOUT_S)
  assert all(f.returncode == 0 for f in finished), launch.describe(finished)
  procs = [json.loads((out / f"process_{i}.json").read_text()) for i in range(2)]
  return {"dir": out, "procs": procs}


def _trainer(mesh_shape):
  devices = jax.devices()[:mesh_shape[0] * mesh_shape[1]]
  partitioner = partitioning.Partitioner(partitioning.MeshConfig(mesh_shape=mesh_shape),
                                         devices=devices, compiler_options=common.FAST)
  return trainer_lib.Trainer(common.model(), common.optimizer(), partitioner, common.SHAPES)


def _single_process_source(trainer):
  return common.SyntheticBatches(trainer.partitioner.data_layout(common.BATCH))


@pytest.fixture(scope="module")
def reference():
  """One process, same (2, 2) mesh and global batches: losses and final parameters."""
  trainer = _trainer(common.MESH)
  state = trainer.init_state(jax.random.PRNGKey(common.SEED))
  source = _single_process_source(trainer)
  losses = []
  for step in range(common.TOTAL_STEPS):
    state, metrics = trainer.train_step(state, source.local_batch(step))
    losses.append(float(metrics["loss"]))
  return {"trainer": trainer, "losses": losses, "params": jax.device_get(state.params)}


def _flat(tree):
  return {jax.tree_util.keystr(p, simple=True, separator="/"): np.asarray(v)
          for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _assert_params_close(actual: dict, expected: dict):
  assert sorted(actual) == sorted(expected)
  for name in expected:
    np.testing.assert_allclose(actual[name], expected[name], rtol=RTOL, atol=ATOL, err_msg=name)


def test_each_process_builds_and_feeds_only_its_rows(run):
  for index, proc in enumerate(run["procs"]):
    assert proc["info"]["process_count"] == 2 and proc["info"]["device_count"] == 4
    assert proc["layout"] == {"shard_id": index, "num_shards": 2, "batch_size_per_process": 4}
    assert proc["rows_built"] == common.TOTAL_STEPS * common.BATCH // 2
    for check in proc["batch_checks"]:
      assert check == {"global_shape": [common.BATCH, common.DEC_LEN], "local_rows": 4,
                       "fully_addressable": False, "local_rows_match": True}


def test_two_processes_train_like_one_process(run, reference):
  for proc in run["procs"]:
    np.testing.assert_allclose(proc["losses"], reference["losses"], rtol=RTOL)
  with np.load(run["dir"] / "final_params.npz") as saved:
    two_process = dict(saved)
  _assert_params_close(two_process, _flat(reference["params"]))


def test_two_process_restore_continues_with_same_losses(run):
  for index, proc in enumerate(run["procs"]):
    assert proc["resumed_input_state"] == {"next_step": common.SAVE_STEP, "shard_id": index}
    np.testing.assert_allclose(proc["resumed_losses"], proc["losses"][common.SAVE_STEP:], rtol=RTOL)


def _restore_train_state(directory, step, abstract_state):
  """The train_state item alone (the per-process input positions of 2 processes cannot be used)."""
  manager = ocp.CheckpointManager(directory, item_names=(checkpoints.STATE_ITEM,
                                                         checkpoints.INPUT_ITEM))
  restored = manager.restore(step, args=ocp.args.Composite(
      **{checkpoints.STATE_ITEM: ocp.args.StandardRestore(abstract_state)}))
  manager.close()
  return restored[checkpoints.STATE_ITEM]


def test_checkpoint_of_two_processes_restores_in_one_process_on_another_mesh(run, reference):
  trainer = _trainer(common.RESTORE_MESH)
  directory = run["dir"] / "ckpt"
  with checkpoints.CheckpointManager(directory, save_every=common.SAVE_STEP) as manager:
    assert manager.all_steps() == [common.SAVE_STEP]
    with pytest.raises(ValueError, match="saved by 2 processes but 1 are running"):
      manager.restore(trainer.abstract_state)
  state = _restore_train_state(directory, common.SAVE_STEP, trainer.abstract_state)
  assert int(state.step) == common.SAVE_STEP
  kernel = state.params["decoder"]["logits_dense"]["kernel"]
  assert kernel.sharding.mesh.shape == {"data": 2, "model": 4}
  # The synthetic source is a pure function of the step, so the data resumes at state.step.
  source = _single_process_source(trainer)
  losses = []
  for step in range(int(state.step), common.TOTAL_STEPS):
    state, metrics = trainer.train_step(state, source.local_batch(step))
    losses.append(float(metrics["loss"]))
  uninterrupted = run["procs"][0]["losses"][common.SAVE_STEP:]
  np.testing.assert_allclose(losses, uninterrupted, rtol=RTOL)
  _assert_params_close(_flat(jax.device_get(state.params)), _flat(reference["params"]))


def test_each_process_reads_only_its_seqio_shard(run):
  shards = []
  for index, proc in enumerate(run["procs"]):
    keys = proc["epoch_keys"]
    assert keys and all(k % 2 == index for k in keys), keys
    assert set(proc["rendered_keys"]) <= set(keys)  # nothing of the other shard was rendered
    shards.append(set(keys))
  assert not shards[0] & shards[1]
  assert shards[0] | shards[1] == set(range(common.NUM_EXAMPLES))


def test_input_iterator_resumes_exactly_from_a_two_process_checkpoint(run):
  for index, proc in enumerate(run["procs"]):
    assert proc["iterator_resume_exact"] is True
    assert all(k % 2 == index for k in proc["iterator_rows"])


def test_evaluation_gathers_every_example_once(run):
  for proc in run["procs"]:
    gathered = proc["gathered"]
    first, second = run["procs"][0]["epoch_keys"], run["procs"][1]["epoch_keys"]
    assert gathered["key"] == first + second  # process order, ragged (13 + 12 rows)
    assert gathered["hit"] == [k % 3 == 0 for k in gathered["key"]]
    assert gathered["score"] == [k / 7.0 for k in gathered["key"]]  # float64 kept exactly
    assert proc["sums"] == {"hits": float(sum(k % 3 == 0 for k in range(common.NUM_EXAMPLES))),
                            "examples": float(common.NUM_EXAMPLES)}


def test_gathered_model_scores_equal_one_process_scores(run, reference):
  trainer = reference["trainer"]
  params = jax.device_put(reference["params"], trainer.state_shardings.params)
  expected = np.asarray(trainer.score_batch(
      params, _single_process_source(trainer).local_batch(0)))
  for proc in run["procs"]:
    np.testing.assert_allclose(proc["scores_all"], expected, rtol=RTOL, atol=1e-5)


def test_cross_process_checks(run):
  for proc in run["procs"]:
    assert proc["mismatch_error"] == (
        "num_train_steps must be equal on all 2 processes but processes [1] differ from process 0 "
        "(process 0: 10; process 1: 11)")
  seeds = {proc["drawn_seed"] for proc in run["procs"]}
  assert len(seeds) == 1 and isinstance(seeds.pop(), int)
