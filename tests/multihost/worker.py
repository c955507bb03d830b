"""One process of a multi-process test run: `python -m tests.multihost.worker --scenario=...`.

Scenarios:
  full   train TOTAL_STEPS steps on synthetic process-local rows (checkpoint at SAVE_STEP, then a
         2-process restore that continues), read the tiny SeqIO task by shard and resume its
         iterator from a checkpoint, gather evaluation results, and check the cross-process checks.
  die    train; process 1 exits abruptly before step 2, so process 0 must fail with a clear error.
  lonely join a run whose other processes never start (the initialization watchdog must fire).

Results go to OUT_DIR/process_<i>.json (and process 0 writes OUT_DIR/final_params.npz).
"""
import argparse
import json
import os
import pathlib
import resource
import sys
import time

IMPORT_START = time.monotonic()

from rec_t5x import distributed  # noqa: E402  (after the clock starts)


def parse_args(argv):
  parser = argparse.ArgumentParser()
  parser.add_argument("--scenario", choices=("full", "die", "lonely"), required=True)
  parser.add_argument("--coordinator", required=True)
  parser.add_argument("--process_count", type=int, required=True)
  parser.add_argument("--process_index", type=int, required=True)
  parser.add_argument("--out_dir", required=True)
  parser.add_argument("--init_timeout", type=int, default=60)
  parser.add_argument("--heartbeat_timeout", type=int, default=10)
  return parser.parse_args(argv)


def flat_params(params):
  import jax  # pylint: disable=g-import-not-at-top
  return {jax.tree_util.keystr(p, simple=True, separator="/"): v
          for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}


def train(args, results, out_dir):
  """Synthetic training on a (2, 2) mesh; returns (trainer, partitioner, final state)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from rec_t5x import checkpoints  # pylint: disable=g-import-not-at-top
  from rec_t5x import partitioning  # pylint: disable=g-import-not-at-top
  from rec_t5x import trainer as trainer_lib  # pylint: disable=g-import-not-at-top
  from tests.multihost import common  # pylint: disable=g-import-not-at-top

  seed = distributed.broadcast_seed(common.SEED)
  partitioner = partitioning.Partitioner(partitioning.MeshConfig(mesh_shape=common.MESH),
                                         compiler_options=common.FAST)
  layout = partitioner.data_layout(common.BATCH)
  results["layout"] = {"shard_id": layout.shard_id, "num_shards": layout.num_shards,
                       "batch_size_per_process": layout.batch_size_per_process}
  results["mesh_processes"] = [[d.process_index for d in row] for row in partitioner.mesh.devices]
  trainer = trainer_lib.Trainer(common.model(), common.optimizer(), partitioner, common.SHAPES)
  state = trainer.init_state(jax.random.PRNGKey(seed))
  source = common.SyntheticBatches(layout)
  losses, batch_checks = [], []
  manager = (checkpoints.CheckpointManager(out_dir / "ckpt", save_every=common.SAVE_STEP)
             if args.scenario == "full" else None)
  for step in range(common.TOTAL_STEPS):
    if args.scenario == "die" and step == 2 and jax.process_index() == 1:
      print("worker 1: exiting abruptly before step 2", flush=True)
      os._exit(17)  # pylint: disable=protected-access
    local = source.local_batch(step)
    batch = partitioner.shard_batch(local, common.BATCH)
    array = batch["decoder_target_tokens"]
    batch_checks.append({
        "global_shape": list(array.shape),
        "local_rows": int(local["decoder_target_tokens"].shape[0]),
        "fully_addressable": bool(array.is_fully_addressable),
        "local_rows_match": bool(np.array_equal(distributed.process_local_rows(array),
                                                local["decoder_target_tokens"]))})
    state, metrics = trainer.train_step(state, batch)
    losses.append(float(metrics["loss"]))
    if manager is not None and step + 1 == common.SAVE_STEP:
      manager.save(int(state.step), state,
                   input_state={"next_step": step + 1, "shard_id": layout.shard_id})
  results.update(losses=losses, batch_checks=batch_checks, rows_built=source.rows_built)
  if manager is None:
    return trainer, partitioner, state
  manager.wait_until_finished()
  manager.close()
  # One replicating jit for the whole tree (process_allgather would compile once per leaf shape).
  replicate = partitioner.partition(lambda p: p, in_shardings=(trainer.state_shardings.params,),
                                    out_shardings=partitioner.replicated)
  full = jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), replicate(state.params))
  if jax.process_index() == 0:
    np.savez(out_dir / "final_params.npz", **flat_params(full))

  # Two processes restore the step-SAVE_STEP checkpoint and continue: same losses as uninterrupted.
  with checkpoints.CheckpointManager(out_dir / "ckpt", save_every=common.SAVE_STEP) as restorer:
    restored, input_state = restorer.restore(trainer.abstract_state, step=common.SAVE_STEP)
  resumed_losses = []
  for step in range(input_state["next_step"], common.TOTAL_STEPS):
    restored, metrics = trainer.train_step(
        restored, partitioner.shard_batch(source.local_batch(step), common.BATCH))
    resumed_losses.append(float(metrics["loss"]))
  results.update(resumed_input_state=input_state, resumed_losses=resumed_losses)
  return trainer, partitioner, state


def read_task(partitioner, results, out_dir):
  """Shard-wise reading of the tiny SeqIO task and an exact iterator resume through a checkpoint."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from rec_t5x import checkpoints  # pylint: disable=g-import-not-at-top
  from rec_t5x import input_pipeline  # pylint: disable=g-import-not-at-top
  from tests.multihost import common  # pylint: disable=g-import-not-at-top

  common.register_task()
  config = input_pipeline.DatasetConfig(common.TASK, common.TASK_LENGTHS, "validation",
                                        batch_size=common.BATCH, shuffle=False, pack=False)
  layout = partitioner.data_layout(common.BATCH)
  common.RENDERED_KEYS.clear()
  epoch = input_pipeline.task_dataset(config, layout, num_epochs=1)
  keys = [int(ex["inputs"][0]) - 2 for ex in epoch.as_numpy_iterator()]
  results["epoch_keys"] = keys
  results["rendered_keys"] = sorted(set(common.RENDERED_KEYS))

  train_config = input_pipeline.DatasetConfig(common.TASK, common.TASK_LENGTHS, "train",
                                              batch_size=common.BATCH, shuffle=True, seed=3,
                                              pack=False)
  iterator = input_pipeline.get_iterator(train_config, partitioner)
  for _ in range(2):
    iterator.next_local()
  position = iterator.get_state()
  expected = [iterator.next_local()["encoder_input_tokens"] for _ in range(3)]
  replicated = partitioner.replicated
  dummy = {"x": jax.make_array_from_callback((1,), replicated, lambda _: np.zeros([1], np.float32))}
  with checkpoints.CheckpointManager(out_dir / "ckpt_input", save_every=1,
                                     async_save=False) as manager:
    manager.save(2, dummy, input_state=position)
  fresh = input_pipeline.get_iterator(train_config, partitioner)
  with checkpoints.CheckpointManager(out_dir / "ckpt_input", save_every=1) as manager:
    _, restored = manager.restore(
        {"x": jax.ShapeDtypeStruct((1,), np.float32, sharding=replicated)})
  fresh.set_state(restored)
  got = [fresh.next_local()["encoder_input_tokens"] for _ in range(3)]
  results["iterator_resume_exact"] = all(np.array_equal(a, b) for a, b in zip(got, expected))
  results["iterator_rows"] = [int(r[0]) - 2 for b in expected for r in b]
  return keys


