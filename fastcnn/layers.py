"""Layers of a convolutional network, as in Zhang's derivation (seeds/000).

Each layer has
  forward(x)      the feedforward of section 1; keeps what backward needs;
  backward(grad)  given dL/d(output), writes dL/d(parameters) into `grads`
                  (overwritten, not accumulated) and returns dL/d(input).
Both check their input and return new arrays. Underneath, `_forward(x, out)`
and `_backward(grad, dx)` do the work into arrays the caller provides: a
Sequential model validates once per batch and reuses those arrays from one
batch to the next.

Parameters and gradients are arrays allocated once and afterwards only
modified in place, so `model.params[name][...] = value` edits the model.

Arrays are NCHW: (N, C, H, W). Kernels are stored as in the paper: a
convolution is a true convolution, so a kernel is the 180-degree rotation of
the equivalent PyTorch Conv2d weight.
"""

import numpy as np

from fastcnn import _activation, _dense, _pool, conv_algorithms
from fastcnn._threads import get_num_threads
from fastcnn._validate import check_int

ACTIVATIONS = (None, "sigmoid")


def _check_activation(activation):
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be None or 'sigmoid', got {activation!r}")
    return activation


def _pair(value, name):
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        return check_int(value[0], name), check_int(value[1], name)
    v = check_int(value, name)
    return v, v


