"""Layers of a convolutional network, as in Zhang's "Derivation of
Backpropagation in Convolutional Neural Network".

A layer holds what defines it: its hyperparameters, and its parameters and
their gradients (arrays allocated once and afterwards only modified in
place, so `model.params[name][...] = value` edits the model). What one call
computes on the way lives elsewhere, in arrays the caller provides:

  forward_into(x, out, s, threads)           the feedforward of section 1,
                                             into `out`; returns the output
  backward_into(x, y, grad, dx, s, threads)  given the forward's input x and
                                             output y and dL/d(output),
                                             writes dL/d(parameters) into
                                             `grads` (overwritten, not
                                             accumulated) and dL/d(input)
                                             into dx (unless None)

where `s` holds the scratch arrays that `scratch(rows, train, threads)`
asked for (fastcnn._workspace). A Sequential model keeps them in a workspace
per call, so threads can share one model.

For using a layer on its own, `forward(x)` and `backward(grad)` check their
input, allocate, and keep the last forward call on the layer for the
backward that follows (so one layer object is not for several threads at
once). Any real (bool, integer or floating) array of the right shape is
cast to the layer's dtype; complex, object and string arrays are refused
(TypeError), as are finite values that would overflow the dtype
(ValueError); NaN and inf propagate.

Arrays are NCHW: (N, C, H, W). Kernels are stored as in the paper: a
convolution is a true convolution, so a kernel is the 180-degree rotation of
the equivalent PyTorch Conv2d weight.
"""

import numpy as np

from fastcnn import _activation, _dense, _norm, _pool, _threads, conv_algorithms
from fastcnn._kernels import ACTIVATION_CODES
from fastcnn._validate import (
    INT_MAX,
    cast_real,
    check_bool,
    check_choice,
    check_dtype,
    check_fraction,
    check_int,
    check_positive_float,
    check_shape,
    check_size,
)
from fastcnn._workspace import allocate, per_sample, scratch_of, whole

# The kernels' activation codes, from src_c/fc_common.h's enum.
ACTIVATIONS = tuple(ACTIVATION_CODES)


def _check_activation(activation):
    if activation not in ACTIVATION_CODES:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    return activation


def _pair(value, name, minimum=1):
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        return check_size(value[0], name, minimum), check_size(value[1], name, minimum)
    v = check_size(value, name, minimum)
    return v, v


# How Conv2D and Dense draw their starting weights: the paper's eq. (1)-(3),
# uniform with bounds from fan-in plus fan-out and zero biases (Glorot and
# Bengio's), or PyTorch's default (kaiming_uniform with a = sqrt(5), which
# is uniform within 1 / sqrt(fan-in), for weights and biases alike).
INITS = ("paper", "pytorch")


def _initialise(layer, rng, fan_in, fan_out):
    if layer.init == "pytorch":
        bound = 1 / np.sqrt(fan_in)
        for p in layer.params.values():  # weight, then bias
            p[...] = rng.uniform(-bound, bound, p.shape)
        return
    bound = np.sqrt(6.0 / (fan_in + fan_out))
    layer.params["weight"][...] = rng.uniform(-bound, bound, layer.params["weight"].shape)
    if "bias" in layer.params:
        layer.params["bias"][...] = 0


