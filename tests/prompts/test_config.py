"""SampleConfig validation."""
import pytest

from rec_t5x.prompts import config as config_lib


def test_defaults_match_the_documented_values():
  config = config_lib.SampleConfig()
  assert config.max_history == 20
  assert config.num_candidates == 20
  assert config.mlm_noise_density == 0.15
  assert config.mlm_mean_span_length == 3.0
  assert config.eval_templates == "held_out"


@pytest.mark.parametrize("field,value,expected", [
    ("max_history", 0, r"max_history=0: expected an integer in \[1, 200\]"),
    ("max_history", 2.5, r"max_history=2.5"),
    ("num_candidates", 1, r"num_candidates=1: expected an integer in \[2, 1000\]"),
    ("mim_mask_rate", 0.0, r"mim_mask_rate=0.0: expected a number in \(0.0, 1.0\]"),
    ("mim_max_masks", 0, r"mim_max_masks=0"),
    ("mlm_noise_density", 1.0, r"mlm_noise_density=1.0: expected a number in \(0.0, 1.0\)"),
    ("mlm_mean_span_length", 0.5, r"mlm_mean_span_length=0.5"),
    ("bpr_positive_window", 0, r"bpr_positive_window=0"),
    ("max_train_samples_per_user", 0, r"max_train_samples_per_user=0"),
    ("eval_templates", "seen", r"eval_templates='seen': expected one of \('held_out', 'training'\)"),
    ("seed", -1, r"seed=-1"),
    ("max_history", True, r"max_history=True"),
])
def test_invalid_values_name_field_value_and_range(field, value, expected):
  with pytest.raises(ValueError, match=expected):
    config_lib.SampleConfig(**{field: value})


def test_config_is_frozen():
  config = config_lib.SampleConfig()
  with pytest.raises(AttributeError):
    config.max_history = 3


def test_check_split_names_task_and_allowed_splits():
  with pytest.raises(ValueError,
                     match=r"prompt task 'mim' has no split 'test'; expected one of \('train',\)"):
    config_lib.check_split("test", ("train",), "mim")