class Layer:
    """Base class: a named step of a Sequential model."""

    #: whether _forward writes into `out` (False: it returns a view of x)
    writes_output = True
    #: whether _backward writes into `dx` (False: it returns a view of grad)
    writes_input_grad = True

    def __init__(self, name=None):
        if name is not None and (not isinstance(name, str) or not name or "." in name):
            raise ValueError(f"a layer name must be a non-empty string without '.', got {name!r}")
        self.name = name
        self.params = {}
        self.grads = {}
        self.input_shape = None
        self.output_shape = None
        self.dtype = None
        self._batch = None

    def build(self, input_shape, dtype):
        """Check the per-sample input shape (C, H, W) or (F,), allocate the
        parameters in `dtype` and return the per-sample output shape."""
        self.input_shape = tuple(input_shape)
        self.dtype = np.dtype(dtype)
        self.output_shape = tuple(self.compute_output_shape(self.input_shape))
        for pname, shape in self.parameter_shapes().items():
            self.params[pname] = np.zeros(shape, dtype=self.dtype)
            self.grads[pname] = np.zeros(shape, dtype=self.dtype)
        return self.output_shape

    def parameter_shapes(self):
        """{parameter name: shape} of the layer's parameters (none by default)."""
        return {}

    def compute_output_shape(self, input_shape):
        """The per-sample output shape for a per-sample input shape; raises
        ValueError if the layer cannot take that input."""
        return input_shape

    def reset_parameters(self, rng):
        """Initialise the parameters from a numpy Generator (no-op without any)."""

    def num_parameters(self):
        """Number of trainable scalars of this layer."""
        return sum(p.size for p in self.params.values())

    def get_config(self):
        """The constructor arguments, as JSON-compatible values (saved by `save`)."""
        return {"name": self.name}

    # -------------------------------------------------- public, checked API
    def forward(self, x):
        """Output for input x (N,) + input_shape, as a new array (N,) + output_shape."""
        x = self._check_input(x)
        out = np.empty((x.shape[0],) + self.output_shape, self.dtype) if self.writes_output else None
        return self._forward(x, out)

    def backward(self, grad, need_input_grad=True):
        """Given dL/d(output) of the last forward call, fill `grads` and return
        dL/d(input) as a new array (None when need_input_grad is false)."""
        grad = self._check_grad(grad)
        dx = None
        if need_input_grad and self.writes_input_grad:
            dx = np.empty((grad.shape[0],) + self.input_shape, self.dtype)
        out = self._backward(grad, dx)
        return out if need_input_grad else None

    # ------------------------------------------- unchecked, caller's arrays
    def _forward(self, x, out):
        """Compute into `out` from a checked x; keep what _backward needs."""
        raise NotImplementedError

    def _backward(self, grad, dx):
        """Fill `grads`; compute dL/d(input) into dx unless it is None."""
        raise NotImplementedError

    # ----------------------------------------------------------- checking
    def _check_input(self, x):
        """The layer's input as a C-contiguous array of its dtype, of shape (N,) + input_shape."""
        if self.dtype is None:
            raise RuntimeError(
                f"{type(self).__name__} {self.name} is not built: put it in a Sequential "
                f"model or call build(input_shape, dtype) first"
            )
        x = np.ascontiguousarray(x, dtype=self.dtype)
        if x.shape[1:] != self.input_shape or x.shape[0] < 1:
            raise self._error(
                f"expects input of shape (N, {', '.join(map(str, self.input_shape))}) "
                f"with N >= 1, got {x.shape}"
            )
        return x

    def _check_grad(self, grad):
        """dL/d(output) for the batch of the last forward call."""
        if self._batch is None:
            raise RuntimeError(f"{type(self).__name__} {self.name}: backward called before forward")
        grad = np.ascontiguousarray(grad, dtype=self.dtype)
        if grad.shape != (self._batch,) + self.output_shape:
            raise self._error(
                f"gradient has shape {grad.shape}, expected {(self._batch,) + self.output_shape}"
            )
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

        C_q = sigma(sum_p a_p * k_pq + b_q)

    with `*` the valid 2-D true convolution and sigma applied when
    activation="sigmoid". The sigmoid is fused into the convolution kernel.

    Parameters
    ----------
    in_maps, out_maps : int
        Input and output feature maps (p and q in the paper).
    kernel_size : int or (int, int)
        Kernel height and width (5 in the paper; any size works, 5x5 has a
        fast path).
    activation : None or "sigmoid"
    algorithm : "auto", "direct", "im2col" or "fft"
        How the sums are computed (fastcnn.conv_algorithms): the direct
        kernels, a matrix product after im2col, or products of spectra. The
        results agree to rounding; "auto" picks by the layer's shape.
    name : str, optional

    Shape: input (N, in_maps, H, W), output (N, out_maps, H - kH + 1, W - kW + 1).
    Parameters: weight (out_maps, in_maps, kH, kW), bias (out_maps,).
    """

    def __init__(self, in_maps, out_maps, kernel_size, activation=None, algorithm="auto",
                 name=None):
        super().__init__(name)
        self.in_maps = check_int(in_maps, "in_maps")
        self.out_maps = check_int(out_maps, "out_maps")
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.activation = _check_activation(activation)
        if algorithm not in conv_algorithms.ALGORITHMS:
            raise ValueError(f"algorithm must be one of {conv_algorithms.ALGORITHMS}, "
                             f"got {algorithm!r}")
        self.algorithm = algorithm
        self._algo = None

    def build(self, input_shape, dtype):
        shape = super().build(input_shape, dtype)
        self._algo = conv_algorithms.make(self)
        return shape

    @property
    def algorithm_used(self):
        """The algorithm that runs: `algorithm`, with "auto" resolved (None before build)."""
        return None if self._algo is None else self._algo.name

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise self._error(f"expects (maps, height, width) inputs, got shape {input_shape}")
        c, h, w = input_shape
        kh, kw = self.kernel_size
        if c != self.in_maps:
            raise self._error(f"expects {self.in_maps} input maps, got {c}")
        if h < kh or w < kw:
            raise self._error(f"input maps of {h}x{w} are smaller than the {kh}x{kw} kernel")
        return (self.out_maps, h - kh + 1, w - kw + 1)

    def parameter_shapes(self):
        return {"weight": (self.out_maps, self.in_maps) + self.kernel_size, "bias": (self.out_maps,)}

    def reset_parameters(self, rng):
        """eq. (1)-(2): k ~ U(+-sqrt(6 / ((in_maps + out_maps) kH kW))), b = 0."""
        kh, kw = self.kernel_size
        bound = np.sqrt(6.0 / ((self.in_maps + self.out_maps) * kh * kw))
        self.params["weight"][...] = rng.uniform(-bound, bound, self.params["weight"].shape)
        self.params["bias"][...] = 0

    def _forward(self, x, out):
        """x (N, in_maps, H, W) -> C (N, out_maps, H-kH+1, W-kW+1), eq. (4)-(5), (7)-(8)."""
        self.x, self.y, self._batch = x, out, x.shape[0]
        self._algo.forward(x, out)
        return out

    def _backward(self, grad, dx):
        """grad = dL/dC -> grads["bias"] (eq. 45, 64), grads["weight"] (eq. 39-40,
        58-59), and dL/da into dx (eq. 49-51) unless dx is None (first layer)."""
        self._algo.backward(grad, dx)
        return dx

    def describe(self):
        kh, kw = self.kernel_size
        act = f", {self.activation}" if self.activation else ""
        algo = self.algorithm_used or self.algorithm
        how = f"{self.algorithm}: {algo}" if self.algorithm == "auto" else algo
        return f"Conv2D {self.in_maps}->{self.out_maps}, {kh}x{kw}{act} ({how})"

    def get_config(self):
        return {"in_maps": self.in_maps, "out_maps": self.out_maps,
                "kernel_size": list(self.kernel_size), "activation": self.activation,
                "algorithm": self.algorithm, "name": self.name}


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
        self.scale = check_int(scale, "scale")

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise self._error(f"expects (maps, height, width) inputs, got shape {input_shape}")
        c, h, w = input_shape
        if h < self.scale or w < self.scale:
            raise self._error(f"input maps of {h}x{w} are smaller than the pooling scale {self.scale}")
        return (c, h // self.scale, w // self.scale)

    def _forward(self, x, out):
        self._batch = x.shape[0]
        _pool.mean_pool(x, self.scale, out, get_num_threads())
        return out

    def _backward(self, grad, dx):
        if dx is not None:
            _pool.mean_upsample(grad, self.scale, dx, get_num_threads())
        return dx

    def describe(self):
        return f"MeanPool2D {self.scale}x{self.scale}"

    def get_config(self):
        return {"scale": self.scale, "name": self.name}


class Sigmoid(Layer):
    """sigma(z) = 1 / (1 + exp(-z)), eq. (4); backward dz = dy * y (1 - y), eq. (37).

    Conv2D and Dense fuse it with activation="sigmoid"; this layer is for
    placing it elsewhere. Any input shape.
    """

    def _forward(self, x, out):
        self.y, self._batch = out, x.shape[0]
        _activation.sigmoid_forward(x.reshape(-1), out.reshape(-1), get_num_threads())
        return out

    def _backward(self, grad, dx):
        if dx is not None:
            _activation.sigmoid_backward(self.y.reshape(-1), grad.reshape(-1), dx.reshape(-1),
                                         get_num_threads())
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

    def _forward(self, x, out=None):
        self._batch = x.shape[0]
        return x.reshape(x.shape[0], -1)

    def _backward(self, grad, dx=None):
        return grad.reshape((grad.shape[0],) + self.input_shape)

    # the public methods return new arrays, like the other layers, not views
    def forward(self, x):
        return super().forward(x).copy()

    def backward(self, grad, need_input_grad=True):
        dx = super().backward(grad, need_input_grad)
        return None if dx is None else dx.copy()


class Dense(Layer):
    """Fully connected layer, eq. (12): yhat = sigma(W f + b).

    Backward, with delta = dL/dyhat * yhat (1 - yhat) (eq. 17, 23):
        dW = delta^T f      eq. (19), summed over the batch
        db = sum delta      eq. (24)
        df = delta W        eq. (30)

    Shape: input (N, in_features), output (N, out_features).
    Parameters: weight (out_features, in_features) as W in eq. (12), bias (out_features,).
    """

    def __init__(self, in_features, out_features, activation=None, name=None):
        super().__init__(name)
        self.in_features = check_int(in_features, "in_features")
        self.out_features = check_int(out_features, "out_features")
        self.activation = _check_activation(activation)
        self._delta = None

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
        """eq. (3): W ~ U(+-sqrt(6 / (in_features + out_features))), b = 0."""
        bound = np.sqrt(6.0 / (self.in_features + self.out_features))
        self.params["weight"][...] = rng.uniform(-bound, bound, self.params["weight"].shape)
        self.params["bias"][...] = 0

    def _forward(self, f, out):
        self.x, self.y, self._batch = f, out, f.shape[0]
        _dense.dense_forward(f, self.params["weight"], self.params["bias"], out,
                             self.activation == "sigmoid", get_num_threads())
        return out

    def _backward(self, grad, dx):
        n = grad.shape[0]
        if self._delta is None or self._delta.shape[0] < n:
            self._delta = np.empty((n, self.out_features), self.dtype)
        _dense.dense_backward(self.x, self.params["weight"], self.y, grad,
                              self.activation == "sigmoid", self.grads["weight"],
                              self.grads["bias"], dx, self._delta, get_num_threads())
        return dx

    def describe(self):
        act = f", {self.activation}" if self.activation else ""
        return f"Dense {self.in_features}->{self.out_features}{act}"

    def get_config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "activation": self.activation, "name": self.name}


LAYER_TYPES = {cls.__name__: cls for cls in (Conv2D, MeanPool2D, Sigmoid, Flatten, Dense)}
