"""Tests for rec_t5x.experiments (the ablation driver); none of them trains a model."""