class Layer:
    """Base class: a named step of a Sequential model."""

    #: whether forward_into writes into `out` (False: it returns a view of x)
    writes_output = True
    #: whether backward_into writes into `dx` (False: it returns a view of grad)
    writes_input_grad = True

    def __init__(self, name=None):
        if name is not None and (not isinstance(name, str) or not name or "." in name):
            raise ValueError(f"a layer name must be a non-empty string without '.', got {name!r}")
        self.name = name
        self.params = {}
        self.grads = {}
        self.buffers = {}  # state that is not trained: batch norm's running estimates, ...
        self.input_shape = None
        self.output_shape = None
        self.dtype = None
        self._last = None  # (x, y, scratch) of the last forward(), for backward()

    def build(self, input_shape, dtype):
        """Check the per-sample input shape (C, H, W) or (F,), allocate the
        parameters in `dtype` and return the per-sample output shape."""
        dtype = check_dtype(dtype)
        shape = check_shape(input_shape, f"{type(self).__name__} {self.name}: input_shape must "
                                         f"be a tuple of ints, (C, H, W) or (F,)")
        output_shape = tuple(self.compute_output_shape(shape))
        self.input_shape, self.output_shape, self.dtype = shape, output_shape, dtype
        for pname, shape in self.parameter_shapes().items():
            self.params[pname] = np.zeros(shape, dtype=self.dtype)
            self.grads[pname] = np.zeros(shape, dtype=self.dtype)
        for bname, (shape, bdtype) in self.buffer_shapes().items():
            self.buffers[bname] = np.zeros(shape, dtype=bdtype or self.dtype)
        return self.output_shape

    def unbuild(self, name):
        """Forget build(): back to an unbuilt layer called `name` (for a
        model whose construction failed, so that its layers can be reused)."""
        self.name, self.dtype, self.params, self.grads, self.buffers = name, None, {}, {}, {}
        self._last = None

    def parameter_shapes(self):
        """{parameter name: shape} of the layer's parameters (none by default)."""
        return {}

    def buffer_shapes(self):
        """{buffer name: (shape, dtype or None for the layer's)}: state kept
        between calls that is not trained (none by default). Buffers are
        saved with the model; training passes may change them, inference
        passes only read them."""
        return {}

    def compute_output_shape(self, input_shape):
        """The per-sample output shape for a per-sample input shape; raises
        ValueError if the layer cannot take that input."""
        return input_shape

    def reset_parameters(self, rng):
        """Initialise the parameters and buffers from a numpy Generator (no-op
        without any)."""

    def num_parameters(self):
        """Number of trainable scalars of this layer."""
        return sum(p.size for p in self.params.values())

    def get_config(self):
        """The constructor arguments, as JSON-compatible values (saved by `save`)."""
        return {"name": self.name}

    def scratch(self, rows, train, threads):
        """{name: fastcnn._workspace.Buffer}: the arrays a call on up to `rows`
        samples needs besides the output and input gradient (none by
        default); `train`: a backward pass follows."""
        return {}

    # ---------------------------------------------- the work, caller's arrays
    def forward_into(self, x, out, s, threads):
        """Compute the output for a checked x into `out` and return it."""
        raise NotImplementedError

    def backward_into(self, x, y, grad, dx, s, threads):
        """Fill `grads`; compute dL/d(input) into dx unless it is None; return dx."""
        raise NotImplementedError

    # -------------------------------------------- on its own, checked API
    def forward(self, x):
        """Output for input x (N,) + input_shape, as a new array (N,) + output_shape,
        computed as in training (a backward pass may follow)."""
        x = self._check_input(x)
        n, threads = x.shape[0], _threads.get_num_threads()
        buffers = self.scratch(n, True, threads)
        s = scratch_of(allocate(buffers, n, self.dtype), buffers, n, True)
        out = np.empty((n,) + self.output_shape, self.dtype) if self.writes_output else None
        y = self.forward_into(x, out, s, threads)
        self._last = (x, y, s, threads)
        return y

    def backward(self, grad, need_input_grad=True):
        """Given dL/d(output) of the last forward call, fill `grads` and return
        dL/d(input) as a new array (None when need_input_grad is false)."""
        grad = self._check_grad(grad)
        x, y, s, threads = self._last  # the same thread count as the forward pass
        n = x.shape[0]
        dx = None
        if need_input_grad and self.writes_input_grad:
            dx = np.empty((n,) + self.input_shape, self.dtype)
        out = self.backward_into(x, y, grad, dx, s, threads)
        return out if need_input_grad else None

    # ----------------------------------------------------------- checking
    def _check_input(self, x):
        """The layer's input as a C-contiguous array of its dtype, of shape (N,) + input_shape."""
        if self.dtype is None:
            raise RuntimeError(
                f"{type(self).__name__} {self.name} is not built: put it in a Sequential "
                f"model or call build(input_shape, dtype) first"
            )
        x = cast_real(x, self.dtype, f"{type(self).__name__} {self.name}: input")
        if x.shape[1:] != self.input_shape or x.shape[0] < 1:
            raise self._error(
                f"expects input of shape (N, {', '.join(map(str, self.input_shape))}) "
                f"with N >= 1, got {x.shape}"
            )
        return x

    def _check_grad(self, grad):
        """dL/d(output) for the batch of the last forward call."""
        if self._last is None:
            raise RuntimeError(f"{type(self).__name__} {self.name}: backward called before forward")
        grad = cast_real(grad, self.dtype, f"{type(self).__name__} {self.name}: gradient")
        expected = (self._last[0].shape[0],) + self.output_shape
        if grad.shape != expected:
            raise self._error(f"gradient has shape {grad.shape}, expected {expected}")
        return grad

    def _error(self, message):
        return ValueError(f"{type(self).__name__} {self.name}: {message}")

    def describe(self):
        """One line for summary(): the type and its hyperparameters."""
        return type(self).__name__

    def __repr__(self):
        args = ", ".join(f"{k}={tuple(v) if isinstance(v, list) else v!r}"
                         for k, v in self.get_config().items() if v is not None)
        return f"{type(self).__name__}({args})"


