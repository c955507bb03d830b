"""Tests for rec_t5x.experiments.provenance: commit, uncommitted code changes, package versions."""
import shutil
import subprocess

import pytest

from rec_t5x.experiments import grid as grid_lib
from rec_t5x.experiments import provenance

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(root, *args):
  subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


@needs_git
def test_commit_and_only_code_changes_make_a_checkout_dirty(tmp_path):
  (tmp_path / "rec_t5x").mkdir()
  (tmp_path / "rec_t5x" / "model.py").write_text("x = 1\n")
  (tmp_path / "docs").mkdir()
  (tmp_path / "docs" / "results.md").write_text("# results\n")
  _git(tmp_path, "init", "-q")
  _git(tmp_path, "add", ".")
  _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
  head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], check=True,
                        capture_output=True, text=True).stdout.strip()
  info = provenance.code_info(tmp_path)
  assert info["commit"] == head and info["dirty"] is False
  assert info["training_revision"] == grid_lib.TRAINING_REVISION
  tree = info["code_tree"]
  assert len(tree) == 40
  # The driver writes the ledger and the report while runs go on: not a code change.
  (tmp_path / "docs" / "results.md").write_text("# results, regenerated\n")
  (tmp_path / "docs" / "new.md").write_text("new\n")
  assert provenance.code_info(tmp_path)["dirty"] is False
  (tmp_path / "rec_t5x" / "model.py").write_text("x = 2\n")
  assert provenance.code_info(tmp_path)["dirty"] is True
  _git(tmp_path, "checkout", "--", "rec_t5x/model.py")
  # A commit of docs alone moves HEAD but keeps the code tree; a commit of code changes it.
  _git(tmp_path, "add", "docs")
  _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "docs")
  docs_commit = provenance.code_info(tmp_path)
  assert docs_commit["commit"] != head and docs_commit["code_tree"] == tree
  assert provenance.same_code(provenance.revision_of(info), docs_commit)
  (tmp_path / "rec_t5x" / "model.py").write_text("x = 3\n")
  _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "code")
  code_commit = provenance.code_info(tmp_path)
  assert code_commit["code_tree"] != tree
  assert not provenance.same_code(provenance.revision_of(info), code_commit)
  (tmp_path / "gin").mkdir()
  (tmp_path / "gin" / "extra.gin").write_text("X = 1\n")  # untracked code counts too
  assert provenance.code_info(tmp_path)["dirty"] is True


def test_outside_a_checkout_commit_and_dirty_are_unknown(tmp_path):
  info = provenance.code_info(tmp_path)
  assert info["commit"] is None and info["dirty"] is None


def test_package_versions_name_installed_and_missing_distributions():
  versions = provenance.package_versions(("jax", "no-such-distribution-rec-t5x"))
  assert versions["jax"].count(".") >= 1
  assert versions["no-such-distribution-rec-t5x"] is None


def test_short_commit():
  assert provenance.short_commit({"code": {"commit": "0123456789abcdef", "dirty": False}}) == "0123456"
  assert provenance.short_commit({"code": {"commit": "0123456789abcdef", "dirty": True}}) == "0123456+"
  assert provenance.short_commit({}) == "–"
  assert provenance.short_commit({"code": {"commit": None, "dirty": None}}) == "–"
  # Without code trees (records from before they were kept) the commits are compared.
  same = {"commit": "0123456789abcdef", "dirty": False}
  assert provenance.short_commit({"code": {**same, "trained": [same]}}) == "0123456"
  assert provenance.short_commit({"code": {**same, "trained": [
      {"commit": "fedcba9876543210", "dirty": True}, same]}}) == "0123456 (trained fedcba9+, 0123456)"
  assert provenance.short_commit({"code": {**same, "trained": []}}) == "0123456"
  # Another commit with the same code tree (a docs or ledger commit in between) is the same code.
  written = {"commit": "0123456789abcdef", "dirty": False, "code_tree": "t1"}
  docs_only = {"commit": "89abcdef01234567", "dirty": False, "code_tree": "t1"}
  changed = {"commit": "fedcba9876543210", "dirty": False, "code_tree": "t0"}
  assert provenance.short_commit({"code": {**written, "trained": [docs_only]}}) == "0123456"
  assert provenance.short_commit({"code": {**written, "trained": [changed, docs_only]}}) == (
      "0123456 (trained fedcba9, 89abcde)")
