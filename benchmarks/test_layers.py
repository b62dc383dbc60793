"""One layer of the recipe's kind alone, batch 128, float32: fastcnn's layer
(each convolution algorithm, on each SIMD path) next to PyTorch's.

  conv3x3_fwd, conv3x3_bwd   Conv2D(3x3, no bias, no activation, as in vgg_mini),
                             padding 1 ("same" at stride 1), stride 1 or 2;
                             bwd = the weight and the input gradients
  dense_fwd, dense_bwd       Dense(1568 -> 256) + ReLU, vgg_mini's FC layer;
                             bwd = weight, bias and input gradients

Groups are named op-shape-batch-dtype, e.g. conv3x3_bwd-16to32_14x14_s2-N128-float32;
the shapes (in maps, out maps, image size) run from the recipe's second
convolution (16 -> 32 maps of 14x14) to 64 maps. Both sides compute as
in training: fastcnn's forward_into and backward_into in arrays allocated
once (fit's workspace does the same), PyTorch's forward with autograd on
and its autograd backward of a graph kept from one forward call
(retain_graph), so that a backward round times the backward kernels alone.
"""

import numpy as np
import pytest
from conftest import on_every_simd_path, record

import fastcnn
from fastcnn._workspace import allocate, scratch_of

BATCH = 128
CONV_SHAPES = {"16to16_28x28": (16, 16, 28), "16to32_14x14": (16, 32, 14),
               "32to32_14x14": (32, 32, 14), "64to64_7x7": (64, 64, 7)}
ALGORITHMS = ["direct", "im2col", "fft"]
# ids "fastcnn-<simd path>:<algorithm>", then "torch"
CONV_IMPLS = [f"{impl}:{algorithm}" for impl in on_every_simd_path()
              for algorithm in ALGORITHMS] + ["torch"]


class FastcnnLayer:
    """A built layer with its input, output, gradients and scratch, allocated once."""

    def __init__(self, layer, input_shape, threads):
        rng = np.random.default_rng(0)
        layer.build(input_shape, "float32")
        layer.reset_parameters(rng)
        self.layer, self.threads = layer, threads
        self.x = rng.standard_normal((BATCH,) + input_shape).astype(np.float32)
        self.y = np.empty((BATCH,) + layer.output_shape, np.float32)
        self.grad = rng.standard_normal(self.y.shape).astype(np.float32)
        self.dx = np.empty_like(self.x)
        buffers = layer.scratch(BATCH, True, threads)
        self.s = scratch_of(allocate(buffers, BATCH, np.float32), buffers, BATCH, True)

    def forward(self):
        return self.layer.forward_into(self.x, self.y, self.s, self.threads)

    def backward(self):
        return self.layer.backward_into(self.x, self.y, self.grad, self.dx, self.s, self.threads)


class TorchLayer:
    """fn(x, *params) in PyTorch with inputs like FastcnnLayer's; backward
    runs autograd on the graph of one forward call."""

    def __init__(self, fn, x_shape, param_shapes):
        import torch

        self.torch, self.fn = torch, fn
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(x_shape, generator=gen, requires_grad=True)
        self.params = [torch.randn(s, generator=gen).mul_(0.1).requires_grad_() for s in param_shapes]
        self.out = None

    def forward(self):
        return self.fn(self.x, *self.params)

    def backward(self):
        if self.out is None:
            self.out = self.fn(self.x, *self.params)
            self.grad = self.torch.randn_like(self.out)
        return self.torch.autograd.grad(self.out, [self.x] + self.params, self.grad,
                                        retain_graph=True)


def conv_case(name, algorithm, shape, stride, threads):
    c, m, h = CONV_SHAPES[shape]
    if name == "torch":
        import torch.nn.functional as F

        return TorchLayer(lambda x, w: F.conv2d(x, w, stride=stride, padding=1),
                          (BATCH, c, h, h), [(m, c, 3, 3)])
    # "same" is for stride 1 only; padding 1 is the same thing there
    layer = fastcnn.Conv2D(c, m, 3, padding=1, stride=stride, bias=False, init="pytorch",
                           algorithm=algorithm, name="C")
    return FastcnnLayer(layer, (c, h, h), threads)


@pytest.mark.parametrize("impl", CONV_IMPLS)
@pytest.mark.parametrize("stride", [1, 2], ids=lambda s: f"s{s}")
@pytest.mark.parametrize("shape", list(CONV_SHAPES))
@pytest.mark.parametrize("op", ["fwd", "bwd"])
def test_conv3x3(benchmark, op, shape, stride, impl, simd, threads):
    name, kernels = simd
    algorithm = impl.partition(":")[2]
    case = conv_case(name, algorithm, shape, stride, threads)
    c, m, h = CONV_SHAPES[shape]
    oh = (h + 2 - 3) // stride + 1
    macs = BATCH * m * oh * oh * c * 9 * (1 if op == "fwd" else 2)
    benchmark.group = f"conv3x3_{op}-{shape}_s{stride}-N{BATCH}-float32"
    more = {"algorithm": algorithm} if algorithm else {}
    record(benchmark, name, threads, "float32", BATCH, macs, simd=kernels, **more)
    fn = case.forward if op == "fwd" else case.backward
    fn()  # builds the graph (PyTorch), fills the forward's scratch (fastcnn)
    benchmark(fn)


def dense_case(name, threads):
    if name == "torch":
        import torch.nn.functional as F

        return TorchLayer(lambda x, w, b: F.relu(F.linear(x, w, b)), (BATCH, 1568),
                          [(256, 1568), (256,)])
    layer = fastcnn.Dense(1568, 256, activation="relu", init="pytorch", name="FC")
    return FastcnnLayer(layer, (1568,), threads)


@pytest.mark.parametrize("impl", on_every_simd_path("torch"))
@pytest.mark.parametrize("op", ["fwd", "bwd"])
def test_dense(benchmark, op, impl, simd, threads):
    name, kernels = simd
    case = dense_case(name, threads)
    benchmark.group = f"dense_{op}-1568x256-N{BATCH}-float32"
    macs = BATCH * 1568 * 256 * (1 if op == "fwd" else 2)
    record(benchmark, name, threads, "float32", BATCH, macs, simd=kernels)
    fn = case.forward if op == "fwd" else case.backward
    fn()
    benchmark(fn)