def evaluate(trainer, partitioner, state, keys, results):
  """Per-example results gathered over processes; metric sums added once."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tests.multihost import common  # pylint: disable=g-import-not-at-top

  local = {"key": np.asarray(keys, np.int64), "hit": np.asarray([k % 3 == 0 for k in keys]),
           "score": np.asarray(keys, np.float64) / 7.0}
  gathered = distributed.gather_rows(local)
  sums = distributed.sum_across_processes({"hits": local["hit"].sum(), "examples": len(keys)})
  results["gathered"] = {k: v.tolist() for k, v in gathered.items()}
  results["sums"] = {k: float(v) for k, v in sums.items()}

  layout = partitioner.data_layout(common.BATCH)
  source = common.SyntheticBatches(layout)
  scores = trainer.score_batch(state.params,
                               partitioner.shard_batch(source.local_batch(0), common.BATCH))
  results["scores_all"] = distributed.gather_rows(
      {"score": distributed.process_local_rows(scores)})["score"].tolist()


def cross_process_checks(results):
  """Mismatch message, drawn seed, and equal values passing."""
  import jax  # pylint: disable=g-import-not-at-top
  distributed.check_equal_across_processes({"lr": 0.1, "steps": [1, 2]}, "config")
  try:
    distributed.check_equal_across_processes(10 + jax.process_index(), "num_train_steps")
    results["mismatch_error"] = None
  except distributed.ProcessMismatchError as e:
    results["mismatch_error"] = str(e)
  results["drawn_seed"] = distributed.broadcast_seed(None)


def main(argv):
  args = parse_args(argv)
  out_dir = pathlib.Path(args.out_dir)
  start = time.monotonic()
  results = {"import_seconds": time.monotonic() - IMPORT_START}
  info = distributed.initialize(args.coordinator, args.process_count, args.process_index,
                                initialization_timeout=args.init_timeout,
                                heartbeat_timeout=args.heartbeat_timeout)
  results.update(info=info.__dict__, init_seconds=time.monotonic() - start)
  try:
    with distributed.peer_failures():
      trainer, partitioner, state = train(args, results, out_dir)
      results["train_seconds"] = time.monotonic() - start
      if args.scenario == "full":
        keys = read_task(partitioner, results, out_dir)
        results["input_seconds"] = time.monotonic() - start
        evaluate(trainer, partitioner, state, keys, results)
        cross_process_checks(results)
  except distributed.PeerProcessError as e:
    results["peer_error"] = str(e)
    results["seconds"] = time.monotonic() - start
    (out_dir / f"process_{args.process_index}.json").write_text(json.dumps(results))
    distributed.exit_after_peer_failure(e, exit_code=3)
  results["seconds"] = time.monotonic() - start
  usage = resource.getrusage(resource.RUSAGE_SELF)
  results["cpu_seconds"] = usage.ru_utime + usage.ru_stime
  (out_dir / f"process_{args.process_index}.json").write_text(json.dumps(results))


if __name__ == "__main__":
  main(sys.argv[1:])
