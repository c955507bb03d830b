"""Dry runs of the TPU-pod and SLURM launch scripts print complete, correct commands.

"Correct" is checked by running what was printed: the local staging commands for real, the copy as
a file copy into a fake home directory, and the remote / batch shell commands under bash with stub
`curl` (the TPU metadata server), `scontrol`, `srun` and a stub Python that records its argument
list, so the flags rec_t5x.train would receive are compared exactly (quoting included).
"""
import json
import os
import pathlib
import shlex
import shutil
import stat
import subprocess
import sys
import tarfile

import pytest

pytestmark = pytest.mark.multiprocess

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
TPU_SCRIPT = REPO_ROOT / "scripts" / "launch_tpu_pod.sh"
SLURM_SCRIPT = REPO_ROOT / "scripts" / "launch_slurm_gpu.sh"
BINDINGS = ["--gin.MIXTURE_OR_TASK_NAME='rec_t5x.ml1m.rec_all'", "--gin.TRAIN_STEPS=20",
            "--gin.TASK_FEATURE_LENGTHS={'inputs': 512, 'targets': 128}"]


def _executable(path: pathlib.Path, text: str) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  path.chmod(path.stat().st_mode | stat.S_IEXEC)
  return path


def _recording_python(path: pathlib.Path) -> pathlib.Path:
  """A stand-in interpreter that appends its arguments (JSON, one line) to $ARGV_OUT."""
  return _executable(path, f"#!{sys.executable}\nimport json, os, sys\n"
                     "open(os.environ['ARGV_OUT'], 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")


def _dry_run(script, *args, cwd):
  result = subprocess.run(["bash", str(script), *args, "--dry-run"], cwd=cwd, capture_output=True,
                          text=True, timeout=60, check=False)
  assert result.returncode == 0, result.stderr
  return result.stdout.splitlines()


