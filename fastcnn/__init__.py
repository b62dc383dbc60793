"""fastcnn: small convolutional networks trained fast on the CPU.

The kernels are the equations of Zhang's "Derivation of Backpropagation in
Convolutional Neural Network", in Cython and C with OpenMP; the layers,
model and training loop around them are plain Python. Start with:

    import fastcnn
    from fastcnn import callbacks, datasets
    x, y = datasets.load("fashion-mnist", "train")
    model = fastcnn.seed_cnn(seed=0)
    model.fit(x, y, epochs=1, batch_size=50, lr=1.0)
"""

from fastcnn import augment, callbacks, datasets, models, optim, recipes
from fastcnn._openmp import openmp_enabled
from fastcnn._simd import available_simd_paths, set_simd_path, simd_path
from fastcnn._threads import get_num_threads, set_num_threads
from fastcnn._version import __version__
from fastcnn.gradient_check import gradcheck
from fastcnn.io import load
from fastcnn.layers import (
    BatchNorm1D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    Layer,
    MaxPool2D,
    MeanPool2D,
    Normalize,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
)
from fastcnn.model import Sequential, seed_cnn
from fastcnn.optim import SGD, Adam, CosineLR, StepLR
from fastcnn.training import History


def build_info():
    """How this copy was compiled: compiler, flags, OpenMP requested and found."""
    try:
        from fastcnn._build_info import BUILD_INFO
    except ImportError:  # built by something other than setup.py
        BUILD_INFO = {}
    return dict(BUILD_INFO, openmp=openmp_enabled())


__all__ = [
    "BatchNorm1D",
    "BatchNorm2D",
    "Conv2D",
    "Dense",
    "Dropout",
    "Flatten",
    "History",
    "Layer",
    "MaxPool2D",
    "MeanPool2D",
    "Normalize",
    "ReLU",
    "Adam",
    "CosineLR",
    "SGD",
    "StepLR",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "__version__",
    "augment",
    "available_simd_paths",
    "build_info",
    "callbacks",
    "datasets",
    "get_num_threads",
    "gradcheck",
    "load",
    "models",
    "openmp_enabled",
    "optim",
    "recipes",
    "seed_cnn",
    "set_num_threads",
    "set_simd_path",
    "simd_path",
]
