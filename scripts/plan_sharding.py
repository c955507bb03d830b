"""Bytes per device of a sharded training step, from our partitioning rules (nothing is allocated).

  python scripts/plan_sharding.py --model xl --mesh data=16,model=4 \
      --batch 128 --inputs 512 --targets 128 --dtype bfloat16 --device v4

`--model` names a file gin/models/t5_1_1_<model>.gin (tiny, small, base, large, xl, xxl; the
FLAN-T5 sizes), or pass `--gin_file` for another model file. The parameter tree comes from
`jax.eval_shape` of our network and the shardings from `rec_t5x.partitioning`'s rules; see
`rec_t5x.sharding_plan` for the activation estimate. Exits 1 when a warning was printed and
`--strict` is given (for CI checks of a planned run).
"""
import argparse
import dataclasses
import pathlib
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
MODELS = ("tiny", "small", "base", "large", "xl", "xxl")


def load_config(gin_file: str, vocab_size: int | None):
  """The T5Config a gin model file binds (NUM_EMBEDDINGS overridden when `vocab_size` is given)."""
  import gin  # pylint: disable=g-import-not-at-top
  from rec_t5x import network  # pylint: disable=g-import-not-at-top
  bindings = [f"NUM_EMBEDDINGS = {vocab_size}"] if vocab_size else []
  gin.clear_config()
  gin.parse_config_files_and_bindings([gin_file], bindings)
  return gin.get_configurable(network.Transformer)().config


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--model", choices=MODELS, help="FLAN-T5 / T5 v1.1 size")
  source.add_argument("--gin_file", help="a gin model file binding network.T5Config")
  parser.add_argument("--mesh", required=True, help="mesh sizes, e.g. data=16,model=4")
  parser.add_argument("--batch", type=int, default=128, help="global batch size")
  parser.add_argument("--inputs", type=int, default=512, help="encoder length")
  parser.add_argument("--targets", type=int, default=128, help="decoder length")
  parser.add_argument("--dtype", choices=("bfloat16", "float32"), default=None,
                      help="activation dtype (default: the model file's)")
  parser.add_argument("--vocab", type=int, default=None, help="override NUM_EMBEDDINGS")
  parser.add_argument("--parameter_partitioning_dims", type=int, choices=(1, 2), default=1)
  parser.add_argument("--num_microbatches", type=int, default=1)
  memory = parser.add_mutually_exclusive_group()
  memory.add_argument("--device", help="accelerator, to say whether it fits: one of "
                      "v4, v5e, v5p, v6e, a100-40gb, a100-80gb, h100-80gb, h200")
  memory.add_argument("--device_memory_gib", type=float, help="memory per device in GiB")
  parser.add_argument("--top", type=int, default=5, help="list this many largest parameters")
  parser.add_argument("--strict", action="store_true", help="exit 1 when there are warnings")
  return parser.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  from rec_t5x import sharding_plan  # pylint: disable=g-import-not-at-top  (after --help)
  try:
    mesh = sharding_plan.parse_mesh(args.mesh)
    memory = args.device_memory_gib
    if args.device is not None:
      if args.device not in sharding_plan.DEVICE_MEMORY_GIB:
        raise ValueError(f"--device={args.device!r}: expected one of "
                         f"{sorted(sharding_plan.DEVICE_MEMORY_GIB)} or --device_memory_gib")
      memory = sharding_plan.DEVICE_MEMORY_GIB[args.device]
    plan_config = sharding_plan.PlanConfig(  # validated before the (slower) gin parse
        batch_size=args.batch, inputs_length=args.inputs, targets_length=args.targets,
        dtype=args.dtype or "bfloat16",
        parameter_partitioning_dims=args.parameter_partitioning_dims,
        num_microbatches=args.num_microbatches)
    gin_file = args.gin_file or str(REPO_ROOT / "gin" / "models" / f"t5_1_1_{args.model}.gin")
    config = load_config(gin_file, args.vocab)
    plan_config = dataclasses.replace(plan_config, dtype=args.dtype or config.dtype)
  except ValueError as e:
    print(f"plan_sharding: {e}", file=sys.stderr)
    return 2
  result = sharding_plan.plan(config, mesh, plan_config)
  print(sharding_plan.format_plan(result, args.model or args.gin_file, memory))
  if args.top:
    print("largest parameters (per device):")
    for leaf in sorted(result.params, key=lambda p: -p.size)[:args.top]:
      axes = ",".join(str(a) for a in leaf.mesh_axes)
      print(f"  {leaf.path:45s} {str(leaf.shape):16s} mesh axes ({axes}) "
            f"{leaf.bytes_per_device / 2**20:9.1f} MiB")
  return 1 if args.strict and result.warnings else 0


if __name__ == "__main__":
  sys.exit(main())