class Conv2D(Layer):
    """Convolution layer: eq. (4)-(5) (C1) and (7)-(8) (C2).

        C_q = f(sum_p a_p * k_pq + b_q)

    with `*` the 2-D true convolution and f the activation (sigma in the
    paper), fused into the convolution kernels.

    Parameters
    ----------
    in_maps, out_maps : int
        Input and output feature maps (p and q in the paper).
    kernel_size : int or (int, int)
        Kernel height and width (5 in the paper; any size works, 5x5 has a
        fast path).
    activation : None, "sigmoid", "relu", "tanh" or "tanh_opt"
        tanh_opt is DeepLearnToolbox's 1.7159 tanh(2x/3).
    stride : int
        Step between output positions (1 in the paper).
    padding : "valid", "same", int or (int, int)
        Zeros added around each input map: none (the paper), enough for the
        output to keep the input's size ("same", stride 1 only; an even
        kernel gets the extra row and column at the bottom and right, as in
        PyTorch), or that many on every side (rows, columns).
    algorithm : "auto", "direct", "im2col" or "fft"
        How the sums are computed (fastcnn.conv_algorithms): the direct
        kernels, a matrix product after im2col, or products of spectra. The
        results agree to rounding; "auto" picks by the layer's shape.
    name : str, optional
    bias : bool
        Whether the layer has the bias b_q (False before a batch norm,
        which has its own shift).

    Shape: input (N, in_maps, H, W), output (N, out_maps, OH, OW) with
    OH = (H + pads - kH) // stride + 1 (H - kH + 1 in the paper), OW alike.
    Parameters: weight (out_maps, in_maps, kH, kW), bias (out_maps,) unless bias=False.
    """

    def __init__(self, in_maps, out_maps, kernel_size, activation=None, algorithm="auto",
                 name=None, stride=1, padding="valid", bias=True, init="paper"):
        super().__init__(name)
        self.bias = check_bool(bias, "bias")
        self.init = check_choice(init, "init", INITS)
        self.in_maps = check_size(in_maps, "in_maps")
        self.out_maps = check_size(out_maps, "out_maps")
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.activation = _check_activation(activation)
        self.act = ACTIVATION_CODES[activation]
        self.stride = check_size(stride, "stride")
        self.padding = padding
        self._pads = self._padding_amounts(padding)
        if algorithm not in conv_algorithms.ALGORITHMS:
            raise ValueError(f"algorithm must be one of {conv_algorithms.ALGORITHMS}, "
                             f"got {algorithm!r}")
        self.algorithm = algorithm
        self._algorithm = None  # the conv_algorithms.Algorithm, chosen at build

    def _padding_amounts(self, padding):
        kh, kw = self.kernel_size
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if self.stride != 1:
                raise ValueError("padding='same' needs stride 1 (as in PyTorch); give the "
                                 "padding as a number for strided convolutions")
            return ((kh - 1) // 2, kh - 1 - (kh - 1) // 2, (kw - 1) // 2, kw - 1 - (kw - 1) // 2)
        if isinstance(padding, (tuple, list)):
            ph, pw = _pair(tuple(padding), "padding", minimum=0)
        elif isinstance(padding, str):
            raise ValueError(f"padding must be 'valid', 'same', an int or a pair, got {padding!r}")
        else:
            ph, pw = _pair(padding, "padding", minimum=0)
        return (ph, ph, pw, pw)

    def build(self, input_shape, dtype):
        shape = super().build(input_shape, dtype)
        c, h, w = self.input_shape
        top, bottom, left, right = self._pads
        kh, kw = self.kernel_size
        self.padded_shape = (c, h + top + bottom, w + left + right)
        self.conv_shape = conv_algorithms.ConvShape(c, self.out_maps, kh, kw, self.stride,
                                                    self.padded_shape[1], self.padded_shape[2],
                                                    self.dtype)
        # the valid, stride-1 convolution of the padded input, before any subsampling
        self.inner_shape = self.conv_shape.inner
        self._algorithm = conv_algorithms.get(self.algorithm, self.conv_shape)
        # a layer without bias adds zeros (exactly nothing) through the same kernels
        self._zero_bias = None if self.bias else np.zeros(self.out_maps, self.dtype)
        return shape

    @property
    def algorithm_used(self):
        """The algorithm that runs: `algorithm`, with "auto" resolved (None before build)."""
        return None if self._algorithm is None else self._algorithm.name

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise self._error(f"expects (maps, height, width) inputs, got shape {input_shape}")
        c, h, w = input_shape
        kh, kw = self.kernel_size
        top, bottom, left, right = self._pads
        if c != self.in_maps:
            raise self._error(f"expects {self.in_maps} input maps, got {c}")
        if h + top + bottom < kh or w + left + right < kw:
            raise self._error(f"input maps of {h}x{w} are smaller than the {kh}x{kw} kernel"
                              + (" even with the padding" if any(self._pads) else ""))
        if max(h + top + bottom, w + left + right) > INT_MAX:
            raise self._error(f"input maps of {h}x{w} with padding {self.padding!r} are larger "
                              f"than the kernels can index ({INT_MAX} rows or columns)")
        s = self.stride
        return (self.out_maps, (h + top + bottom - kh) // s + 1, (w + left + right - kw) // s + 1)

    def parameter_shapes(self):
        shapes = {"weight": (self.out_maps, self.in_maps) + self.kernel_size}
        if self.bias:
            shapes["bias"] = (self.out_maps,)
        return shapes

    def reset_parameters(self, rng):
        """eq. (1)-(2): k ~ U(+-sqrt(6 / ((in_maps + out_maps) kH kW))), b = 0; with
        init="pytorch", k and b ~ U(+-1 / sqrt(in_maps kH kW)) (PyTorch's default)."""
        kh, kw = self.kernel_size
        _initialise(self, rng, self.in_maps * kh * kw, self.out_maps * kh * kw)

    @property
    def _subsamples(self):
        # FFT computes every position and keeps each stride-th; direct and
        # im2col compute only those
        return self.stride > 1 and not self._algorithm.native_stride

    def scratch(self, rows, train, threads):
        need = dict(self._algorithm.scratch(self.conv_shape, self.act, rows, train, threads))
        if train and not self.bias:
            need["bias_grad"] = whole((self.out_maps,))  # computed, and not kept
        if any(self._pads):
            # the input inside a zero border that stays zero
            need["padded"] = per_sample(self.padded_shape, zero=True)
            if train:
                need["padded_grad"] = per_sample(self.padded_shape)
        if self._subsamples:
            need["inner"] = per_sample(self.inner_shape)
            if train:  # the skipped positions get zero gradient
                need["inner_grad"] = per_sample(self.inner_shape, zero=True)
        return need

    def forward_into(self, x, out, s, threads):
        """x (N, in_maps, H, W) -> C (N, out_maps, OH, OW), eq. (4)-(5), (7)-(8)."""
        bias = self.params["bias"] if self.bias else self._zero_bias
        return self._forward_with(x, out, s, threads, self.params["weight"], bias, self.act)

    def forward_folded_into(self, x, out, s, threads, norm, act):
        """Inference through this layer (no activation of its own), the
        BatchNorm2D `norm` that follows it and the activation code `act`, in
        one pass: at inference batch norm is an affine map per output map
        (Ioffe and Szegedy, "Batch Normalization", section 3.2), so it
        folds into the kernels and bias,

            k'_q = k_q g_q,   b'_q = (b_q - mean_q) g_q + beta_q,   g_q = gamma_q / sqrt(var_q + eps)

        and the activation runs in the convolution kernel. Equal to the three
        layers in turn up to rounding."""
        g = norm.params["weight"] / np.sqrt(norm.buffers["running_var"].astype(np.float64)
                                            + norm.eps)
        bias = self.params["bias"] if self.bias else 0
        folded_bias = ((bias - norm.buffers["running_mean"]) * g + norm.params["bias"])
        folded = self.params["weight"] * g[:, None, None, None]
        return self._forward_with(x, out, s, threads, folded.astype(self.dtype),
                                  folded_bias.astype(self.dtype), act)

    def _forward_with(self, x, out, s, threads, weight, bias, act):
        top, _, left, _ = self._pads
        xp = x
        if any(self._pads):
            xp = s.padded
            xp[:, :, top : top + x.shape[2], left : left + x.shape[3]] = x
        inner = s.inner if self._subsamples else out
        self._algorithm.forward(xp, weight, bias, act, self.stride, inner, s, threads)
        if self._subsamples:
            st = self.stride
            out[...] = inner[:, :, ::st, ::st][:, :, : out.shape[2], : out.shape[3]]
        return out

    def backward_into(self, x, y, grad, dx, s, threads):
        """grad = dL/dC -> grads["bias"] (eq. 45, 64), grads["weight"] (eq. 39-40,
        58-59), and dL/da into dx (eq. 49-51) unless dx is None (first layer)."""
        xp = s.padded if any(self._pads) else x
        inner, g = y, grad
        if self._subsamples:
            inner, g, st = s.inner, s.inner_grad, self.stride
            g[:, :, ::st, ::st][:, :, : grad.shape[2], : grad.shape[3]] = grad
        dxp = s.padded_grad if dx is not None and any(self._pads) else dx
        dbias = self.grads["bias"] if self.bias else s.bias_grad
        self._algorithm.backward(xp, self.params["weight"], inner, g, self.act, self.stride,
                                 self.grads["weight"], dbias, dxp, s, threads)
        if dxp is not dx:
            top, _, left, _ = self._pads
            dx[...] = dxp[:, :, top : top + dx.shape[2], left : left + dx.shape[3]]
        return dx

    def describe(self):
        kh, kw = self.kernel_size
        extra = [self.activation] if self.activation else []
        if self.stride != 1:
            extra.append(f"stride {self.stride}")
        if self.padding != "valid":
            extra.append(f"padding {self.padding}")
        if not self.bias:
            extra.append("no bias")
        algo = self.algorithm_used or self.algorithm
        how = f"{self.algorithm}: {algo}" if self.algorithm == "auto" else algo
        return f"Conv2D {self.in_maps}->{self.out_maps}, {kh}x{kw}" + \
            "".join(", " + e for e in extra) + f" ({how})"

    def get_config(self):
        padding = list(self.padding) if isinstance(self.padding, tuple) else self.padding
        config = {"in_maps": self.in_maps, "out_maps": self.out_maps,
                  "kernel_size": list(self.kernel_size), "activation": self.activation,
                  "algorithm": self.algorithm, "name": self.name}
        if self.stride != 1:
            config["stride"] = self.stride
        if self.padding != "valid":
            config["padding"] = padding
        if not self.bias:
            config["bias"] = False
        if self.init != "paper":
            config["init"] = self.init
        return config


class MeanPool2D(Layer):
    """Mean pooling over scale x scale blocks: eq. (6) (S1) and (9) (S2).

        S(i, j) = 1/s^2 sum_{u,v < s} C(s i + u, s j + v)

    Backward is the upsampling of eq. (32), (52): each input of a block gets
    1/s^2 of the block's gradient. Rows or columns beyond the last whole
    block are dropped (as PyTorch's AvgPool2d does) and get zero gradient.

    Shape: input (N, C, H, W), output (N, C, H // s, W // s).
    """

    def __init__(self, scale=2, name=None):
        super().__init__(name)
        # the kernels scale by 1 / (s * s), s * s in a C int
        self.scale = check_int(scale, "scale", maximum=46340)

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise self._error(f"expects (maps, height, width) inputs, got shape {input_shape}")
        c, h, w = input_shape
        if h < self.scale or w < self.scale:
            raise self._error(f"input maps of {h}x{w} are smaller than the pooling scale {self.scale}")
        return (c, h // self.scale, w // self.scale)

    def forward_into(self, x, out, s, threads):
        """eq. (6), (9)."""
        _pool.mean_pool(x, self.scale, out, threads)
        return out

    def backward_into(self, x, y, grad, dx, s, threads):
        """eq. (32), (52)."""
        if dx is not None:
            _pool.mean_upsample(grad, self.scale, dx, threads)
        return dx

    def describe(self):
        return f"MeanPool2D {self.scale}x{self.scale}"

    def get_config(self):
        return {"scale": self.scale, "name": self.name}


class MaxPool2D(Layer):
    """Max pooling: S(i, j) = max_{u,v < size} C(stride i + u, stride j + v).

    Backward sends each window's gradient to the pixel that held its maximum
    (the first in scan order if several tie), adding where windows overlap.

    Parameters
    ----------
    size : int
        Window height and width.
    stride : int, optional
        Step between windows (default: size, windows side by side).

    Shape: input (N, C, H, W), output (N, C, (H - size) // stride + 1, (W - size) // stride + 1).
    """

    def __init__(self, size=2, stride=None, name=None):
        super().__init__(name)
        self.size = check_size(size, "size")
        self.stride = self.size if stride is None else check_size(stride, "stride")

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise self._error(f"expects (maps, height, width) inputs, got shape {input_shape}")
        c, h, w = input_shape
        if h < self.size or w < self.size:
            raise self._error(f"input maps of {h}x{w} are smaller than the {self.size}x{self.size} window")
        if h * w > INT_MAX:
            raise self._error(f"input maps of {h}x{w} have more pixels than the argmax of max "
                              f"pooling (an int32) can index: at most {INT_MAX}")
        s = self.stride
        return (c, (h - self.size) // s + 1, (w - self.size) // s + 1)

    def scratch(self, rows, train, threads):
        # where each window's maximum was, as a flat index into its (H, W) map
        return {"argmax": per_sample(self.output_shape, np.intc)}

    def forward_into(self, x, out, s, threads):
        """The maximum of each window, and where it was."""
        _pool.max_pool(x, self.size, self.stride, out, s.argmax, threads)
        return out

    def backward_into(self, x, y, grad, dx, s, threads):
        """Each window's gradient to its maximum's pixel."""
        if dx is not None:
            _pool.max_unpool(grad, s.argmax, dx, threads)
        return dx

    def describe(self):
        s = "" if self.stride == self.size else f", stride {self.stride}"
        return f"MaxPool2D {self.size}x{self.size}{s}"

    def get_config(self):
        return {"size": self.size, "stride": self.stride, "name": self.name}


class Activation(Layer):
    """An element-wise activation as a layer of its own (Conv2D and Dense
    fuse theirs with activation=...). Any input shape."""

    function = None

    def forward_into(self, x, out, s, threads):
        """y = f(z), element by element."""
        _activation.activation_forward(x.reshape(-1), out.reshape(-1),
                                       ACTIVATION_CODES[self.function], threads)
        return out

    def backward_into(self, x, y, grad, dx, s, threads):
        """dz = dy f'(z), f' written with the output y."""
        if dx is not None:
            _activation.activation_backward(y.reshape(-1), grad.reshape(-1), dx.reshape(-1),
                                            ACTIVATION_CODES[self.function], threads)
        return dx


class Sigmoid(Activation):
    """sigma(z) = 1 / (1 + exp(-z)), eq. (4); backward dz = dy * y (1 - y), eq. (37)."""

    function = "sigmoid"


class ReLU(Activation):
    """max(0, z); backward dz = dy where z > 0, else 0 (NaN stays NaN)."""

    function = "relu"


class Tanh(Activation):
    """tanh(z); backward dz = dy (1 - y^2).

    scaled=True gives DeepLearnToolbox's tanh_opt, 1.7159 tanh(2z/3)
    (LeCun et al., "Efficient BackProp": unit variance for unit inputs)."""

    function = "tanh"

    def __init__(self, scaled=False, name=None):
        super().__init__(name)
        if not isinstance(scaled, bool):
            raise TypeError(f"scaled must be True or False, got {scaled!r}")
        self.scaled = scaled
        self.function = "tanh_opt" if scaled else "tanh"

    def get_config(self):
        return {"scaled": self.scaled, "name": self.name}


class Softmax(Layer):
    """softmax(z)_k = exp(z_k) / sum_j exp(z_j) over the features of each
    sample; backward dz = y (dy - sum(dy y)).

    Shape: input and output (N, F). To train a classifier with softmax,
    prefer loss="cross_entropy" on a last layer without activation: the
    loss then applies the softmax itself, fused and numerically stable, and
    this layer is not needed.
    """

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 1:
            raise self._error(f"expects (features,) inputs, got shape {input_shape} "
                              f"(add a Flatten layer before it)")
        return input_shape

    def forward_into(self, x, out, s, threads):
        """The softmax of each row."""
        _activation.softmax_forward(x, out, threads)
        return out

    def backward_into(self, x, y, grad, dx, s, threads):
        """dz = y (dy - sum(dy y)), row by row."""
        if dx is not None:
            _activation.softmax_backward(y, grad, dx, threads)
        return dx


class Flatten(Layer):
    """f = F({S_q}), eq. (10), and its inverse F^-1, eq. (11) and (31).

    C order: (N, C, H, W) -> (N, C*H*W). The paper scans each map by column;
    that order differs from this one only by a fixed permutation of W's
    columns, so it changes nothing that is learned.
    """

    writes_output = False
    writes_input_grad = False

    def compute_output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)

    def forward_into(self, x, out, s, threads):
        """F: the maps as one row per sample (a view)."""
        return x.reshape(x.shape[0], -1)

    def backward_into(self, x, y, grad, dx, s, threads):
        """F^-1: the row back into maps (a view)."""
        return grad.reshape((grad.shape[0],) + self.input_shape)

    # the public methods return new arrays, like the other layers, not views
    def forward(self, x):
        return super().forward(x).copy()

    def backward(self, grad, need_input_grad=True):
        dx = super().backward(grad, need_input_grad)
        return None if dx is None else dx.copy()


class Dense(Layer):
    """Fully connected layer, eq. (12): yhat = f(W f + b), f the activation
    (sigma in the paper; None, "sigmoid", "relu", "tanh" or "tanh_opt").
    Dense layers stack.

    Backward, with delta = dL/dyhat * f' (yhat (1 - yhat) for sigma, eq. 17, 23):
        dW = delta^T f      eq. (19), summed over the batch
        db = sum delta      eq. (24)
        df = delta W        eq. (30)

    Shape: input (N, in_features), output (N, out_features).
    Parameters: weight (out_features, in_features) as W in eq. (12), bias (out_features,).
    """

    def __init__(self, in_features, out_features, activation=None, name=None, init="paper"):
        super().__init__(name)
        self.init = check_choice(init, "init", INITS)
        self.in_features = check_size(in_features, "in_features")
        self.out_features = check_size(out_features, "out_features")
        self.activation = _check_activation(activation)

    def compute_output_shape(self, input_shape):
        if tuple(input_shape) != (self.in_features,):
            raise self._error(
                f"expects {self.in_features} input features, got inputs of shape {input_shape}"
                + (" (add a Flatten layer before it)" if len(input_shape) > 1 else "")
            )
        return (self.out_features,)

    def parameter_shapes(self):
        return {"weight": (self.out_features, self.in_features), "bias": (self.out_features,)}

    def reset_parameters(self, rng):
        """eq. (3): W ~ U(+-sqrt(6 / (in_features + out_features))), b = 0; with
        init="pytorch", W and b ~ U(+-1 / sqrt(in_features)) (PyTorch's default)."""
        _initialise(self, rng, self.in_features, self.out_features)

    def scratch(self, rows, train, threads):
        return {"delta": per_sample((self.out_features,))} if train else {}

    def forward_into(self, f, out, s, threads):
        """eq. (12)."""
        _dense.dense_forward(f, self.params["weight"], self.params["bias"], out,
                             ACTIVATION_CODES[self.activation], threads)
        return out

    def backward_into(self, f, y, grad, dx, s, threads):
        """eq. (17)-(30)."""
        _dense.dense_backward(f, self.params["weight"], y, grad,
                              ACTIVATION_CODES[self.activation], self.grads["weight"],
                              self.grads["bias"], dx, s.delta, threads)
        return dx

    def describe(self):
        act = f", {self.activation}" if self.activation else ""
        return f"Dense {self.in_features}->{self.out_features}{act}"

    def get_config(self):
        config = {"in_features": self.in_features, "out_features": self.out_features,
                  "activation": self.activation, "name": self.name}
        if self.init != "paper":
            config["init"] = self.init
        return config


class _BatchNorm(Layer):
    """Batch normalisation (Ioffe and Szegedy, 2015), PyTorch's semantics.

    Training (fit, backprop): each map is normalised by the batch's own mean
    and biased variance, y = weight (x - mean) / sqrt(var + eps) + bias, and
    the running estimates move towards them:
        running_mean = (1 - momentum) running_mean + momentum mean
        running_var  = (1 - momentum) running_var  + momentum var M / (M - 1)
    (the unbiased variance, M values per map). Inference (forward, predict,
    evaluate): the running estimates stand in for the batch's statistics.
    The statistics are summed in sample order by one thread per map: the
    same bits for every thread count.

    Parameters: weight (maps,) = 1 and bias (maps,) = 0 at the start.
    Buffers: running_mean (maps,) = 0 and running_var (maps,) = 1 at the
    start; saved with the model, not trained.
    """

    def __init__(self, maps, momentum=0.1, eps=1e-5, name=None):
        super().__init__(name)
        self.maps = check_size(maps, "maps")
        self.momentum = check_fraction(momentum, "momentum")
        self.eps = check_positive_float(eps, "eps")

    def parameter_shapes(self):
        return {"weight": (self.maps,), "bias": (self.maps,)}

    def buffer_shapes(self):
        return {"running_mean": ((self.maps,), None), "running_var": ((self.maps,), None)}

    def build(self, input_shape, dtype):
        shape = super().build(input_shape, dtype)
        self.reset_parameters(None)  # its start takes no random numbers
        return shape

    def reset_parameters(self, rng):
        """weight 1, bias 0; running mean 0, running variance 1 (as PyTorch)."""
        self.params["weight"][...] = 1
        self.params["bias"][...] = 0
        self.buffers["running_mean"][...] = 0
        self.buffers["running_var"][...] = 1

    def scratch(self, rows, train, threads):
        # the batch's statistics, kept from the forward pass for the backward one
        if not train:
            return {}
        return {name: whole((self.maps,), np.float64) for name in ("mean", "var", "invstd")}

    def _maps(self, a):
        """a (N,) + input_shape as (N, maps, positions)."""
        return a.reshape(a.shape[0], self.maps, -1)

    def forward_into(self, x, out, s, threads):
        """Normalise by the batch's statistics (training) or the running estimates."""
        w, b = self.params["weight"], self.params["bias"]
        rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
        if not s.train:
            _norm.batchnorm_eval(self._maps(x), w, b, rm, rv, self.eps, self._maps(out), threads)
            return out
        m = x.size // self.maps  # values per map
        if m < 2:
            raise self._error(f"needs more than one value per map to train (a batch of "
                              f"{x.shape[0]} with {m // x.shape[0]} per sample)")
        _norm.batchnorm_train(self._maps(x), w, b, self.eps, self._maps(out), s.mean, s.var,
                              s.invstd, threads)
        rm *= 1 - self.momentum
        rm += self.momentum * s.mean
        rv *= 1 - self.momentum
        rv += self.momentum * s.var * (m / (m - 1))
        return out

    def backward_into(self, x, y, grad, dx, s, threads):
        """dweight = sum dy xhat, dbias = sum dy, dx = w invstd (dy - mean dy - xhat mean(dy xhat))."""
        _norm.batchnorm_backward(self._maps(x), self._maps(grad), s.mean, s.invstd,
                                 self.params["weight"], self.grads["weight"], self.grads["bias"],
                                 None if dx is None else self._maps(dx), threads)
        return dx

    def get_config(self):
        config = {"maps": self.maps, "name": self.name}
        if self.momentum != 0.1:
            config["momentum"] = self.momentum
        if self.eps != 1e-5:
            config["eps"] = self.eps
        return config


class BatchNorm2D(_BatchNorm):
    """Batch normalisation of each map of (N, maps, H, W) over the batch and
    its positions (torch.nn.BatchNorm2d). See _BatchNorm for the rules.

    Shape: input and output (N, maps, H, W).
    """

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 3 or input_shape[0] != self.maps:
            raise self._error(f"expects ({self.maps}, height, width) inputs, got shape "
                              f"{input_shape}")
        return input_shape

    def describe(self):
        return f"BatchNorm2D {self.maps}"


class BatchNorm1D(_BatchNorm):
    """Batch normalisation of each feature of (N, features) over the batch
    (torch.nn.BatchNorm1d). See _BatchNorm for the rules.

    Shape: input and output (N, features).
    """

    def __init__(self, features, momentum=0.1, eps=1e-5, name=None):
        super().__init__(features, momentum, eps, name)

    def compute_output_shape(self, input_shape):
        if tuple(input_shape) != (self.maps,):
            raise self._error(f"expects {self.maps} input features, got inputs of shape "
                              f"{input_shape}" + (" (add a Flatten layer before it)"
                                                  if len(input_shape) > 1 else ""))
        return input_shape

    def describe(self):
        return f"BatchNorm1D {self.maps}"

    def get_config(self):
        config = super().get_config()
        config["features"] = config.pop("maps")
        return config


class Dropout(Layer):
    """Dropout (Srivastava et al., 2014): in training, each value is kept with
    probability 1 - p and scaled by 1 / (1 - p), or set to 0; at inference
    the layer passes its input through. Backward lets the gradient through
    the kept values, with the same scale.

    The masks are reproducible: mask t of the layer (t counts its training
    passes) comes from a counter-based generator (Philox) keyed by a number
    drawn when the model is initialised, so the same seed trains the same
    way, on any thread count, and a resumed fit goes on with the masks an
    uninterrupted one would draw (key and count are buffers, saved with the
    model).

    Shape: any; output as input.
    """

    def __init__(self, p=0.5, name=None):
        super().__init__(name)
        self.p = check_fraction(p, "p")

    def buffer_shapes(self):
        return {"key": ((2,), np.uint64), "count": ((1,), np.uint64)}

    def reset_parameters(self, rng):
        """A new key for the masks, and the count back to 0."""
        self.buffers["key"][...] = rng.integers(0, 2**63, 2, dtype=np.uint64)
        self.buffers["count"][...] = 0

    def scratch(self, rows, train, threads):
        if not train:
            return {}
        return {"mask": per_sample(self.output_shape), "keep": per_sample(self.output_shape, bool)}

    def forward_into(self, x, out, s, threads):
        """x itself at inference; x * mask in training."""
        if not s.train:
            return x
        if self.p == 0:
            s.mask[...] = 1
        else:
            # mask t starts at counter t * 2^192: its own stream, never another mask's
            counter = [0, 0, 0, int(self.buffers["count"][0])]
            rng = np.random.Generator(np.random.Philox(key=self.buffers["key"], counter=counter))
            rng.random(dtype=self.dtype, out=s.mask)
            np.greater_equal(s.mask, self.p, out=s.keep)
            np.multiply(s.keep, 1 / (1 - self.p), out=s.mask)
        self.buffers["count"] += 1
        np.multiply(x, s.mask, out=out)
        return out

    def backward_into(self, x, y, grad, dx, s, threads):
        """dx = dy * mask."""
        if dx is not None:
            np.multiply(grad, s.mask, out=dx)
        return dx

    def describe(self):
        return f"Dropout p={self.p:g}"

    def get_config(self):
        return {"p": self.p, "name": self.name}


class Normalize(Layer):
    """Standardise the input, channel by channel: y = (x - mean_c) / std_c, as
    the data were standardised for training. Put first, it makes the model
    take raw pixels (as datasets.load gives them) at inference and after
    `load`. Backward: dx = dy / std_c.

    Parameters
    ----------
    mean, std : float or list of float, one per channel
        Of the training images (datasets.channel_stats computes them).

    Shape: input and output (N, C, H, W) (or (N, F) with one value each).
    """

    def __init__(self, mean, std, name=None):
        super().__init__(name)
        self.mean = self._per_channel(mean, "mean")
        self.std = self._per_channel(std, "std")
        if any(v <= 0 for v in self.std):
            raise ValueError(f"std must be > 0 for every channel, got {self.std}")

    @staticmethod
    def _per_channel(values, name):
        try:
            values = np.asarray(values, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a number or a list of numbers, one per channel, "
                            f"got {values!r}") from None
        if not values.size or not np.isfinite(values).all():
            raise ValueError(f"{name} must be finite numbers, one per channel, got {values}")
        return [float(v) for v in values]

    def compute_output_shape(self, input_shape):
        if len(self.mean) not in (1, input_shape[0]) or len(self.std) not in (1, input_shape[0]):
            raise self._error(f"has {len(self.mean)} means and {len(self.std)} stds for inputs "
                              f"of {input_shape[0]} channels")
        return input_shape

    def build(self, input_shape, dtype):
        shape = super().build(input_shape, dtype)
        # mean and std shaped to broadcast over a batch (N, C, H, W) or (N, F), once
        per_position = (-1,) + (1,) * (len(shape) - 1)
        self._mean = np.asarray(self.mean, self.dtype).reshape(per_position)
        self._std = np.asarray(self.std, self.dtype).reshape(per_position)
        return shape

    def forward_into(self, x, out, s, threads):
        """(x - mean) / std, channel by channel."""
        np.subtract(x, self._mean, out=out)
        np.divide(out, self._std, out=out)
        return out

    def backward_into(self, x, y, grad, dx, s, threads):
        """dx = dy / std."""
        if dx is not None:
            np.divide(grad, self._std, out=dx)
        return dx

    def describe(self):
        return "Normalize"

    def get_config(self):
        return {"mean": self.mean, "std": self.std, "name": self.name}


LAYER_TYPES = {cls.__name__: cls for cls in (Conv2D, MeanPool2D, MaxPool2D, Sigmoid, ReLU, Tanh,
                                             Softmax, Flatten, Dense, BatchNorm2D, BatchNorm1D,
                                             Dropout, Normalize)}


def layers_from_config(config):
    """The (unbuilt) layers described by get_config()'s output; only fastcnn's
    own layer classes, from a fixed table."""
    layers = []
    for spec in config["layers"]:
        kind = spec["type"]
        if not isinstance(kind, str) or kind not in LAYER_TYPES:
            raise ValueError(f"unknown layer type {kind!r}; fastcnn has {sorted(LAYER_TYPES)}")
        if not isinstance(spec["config"], dict):
            raise TypeError(f"the configuration of a {kind} layer must be a dict, "
                            f"got {spec['config']!r}")
        layers.append(LAYER_TYPES[kind](**spec["config"]))
    return layers