@pytest.mark.parametrize("endpoints,coordinator", [
    ("t1v-n-0-w-0:0:10.0.0.2,t1v-n-0-w-1:1:10.0.0.3,t1v-n-0-w-2:2:10.0.0.4,t1v-n-0-w-3:3:10.0.0.5",
     "10.0.0.2"),                                  # name:id:ip entries
    ("10.1.0.7,10.1.0.8,10.1.0.9,10.1.0.10", "10.1.0.7"),   # plain addresses
])
def test_tpu_pod_dry_run_commands_run_to_the_right_train_flags(tmp_path, endpoints, coordinator):
  custom = tmp_path / "my_experiment.gin"
  custom.write_text("TRAIN_STEPS = 10\n")
  tpu = f"test-pod-{os.getpid()}-{len(endpoints)}"
  lines = _dry_run(TPU_SCRIPT, f"--tpu={tpu}", "--zone=us-central2-b", "--project=proj",
                   "--model_dir=gs://bucket/run 1", "--gin_file=gin/models/t5_1_1_xl.gin",
                   f"--gin_file={custom}", *BINDINGS, "--fetch=ml1m,ml100k", cwd=tmp_path)
  commands = [shlex.split(line) for line in lines]
  assert [c[0] for c in commands] == ["rm", "mkdir", "cp", "cp", "tar"] + ["gcloud"] * 5
  home = tmp_path / "home"
  home.mkdir()
  try:
    for command in commands[:5]:   # local staging, for real
      subprocess.run(command, check=True, timeout=60)
    tarball = pathlib.Path(commands[4][2])
    with tarfile.open(tarball) as archive:
      names = set(archive.getnames())
    assert {"./rec_t5x/train.py", "./seqio_tasks/__init__.py", "./setup.py",
            "./gin/models/t5_1_1_xl.gin", "./gin/user/my_experiment.gin"} <= names
    scp, unpack, install, fetch, train = commands[5:]
    for command in commands[5:]:
      assert command[:3] == ["gcloud", "compute", "tpus"]
      assert "--worker=all" in command and "--zone=us-central2-b" in command
      assert "--project=proj" in command
    assert scp[3:5] == ["tpu-vm", "scp"] and scp[5] == str(tarball)
    assert scp[6] == f"{tpu}:~/rec_t5x_src.tgz"
    shutil.copy(tarball, home / "rec_t5x_src.tgz")
  finally:
    shutil.rmtree(f"/tmp/rec_t5x_launch_{tpu}", ignore_errors=True)
    pathlib.Path(f"/tmp/rec_t5x_src_{tpu}.tgz").unlink(missing_ok=True)

  def remote(command, **env):
    assert command[3:6] == ["tpu-vm", "ssh", tpu]
    (script,) = [c[len("--command="):] for c in command if c.startswith("--command=")]
    return script, subprocess.run(["bash", "-c", script], env={**os.environ, "HOME": str(home),
                                                                 **env},
                                  capture_output=True, text=True, timeout=60, check=False)

  _, result = remote(unpack)
  assert result.returncode == 0, result.stderr
  assert (home / "rec_t5x" / "rec_t5x" / "train.py").is_file()
  (install_script,) = [c for c in install if c.startswith("--command=")]
  for part in ("python3.11 -m venv .venv", ".venv/bin/pip install -q -e .",
               "'jax[tpu]==0.10.2'", "cd ~/rec_t5x"):
    assert part in install_script
  assert [c for c in fetch if c.startswith("--command=")] == [
      "--command=cd ~/rec_t5x && .venv/bin/python -m rec_t5x.data.fetch ml1m ml100k"]

  bin_dir = tmp_path / "bin"
  _executable(bin_dir / "curl", "#!/bin/bash\ncase \"${@: -1}\" in\n"
              "  */agent-worker-number) echo -n 3 ;;\n"
              "  */worker-network-endpoints) echo -n \"$FAKE_ENDPOINTS\" ;;\n"
              "  *) exit 22 ;;\nesac\n")
  _recording_python(home / "rec_t5x" / ".venv" / "bin" / "python")
  argv_out = tmp_path / "argv.jsonl"
  _, result = remote(train, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_ENDPOINTS=endpoints,
                     ARGV_OUT=str(argv_out))
  assert result.returncode == 0, result.stderr
  (argv,) = [json.loads(line) for line in argv_out.read_text().splitlines()]
  assert argv == ["-m", "rec_t5x.train", f"--coordinator_address={coordinator}:8476",
                  "--process_count=4", "--process_index=3", "--gin_file=gin/models/t5_1_1_xl.gin",
                  "--gin_file=gin/user/my_experiment.gin", "--gin.MODEL_DIR='gs://bucket/run 1'",
                  *BINDINGS]


