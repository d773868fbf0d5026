from setuptools import find_packages, setup

setup(
    name="vidtwin",
    version="0.1.0",
    description="VidTwin: a video autoencoder with decoupled structure and dynamics latents",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["vidtwin", "vidtwin.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "torchvision>=0.19",
        "pytorch-lightning>=2.4",
        "omegaconf>=2.3",
        "transformers>=4.45",
        "timm>=1.0",
        "einops>=0.8",
        "av>=12",
        "lpips>=0.1.4",
        "safetensors>=0.4",
        "huggingface_hub>=0.24",
        "tensorboard>=2.15",
        "tqdm>=4.66",
        "numpy>=1.26",
        "scikit-video>=1.1.11",
        "matplotlib>=3.8",
        # finite scalar quantization for regularizer: fsq (tested with 1.32)
        "vector-quantize-pytorch>=1.20",
    ],
    extras_require={
        # decord is the fast reader; it has no wheels for every platform, so PyAV is the fallback.
        "decord": ["decord>=0.6"],
        "test": ["pytest>=8", "scikit-image>=0.22", "decord>=0.6"],
        "flash": ["flash-attn>=2.5"],
        "wandb": ["wandb"],
    },
)
