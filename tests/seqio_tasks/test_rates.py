"""Mixing rates: defaults, validation, and gin bindings resolved lazily after import."""
import pathlib
import subprocess
import sys
import textwrap

import pytest

from seqio_tasks import rates

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_defaults_are_one_for_every_task():
  assert rates.mixing_rates() == {t: 1.0 for t in ("retrieval", "ranking", "rating", "mim", "mlm", "bpr")}


def test_invalid_rates_name_the_task():
  with pytest.raises(ValueError, match=r"seqio_tasks.mixing_rates.mim=-0.5: expected a finite number >= 0"):
    rates.mixing_rates(mim=-0.5)
  with pytest.raises(ValueError, match=r"mixing_rates.bpr='x'"):
    rates.mixing_rates(bpr="x")


def test_task_rate_validates_the_prompt_task():
  assert rates.TaskRate("ml1m", "bpr")() == 1.0
  with pytest.raises(ValueError, match="unknown prompt task 'bprr'"):
    rates.TaskRate("ml1m", "bprr")


_GIN_SCRIPT = textwrap.dedent("""
    import os, sys
    import gin  # the gin-config package: this runs outside the repository, whose gin/ shadows it
    sys.path.insert(0, sys.argv[1])
    os.environ["REC_T5X_DATA_DIR"] = sys.argv[2]
    import seqio, seqio_tasks
    mixture = seqio.get_mixture_or_task("rec_t5x.ml1m.rec_all")
    mim = seqio.get_mixture_or_task("rec_t5x.ml1m.mim")
    ml100k_mim = seqio.get_mixture_or_task("rec_t5x.ml100k.mim")
    before = mixture.get_rate(mim)
    gin.parse_config('''
    from __gin__ import dynamic_registration
    import seqio_tasks
    seqio_tasks.mixing_rates.mim = 0.25
    ml1m/seqio_tasks.mixing_rates.bpr = 3.0
    ''')
    bpr = seqio.get_mixture_or_task("rec_t5x.ml1m.bpr")
    ml100k = seqio.get_mixture_or_task("rec_t5x.ml100k.rec_all")
    print(before, mixture.get_rate(mim), mixture.get_rate(bpr),
          ml100k.get_rate(ml100k_mim), ml100k.get_rate(seqio.get_mixture_or_task("rec_t5x.ml100k.bpr")))
    print(sorted(os.listdir(sys.argv[2])))
""")


def test_gin_bindings_parsed_after_import_set_the_rates(tmp_path):
  result = subprocess.run([sys.executable, "-c", _GIN_SCRIPT, str(REPO_ROOT), str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.strip().splitlines()
  assert lines[-2].split() == ["1.0", "0.25", "3.0", "0.25", "1.0"]
  assert lines[-1] == "[]"  # importing seqio_tasks wrote nothing to the data dir