def test_tpu_pod_refuses_missing_arguments(tmp_path):
  result = subprocess.run(["bash", str(TPU_SCRIPT), "--zone=z", "--model_dir=gs://b/r",
                           "--gin_file=gin/models/t5_1_1_xl.gin", "--dry-run"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
  assert result.returncode == 2 and "--tpu=NAME is required" in result.stderr
  result = subprocess.run(["bash", str(TPU_SCRIPT), "--tpu=t", "--zone=z", "--model_dir=gs://b/r",
                           "--gin_file=nowhere.gin", "--dry-run"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
  assert result.returncode == 2 and "--gin_file=nowhere.gin: not found" in result.stderr


def _slurm(tmp_path, *extra):
  venv = tmp_path / "venv"
  lines = _dry_run(SLURM_SCRIPT, "--nodes=2", "--gpus_per_node=8", "--partition=gpu",
                   "--account=acct", f"--venv={venv}", "--model_dir=/shared/run 1",
                   "--gin_file=gin/models/t5_1_1_xl.gin", *BINDINGS, "--install", *extra,
                   cwd=tmp_path)
  start = lines.index("# /shared/run 1/rec_t5x_train.sbatch:")
  end = lines.index("# end of /shared/run 1/rec_t5x_train.sbatch")
  return venv, lines[:start], lines[start + 1:end], lines[end + 1:]


def _run_batch_script(tmp_path, venv, script_lines, num_tasks):
  """Runs the sbatch script with stub scontrol / srun (num_tasks sequential tasks) and Python."""
  bin_dir = tmp_path / "bin"
  _executable(bin_dir / "scontrol", "#!/bin/bash\n[ \"$1 $2\" = 'show hostnames' ] || exit 1\n"
              "echo gpu-node-17; echo gpu-node-18\n")
  _executable(bin_dir / "srun", "#!/bin/bash\nwhile [[ \"$1\" == --* ]]; do shift; done\n"
              "for ((i = 0; i < FAKE_NTASKS; i++)); do SLURM_PROCID=$i \"$@\" || exit $?; done\n")
  _recording_python(venv / "bin" / "python")
  batch = tmp_path / "job.sbatch"
  batch.write_text("\n".join(script_lines) + "\n")
  argv_out = tmp_path / "argv.jsonl"
  result = subprocess.run(["bash", str(batch)], capture_output=True, text=True, timeout=60,
                          check=False, env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
                                            "SLURM_JOB_NODELIST": "gpu-node-[17-18]",
                                            "FAKE_NTASKS": str(num_tasks),
                                            "ARGV_OUT": str(argv_out)})
  assert result.returncode == 0, result.stderr
  return [json.loads(line) for line in argv_out.read_text().splitlines()]


def test_slurm_dry_run_one_process_per_node(tmp_path):
  venv, before, script, after = _slurm(tmp_path)
  assert [shlex.split(l) for l in before] == [
      ["python3.11", "-m", "venv", str(venv)],
      [f"{venv}/bin/pip", "install", "-q", "--upgrade", "pip"],
      [f"{venv}/bin/pip", "install", "-q", "-e", str(REPO_ROOT)],
      [f"{venv}/bin/pip", "install", "-q", "jax[cuda12]==0.10.2"],
      ["mkdir", "-p", "/shared/run 1"]]
  assert [shlex.split(l) for l in after] == [["sbatch", "/shared/run 1/rec_t5x_train.sbatch"]]
  directives = [l for l in script if l.startswith("#SBATCH")]
  assert directives == ["#SBATCH --job-name=rec_t5x", "#SBATCH --partition=gpu",
                        "#SBATCH --account=acct", "#SBATCH --nodes=2",
                        "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=8",
                        "#SBATCH --time=24:00:00", "#SBATCH --output=/shared/run 1/slurm-%j.out"]
  tasks = _run_batch_script(tmp_path, venv, script, num_tasks=2)
  common = ["-m", "rec_t5x.train", "--coordinator_address=gpu-node-17:8476", "--process_count=2",
            "--gin.MODEL_DIR='/shared/run 1'", "--gin_file=gin/models/t5_1_1_xl.gin", *BINDINGS]
  assert tasks == [common + ["--process_index=0"], common + ["--process_index=1"]]


def test_slurm_dry_run_one_process_per_gpu(tmp_path):
  venv, _, script, _ = _slurm(tmp_path, "--processes_per_node=gpus", "--time=02:00:00")
  assert "#SBATCH --ntasks-per-node=8" in script and "#SBATCH --gpus-per-task=1" in script
  assert "#SBATCH --time=02:00:00" in script
  tasks = _run_batch_script(tmp_path, venv, script, num_tasks=16)
  assert [t[3] for t in tasks] == ["--process_count=16"] * 16
  assert [t[-1] for t in tasks] == [f"--process_index={i}" for i in range(16)]


@pytest.mark.parametrize("args,message", [
    (["--gpus_per_node=8", "--partition=p", "--model_dir=/m", "--gin_file=a.gin"],
     "--nodes=N (N >= 1) is required"),
    (["--nodes=2", "--gpus_per_node=8", "--partition=p", "--model_dir=/m"],
     "at least one --gin_file is required"),
    (["--nodes=2", "--gpus_per_node=8", "--partition=p", "--model_dir=/m", "--gin_file=a.gin",
      "--processes_per_node=3"], "--processes_per_node='3': expected 1 or gpus"),
])
def test_slurm_refuses_bad_arguments(tmp_path, args, message):
  result = subprocess.run(["bash", str(SLURM_SCRIPT), *args, "--dry-run"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
  assert result.returncode == 2 and message in result.stderr
