"""Suite-wide test set-up.

Eight simulated CPU devices are requested before JAX is imported anywhere, so partitioning tests can
build data x model meshes on this 2-core machine (correctness only; shapes stay tiny).
"""
import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_FIXTURES = REPO_ROOT.parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def shared_fixtures() -> pathlib.Path:
  """The T5X / Hugging Face checkpoints and reference outputs in ../shared/fixtures."""
  if not SHARED_FIXTURES.is_dir():
    pytest.fail(f"shared fixtures not found at {SHARED_FIXTURES}: the checkout must sit beside ../shared")
  return SHARED_FIXTURES
