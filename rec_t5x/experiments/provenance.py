"""Where a run came from: the code revision and package versions written into its record.

A record names its machine (runner.machine_info); this module adds what the code was: the git
commit of the checkout, whether the files that decide training (rec_t5x/, seqio_tasks/, gin/,
scripts/, setup.py) had uncommitted changes, the training revision of `grid.TRAINING_REVISION`,
and the versions of the packages that decide the numbers. That is asked when the record is
written, after evaluation; the commit each train attempt started from is kept beside it
("trained"), since a checkout can move on during a run that takes hours. The report prints the commit next to
each run, so two runs with one key and different results can be told apart.

Git is asked through `git` itself (no library of ours would add anything); outside a checkout, or
without git, "commit" and "dirty" are None.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
import contextlib
import hashlib
import importlib.metadata
import os
import pathlib
import subprocess
from typing import Any

from rec_t5x.experiments import grid as grid_lib

# Paths whose uncommitted changes can change what a run trains or how it is evaluated.
CODE_PATHS = ("rec_t5x", "seqio_tasks", "gin", "scripts", "setup.py")
# Distributions whose versions decide the numbers.
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "seqio", "tensorflow",
            "tensorflow-text", "sentencepiece", "numpy")


def _git(args: Sequence[str], root: pathlib.Path) -> str | None:
  """stdout of `git -C root <args>`, or None when git or the checkout is missing."""
  with contextlib.suppress(OSError, subprocess.SubprocessError):
    done = subprocess.run(["git", "-C", os.fspath(root), *args], capture_output=True, text=True,
                          timeout=30, check=False)
    if done.returncode == 0:
      return done.stdout
  return None


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str | None]:
  """Installed version of each distribution (None when it is not installed)."""
  versions = {}
  for name in names:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  return versions


def code_info(root: str | os.PathLike = grid_lib.REPO_ROOT) -> dict[str, Any]:
  """{"commit", "dirty", "code_tree", "training_revision", "packages"} of the checkout at `root`.

  "dirty" is True when a file under `CODE_PATHS` differs from the commit (untracked files
  included); changes elsewhere, such as the ledger the driver is writing, do not count.
  "code_tree" identifies the committed content of `CODE_PATHS` alone (a SHA-1 of their
  `git ls-tree` entries), so two commits that differ only in docs or the ledger share it.
  """
  root = pathlib.Path(root)
  commit = _git(["rev-parse", "HEAD"], root)
  status = _git(["status", "--porcelain", "--", *CODE_PATHS], root) if commit else None
  tree = _git(["ls-tree", "HEAD", "--", *CODE_PATHS], root) if commit else None
  return {"commit": commit.strip() if commit else None,
          "dirty": bool(status.strip()) if status is not None else None,
          "code_tree": hashlib.sha1(tree.encode()).hexdigest() if tree is not None else None,
          "training_revision": grid_lib.TRAINING_REVISION,
          "packages": package_versions()}


def revision_of(code: Mapping[str, Any]) -> dict[str, Any]:
  """{"commit", "dirty", "code_tree"} of a `code_info` result: what a train attempt keeps."""
  return {"commit": code.get("commit"), "dirty": code.get("dirty"),
          "code_tree": code.get("code_tree")}


def same_code(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
  """Whether two revisions ran the same committed code: equal code trees where both have one
  (commits that differ only outside `CODE_PATHS` count as the same), else equal commits; and
  equal dirty flags (uncommitted changes themselves are not compared)."""
  if a.get("dirty") != b.get("dirty"):
    return False
  if a.get("code_tree") and b.get("code_tree"):
    return a["code_tree"] == b["code_tree"]
  return a.get("commit") == b.get("commit")


def _short(code: Mapping[str, Any]) -> str:
  if not code.get("commit"):
    return "–"
  return code["commit"][:7] + ("+" if code.get("dirty") else "")


def short_commit(record: Mapping[str, Any]) -> str:
  """'abc1234', 'abc1234+' (uncommitted code changes) or '–' (a record from before provenance);
  'abc1234 (trained 0f0f0f0, ...)', the commit of every train attempt, when one of them started
  from other code (`same_code`) than the checkout that evaluated the run and wrote its record."""
  code = record.get("code") or {}
  written = _short(code)
  trained = code.get("trained") or ()
  if all(same_code(revision, code) for revision in trained):
    return written
  shorts = list(dict.fromkeys(_short(revision) for revision in trained))
  return f"{written} (trained {', '.join(shorts)})"
