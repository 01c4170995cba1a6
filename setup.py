"""Installable EgoT2: the shared core (egot2) and the two task halves (HHI, HOI)."""
from setuptools import find_packages, setup

setup(
    name="egot2",
    version="0.1.0",
    description="Egocentric Video Task Translation (EgoT2): task-specific models and task translators for Ego4D",
    license="CC BY-NC 4.0",
    python_requires=">=3.9",
    packages=find_packages(include=["egot2", "egot2.*", "HHI", "HHI.*", "HOI", "HOI.*"]),
    install_requires=[
        "torch>=2.4",
        "torchvision>=0.19",
        "pytorch-lightning>=2.4,<3",
        "torchmetrics>=1.0",
        "pytorchvideo>=0.1.5",
        "fvcore>=0.1.5",
        "yacs>=0.1.8",
        "numpy>=1.24",
        "scipy>=1.10",
        "scikit-learn>=1.1",
        "librosa>=0.10",
        "opencv-python-headless>=4.6",
        "av>=11",
        "soundfile>=0.12",
        "editdistance>=0.6",
        "tensorboard>=2.10",
        "matplotlib>=3.6",
        "tqdm>=4.60",
    ],
    extras_require={"test": ["pytest>=7", "pytest-timeout>=2"]},
)
