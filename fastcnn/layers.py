"""Layers of a convolutional network, as in Zhang's derivation (seeds/000).

Each layer has
  forward(x)      the feedforward of section 1; keeps what backward needs;
  backward(grad)  given dL/d(output), writes dL/d(parameters) into `grads`
                  (overwritten, not accumulated) and returns dL/d(input).
Parameters and gradients are arrays allocated once by `build` and then only
modified in place, so `model.params[name][...] = value` edits the model.

Arrays are NCHW: (N, C, H, W). Kernels are stored as in the paper: a
convolution is a true convolution, so a kernel is the 180-degree rotation of
the equivalent PyTorch Conv2d weight.
"""

import numpy as np

from fastcnn import _activation, _conv, _pool
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

    #: parameter names in order, e.g. ("weight", "bias")
    param_names = ()

    def __init__(self, name=None):
        if name is not None and (not isinstance(name, str) or not name or "." in name):
            raise ValueError(f"a layer name must be a non-empty string without '.', got {name!r}")
        self.name = name
        self.params = {}
        self.grads = {}
        self.input_shape = None
        self.output_shape = None
        self.dtype = None

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
        return {}

    def compute_output_shape(self, input_shape):
        return input_shape

    def reset_parameters(self, rng):
        """Initialise the parameters from a numpy Generator (no-op without any)."""

    def num_parameters(self):
        return sum(p.size for p in self.params.values())

    def get_config(self):
        """The constructor arguments, as JSON-compatible values (saved by `save`)."""
        return {"name": self.name}

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
        last = getattr(self, "_batch", None)
        if last is None:
            raise RuntimeError(f"{type(self).__name__} {self.name}: backward called before forward")
        grad = np.ascontiguousarray(grad, dtype=self.dtype)
        if grad.shape != (last,) + self.output_shape:
            raise self._error(
                f"gradient has shape {grad.shape}, expected {(last,) + self.output_shape}"
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
    name : str, optional

    Shape: input (N, in_maps, H, W), output (N, out_maps, H - kH + 1, W - kW + 1).
    Parameters: weight (out_maps, in_maps, kH, kW), bias (out_maps,).
    """

    param_names = ("weight", "bias")

    def __init__(self, in_maps, out_maps, kernel_size, activation=None, name=None):
        super().__init__(name)
        self.in_maps = check_int(in_maps, "in_maps")
        self.out_maps = check_int(out_maps, "out_maps")
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.activation = _check_activation(activation)
        self._ws = {}

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

    def forward(self, x):
        """x (N, in_maps, H, W) -> C (N, out_maps, H-kH+1, W-kW+1), eq. (5)/(8)."""
        x = self._check_input(x)
        self.x, self._batch = x, x.shape[0]
        self.y = np.empty((x.shape[0],) + self.output_shape, dtype=self.dtype)
        _conv.conv_forward(x, self.params["weight"], self.params["bias"], self.y,
                           self.activation == "sigmoid", get_num_threads())
        return self.y

    def backward(self, grad, need_input_grad=True):
        """grad = dL/dC (N, out_maps, OH, OW) -> dL/da (N, in_maps, H, W).

        Fills grads["bias"] (eq. 45, 64), grads["weight"] (eq. 39-40, 58-59)
        and returns the input gradient of eq. (49)-(51), or None when
        need_input_grad is false (the first layer has no use for it).
        """
        grad = self._check_grad(grad)
        n = grad.shape[0]
        t = get_num_threads()
        ws_pad, ws_dk, ws_db = self._workspaces(n, t)
        dx = np.empty((n,) + self.input_shape, dtype=self.dtype) if need_input_grad else None
        _conv.conv_backward(self.x, self.params["weight"], self.y, grad,
                            self.activation == "sigmoid", self.grads["weight"],
                            self.grads["bias"], dx, ws_pad, ws_dk, ws_db, t)
        return dx

    def _workspaces(self, n, threads):
        # Allocated on first use and when the batch grows, then reused: the
        # padded delta maps (one per thread, border kept at zero) and the
        # per-sample gradient slots that are summed in sample order.
        ws = self._ws
        if ws.get("threads", 0) < threads:
            (m, oh, ow), (kh, kw) = self.output_shape, self.kernel_size
            ws["pad"] = np.zeros((threads, m, oh + 2 * (kh - 1), ow + 2 * (kw - 1)), self.dtype)
            ws["threads"] = threads
        if ws.get("samples", 0) < n:
            ws["dk"] = np.empty((n,) + self.params["weight"].shape, self.dtype)
            ws["db"] = np.empty((n, self.out_maps), self.dtype)
            ws["samples"] = n
        return ws["pad"], ws["dk"], ws["db"]

    def describe(self):
        kh, kw = self.kernel_size
        act = f", {self.activation}" if self.activation else ""
        return f"Conv2D {self.in_maps}->{self.out_maps}, {kh}x{kw}{act}"

    def get_config(self):
        return {"in_maps": self.in_maps, "out_maps": self.out_maps,
                "kernel_size": list(self.kernel_size), "activation": self.activation,
                "name": self.name}


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

    def forward(self, x):
        x = self._check_input(x)
        self._batch = x.shape[0]
        y = np.empty((x.shape[0],) + self.output_shape, dtype=self.dtype)
        _pool.mean_pool(x, self.scale, y, get_num_threads())
        return y

    def backward(self, grad, need_input_grad=True):
        grad = self._check_grad(grad)
        if not need_input_grad:
            return None
        dx = np.empty((grad.shape[0],) + self.input_shape, dtype=self.dtype)
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

    def forward(self, x):
        x = self._check_input(x)
        self._batch = x.shape[0]
        self.y = np.empty_like(x)
        _activation.sigmoid_forward(x.reshape(-1), self.y.reshape(-1), get_num_threads())
        return self.y

    def backward(self, grad, need_input_grad=True):
        grad = self._check_grad(grad)
        if not need_input_grad:
            return None
        dz = np.empty_like(grad)
        _activation.sigmoid_backward(self.y.reshape(-1), grad.reshape(-1), dz.reshape(-1),
                                     get_num_threads())
        return dz


class Flatten(Layer):
    """f = F({S_q}), eq. (10), and its inverse F^-1, eq. (11) and (31).

    C order: (N, C, H, W) -> (N, C*H*W). The paper scans each map by column;
    that order differs from this one only by a fixed permutation of W's
    columns, so it changes nothing that is learned.
    """

    def compute_output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)

    def forward(self, x):
        x = self._check_input(x)
        self._batch = x.shape[0]
        return x.reshape(x.shape[0], -1)

    def backward(self, grad, need_input_grad=True):
        grad = self._check_grad(grad)
        return grad.reshape((grad.shape[0],) + self.input_shape) if need_input_grad else None


class Dense(Layer):
    """Fully connected layer, eq. (12): yhat = sigma(W f + b).

    Backward, with delta = dL/dyhat * yhat (1 - yhat) (eq. 17, 23):
        dW = delta^T f      eq. (19), summed over the batch
        db = sum delta      eq. (24)
        df = delta W        eq. (30)

    Shape: input (N, in_features), output (N, out_features).
    Parameters: weight (out_features, in_features) as W in eq. (12), bias (out_features,).
    """

    param_names = ("weight", "bias")

    def __init__(self, in_features, out_features, activation=None, name=None):
        super().__init__(name)
        self.in_features = check_int(in_features, "in_features")
        self.out_features = check_int(out_features, "out_features")
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
        """eq. (3): W ~ U(+-sqrt(6 / (in_features + out_features))), b = 0."""
        bound = np.sqrt(6.0 / (self.in_features + self.out_features))
        self.params["weight"][...] = rng.uniform(-bound, bound, self.params["weight"].shape)
        self.params["bias"][...] = 0

    def forward(self, f):
        f = self._check_input(f)
        self.x, self._batch = f, f.shape[0]
        z = f @ self.params["weight"].T
        z += self.params["bias"]
        if self.activation == "sigmoid":
            _activation.sigmoid_forward(z.reshape(-1), z.reshape(-1), get_num_threads())
        self.y = z
        return z

    def backward(self, grad, need_input_grad=True):
        grad = self._check_grad(grad)
        if self.activation == "sigmoid":
            delta = np.empty_like(grad)
            _activation.sigmoid_backward(self.y.reshape(-1), grad.reshape(-1),
                                         delta.reshape(-1), get_num_threads())
        else:
            delta = grad
        np.matmul(delta.T, self.x, out=self.grads["weight"])
        np.sum(delta, axis=0, out=self.grads["bias"])
        return delta @ self.params["weight"] if need_input_grad else None

    def describe(self):
        act = f", {self.activation}" if self.activation else ""
        return f"Dense {self.in_features}->{self.out_features}{act}"

    def get_config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "activation": self.activation, "name": self.name}


LAYER_TYPES = {cls.__name__: cls for cls in (Conv2D, MeanPool2D, Sigmoid, Flatten, Dense)}
