"""Installs rec_t5x: T5X-style fine-tuning of FLAN-T5 on recommendation knowledge.

Numeric dependencies are pinned to the versions the test suite is run against
(see DEVELOPERS.md); `pip install -e .[test]` gives a working checkout.
"""
import setuptools

INSTALL_REQUIRES = [
    "jax[cpu]==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "seqio==0.0.20",
    "tensorflow==2.21.0",
    "tensorflow-text==2.21.1",
    "tensorflow-datasets==4.9.10",
    "gin-config==0.5.0",
    "clu==0.0.12",
    "tensorboard==2.21.0",  # clu's SummaryWriter backend
    "sentencepiece==0.2.3",
    "matplotlib==3.10.8",  # the ablation report's plots (rec_t5x/experiments/plots.py)
    "scipy",  # Welch t-tests in the ablation report (rec_t5x/experiments/aggregate.py)
    "tensorstore",
    "safetensors",
    "msgpack",
    "absl-py",
    "numpy",
]

EXTRAS = {
    "test": ["pytest", "pytest-xdist", "hypothesis"],
    # Side-by-side benchmarks against Hugging Face's PyTorch T5 (CPU build).
    "compare": ["torch==2.13.0", "transformers>=5,<6"],
}

setuptools.setup(
    name="rec_t5x",
    version="0.1.0",
    description="Teach FLAN-T5 recommendation knowledge with a T5X-style JAX/Flax trainer.",
    python_requires=">=3.11,<3.12",
    packages=setuptools.find_packages(include=["rec_t5x", "rec_t5x.*", "seqio_tasks", "seqio_tasks.*"]),
    package_data={"": ["*.gin"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": [
            "rec_t5x_fetch_data=rec_t5x.data.fetch:main",
            "rec_t5x_train=rec_t5x.train:console_main",
            "rec_t5x_eval=rec_t5x.eval:console_main",
            "rec_t5x_infer=rec_t5x.infer:console_main",
        ],
    },
)
