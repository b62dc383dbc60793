"""Where each convolution algorithm wins: direct, im2col + GEMM, FFT.

One layer (in = out maps, sigmoid), forward plus the whole backward (weight
and input gradients), batch 16, float32, on the suite's threads, over image
size 28..128, kernel size 3..11, maps 1..64. Groups sweep-H{h}-K{k}-M{maps};
benchmarks/sweep_report.py turns a saved run into the crossover table, its
plot, and fastcnn/_crossover.py (what algorithm="auto" reads).

    pytest benchmarks/test_sweep.py --benchmark-only --benchmark-autosave
"""

import numpy as np
import pytest
from conftest import record

import fastcnn

SIZES = [28, 64, 128]
KERNELS = [3, 5, 7, 11]
MAPS = [1, 4, 16, 64]
BATCH = 16


@pytest.mark.parametrize("algorithm", ["direct", "im2col", "fft"])
@pytest.mark.parametrize("maps", MAPS, ids=lambda m: f"M{m}")
@pytest.mark.parametrize("k", KERNELS, ids=lambda k: f"K{k}")
@pytest.mark.parametrize("h", SIZES, ids=lambda h: f"H{h}")
def test_sweep(benchmark, h, k, maps, algorithm, threads):
    layer = fastcnn.Conv2D(maps, maps, k, activation="sigmoid", algorithm=algorithm)
    layer.build((maps, h, h), "float32")
    layer.reset_parameters(np.random.default_rng(0))
    x = np.random.default_rng(1).random((BATCH, maps, h, h)).astype(np.float32)
    grad = np.ones((BATCH,) + layer.output_shape, np.float32)

    def step():
        layer.forward(x)
        layer.backward(grad)

    step()
    benchmark.group = f"sweep-H{h}-K{k}-M{maps}"
    oh = h - k + 1
    record(benchmark, algorithm, threads, "float32", BATCH, 3 * BATCH * maps * maps * oh * oh * k * k)
    benchmark.extra_info.update(h=h, k=k, maps=maps)
    benchmark.pedantic(step, rounds=3, iterations=1)
