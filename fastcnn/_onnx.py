"""Writing a model as an ONNX file (fastcnn.interop.to_onnx), without PyTorch.

ONNX is the file format other runtimes read (onnxruntime, OpenCV's dnn,
onnxruntime-web in a browser): exported, a fastcnn model runs where neither
fastcnn nor PyTorch is installed. Writing one needs only the `onnx` package
(pip install "fastcnn[onnx]"), imported on the first export so that
`import fastcnn` stays light.

The graph is the inference pass of `model.forward(x)`: input "input" of
shape (N, C, H, W) with N free, output "scores" of shape (N,) +
model.output_shape, in the model's dtype. Layers map to ONNX operators:

    Conv2D(f, stride, padding, bias)   Conv (kernels rotated by 180 degrees:
                                       fastcnn's is a true convolution, ONNX's
                                       a correlation; pads as given, uneven
                                       "same" included) [+ f]
    MeanPool2D(s)                      AveragePool (s x s, stride s, no padding)
    MaxPool2D(size, stride)            MaxPool
    Sigmoid, ReLU, Tanh                Sigmoid, Relu, Tanh
    tanh_opt (Tanh(scaled=True) or     Mul(2/3), Tanh, Mul(1.7159): ONNX has no
      activation="tanh_opt")           operator for DeepLearnToolbox's 1.7159 tanh(2x/3)
    Softmax                            Softmax(axis=1)
    Flatten                            Flatten(axis=1) (C order, as fastcnn's)
    Dense(f)                           Gemm(transB=1) [+ f]
    BatchNorm2D, BatchNorm1D           BatchNormalization with the running estimates
    Dropout                            Identity (dropout does nothing at inference)
    Normalize(mean, std)               Sub(mean), Div(std), channel by channel

Parameters keep their names in `model.params` ("C1.weight"), as do batch
norm's running estimates; the tensor between layers is "<layer>.output".
Every name made here holds a '.', which a layer name cannot: none collides
with "input" or "scores".

Two details of ONNX the export works around. Its BatchNormalization takes
epsilon as a float32 attribute, so the difference between the layer's eps
and that float32 goes into the variance it is given: var + epsilon is then
the layer's to the precision of the model's dtype. And a float64 graph is
valid ONNX, but onnxruntime (1.32) has no float64 kernels for Conv and
AveragePool: such a model runs there in float32 only (onnx's reference
evaluator runs it in float64).
"""

import json
import os

import numpy as np

from fastcnn import _optional
from fastcnn._files import atomic_write, check_writable
from fastcnn._version import __version__
from fastcnn.layers import (
    BatchNorm1D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    MeanPool2D,
    Normalize,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
)
from fastcnn.model import Sequential

#: The oldest opset written: ONNX's Softmax and types as they have been since
#: opset 13 (2020), which any current runtime reads.
MIN_OPSET = 13
#: What to_onnx writes unless told: read by every onnxruntime since 1.13 (2022).
DEFAULT_OPSET = 17
#: A protobuf message, so an ONNX file without external data, holds < 2 GiB.
MAX_BYTES = 2**31 - 2**20

INSTALL_HINT = ('pip install "fastcnn[onnx]" (from a checkout of the source: '
                'pip install ".[onnx]")')

# DeepLearnToolbox's tanh_opt, with the constants of the kernels (activation_impl.h)
TANH_OPT_OUTER, TANH_OPT_INNER = 1.7159, 2.0 / 3.0


def import_onnx():
    """The onnx module, or ImportError saying how to install it."""
    onnx = _optional.module("onnx")
    if onnx is None:
        raise ImportError(f"exporting to ONNX needs the onnx package: {INSTALL_HINT}")
    return onnx


def max_opset(onnx):
    """The newest opset the installed onnx package knows."""
    return int(onnx.defs.onnx_opset_version())


def check_opset(opset, onnx):
    """opset as an int in [MIN_OPSET, max_opset(onnx)] (DEFAULT_OPSET for None)."""
    if opset is None:
        return DEFAULT_OPSET
    newest = max_opset(onnx)
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)):
        raise TypeError(f"opset must be an int from {MIN_OPSET} to {newest} (or None for "
                        f"{DEFAULT_OPSET}), got {opset!r}")
    if not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset must be from {MIN_OPSET} to {newest} (the newest this onnx "
                         f"{onnx.__version__} knows), got {opset}")
    return int(opset)


def check_path(path):
    """The path as a str, if a file can be written there (raises OSError
    subclasses saying why not), before any work is done."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file name (str or os.PathLike), got {path!r}")
    return check_writable(path)


def to_onnx(model, path, opset=None):
    """Write `model` to `path` as an ONNX file; return the onnx.ModelProto.
    See fastcnn.interop.to_onnx."""
    if not isinstance(model, Sequential):
        hint = " (load the model file first: fastcnn.load(path))" \
            if isinstance(model, (str, os.PathLike)) else ""
        raise TypeError(f"to_onnx takes a fastcnn.Sequential model, got "
                        f"{type(model).__name__}{hint}")
    path = check_path(path)
    onnx = import_onnx()
    opset = check_opset(opset, onnx)
    classes = model.classes  # checked when they were set
    with model.lock.reading():  # the parameters of a whole number of training steps
        model.check_parameters()
        size = sum(a.nbytes for a in model.params.values()) + \
            sum(a.nbytes for a in model.buffers.values())
        if size > MAX_BYTES:
            raise ValueError(f"the model's parameters take {size} bytes; an ONNX file holds "
                             f"less than 2 GiB (external data is not written)")
        proto = _model_proto(onnx, model, opset, classes)
    # a file that does not pass the checker is never written
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()
    atomic_write(path, lambda f: f.write(data))
    return proto


def _model_proto(onnx, model, opset, classes):
    helper = onnx.helper
    elem = {np.dtype(np.float32): onnx.TensorProto.FLOAT,
            np.dtype(np.float64): onnx.TensorProto.DOUBLE}[model.dtype]
    graph = _Graph(onnx, model.dtype)
    x = "input"
    for i, layer in enumerate(model.layers):
        out = "scores" if i == len(model.layers) - 1 else f"{layer.name}.output"
        export = _EXPORTS.get(type(layer))
        if export is None:  # a user's subclass may compute something else: refuse it
            raise ValueError(f"to_onnx cannot export layer {layer.name} of type "
                             f"{type(layer).__name__}: it exports fastcnn's own layer classes "
                             f"({', '.join(sorted(c.__name__ for c in _EXPORTS))})")
        x = export(graph, layer, x, out)
    inputs = [helper.make_tensor_value_info("input", elem, ["N", *model.input_shape])]
    outputs = [helper.make_tensor_value_info("scores", elem, ["N", *model.output_shape])]
    g = helper.make_graph(graph.nodes, "fastcnn.Sequential", inputs, outputs,
                          graph.initializers, doc_string=model.summary())
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(g, opset_imports=opsets, producer_name="fastcnn",
                              producer_version=__version__,
                              doc_string="A fastcnn.Sequential model: scores = model.forward(input)")
    # the oldest IR version with this opset, for the oldest runtimes that read it
    proto.ir_version = helper.find_min_ir_version_for(opsets)
    meta = {"fastcnn_version": __version__, "loss": model.loss}
    if classes is not None:
        meta["classes"] = json.dumps(classes)
    helper.set_model_props(proto, meta)
    return proto


class _Graph:
    """The nodes and initializers of a graph, as the layers add them."""

    def __init__(self, onnx, dtype):
        self.onnx, self.dtype = onnx, dtype
        self.nodes, self.initializers = [], []

    def constant(self, name, value):
        """An initializer `name` holding value in the model's dtype."""
        array = np.ascontiguousarray(np.asarray(value, dtype=self.dtype))
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def node(self, op, inputs, output, name, **attributes):
        """A node computing tensor `output` from `inputs`; returns `output`."""
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [output], name=name,
                                                     **attributes))
        return output

    def activation(self, function, x, out, prefix):
        """The element-wise activation `function` of x into out."""
        if function == "tanh_opt":
            inner = self.constant(f"{prefix}.tanh_opt_inner", TANH_OPT_INNER)
            outer = self.constant(f"{prefix}.tanh_opt_outer", TANH_OPT_OUTER)
            scaled = self.node("Mul", [x, inner], f"{prefix}.tanh_opt_in", f"{prefix}.tanh_opt_in")
            t = self.node("Tanh", [scaled], f"{prefix}.tanh", f"{prefix}.tanh")
            return self.node("Mul", [t, outer], out, f"{prefix}.tanh_opt")
        op = {"sigmoid": "Sigmoid", "relu": "Relu", "tanh": "Tanh"}[function]
        return self.node(op, [x], out, f"{prefix}.{function}")


def _conv(g, layer, x, out):
    name = layer.name
    # true convolution -> correlation: rotate the kernels by 180 degrees
    inputs = [x, g.constant(f"{name}.weight", layer.params["weight"][:, :, ::-1, ::-1])]
    if layer.bias:
        inputs.append(g.constant(f"{name}.bias", layer.params["bias"]))
    top, bottom, left, right = layer._pads
    conv = out if layer.activation is None else f"{name}.conv"
    g.node("Conv", inputs, conv, name, kernel_shape=list(layer.kernel_size),
           strides=[layer.stride] * 2, pads=[top, left, bottom, right])
    if layer.activation is None:
        return conv
    return g.activation(layer.activation, conv, out, name)


def _dense(g, layer, x, out):
    name = layer.name
    linear = out if layer.activation is None else f"{name}.linear"
    g.node("Gemm", [x, g.constant(f"{name}.weight", layer.params["weight"]),
                    g.constant(f"{name}.bias", layer.params["bias"])], linear, name, transB=1)
    if layer.activation is None:
        return linear
    return g.activation(layer.activation, linear, out, name)


def _batch_norm(g, layer, x, out):
    name = layer.name
    # ONNX's epsilon is a float32: the rest of the layer's eps goes into the variance
    eps32 = float(np.float32(layer.eps))
    var = layer.buffers["running_var"].astype(np.float64) + (layer.eps - eps32)
    inputs = [x, g.constant(f"{name}.weight", layer.params["weight"]),
              g.constant(f"{name}.bias", layer.params["bias"]),
              g.constant(f"{name}.running_mean", layer.buffers["running_mean"]),
              g.constant(f"{name}.running_var", var)]
    return g.node("BatchNormalization", inputs, out, name, epsilon=eps32)


def _normalize(g, layer, x, out):
    name = layer.name
    # shaped to broadcast over a batch, as the layer holds them: (C, 1, 1) or (F,)
    centred = g.node("Sub", [x, g.constant(f"{name}.mean", layer._mean)], f"{name}.centred",
                     f"{name}.subtract_mean")
    return g.node("Div", [centred, g.constant(f"{name}.std", layer._std)], out,
                  f"{name}.divide_by_std")


def _mean_pool(g, layer, x, out):
    s = layer.scale
    return g.node("AveragePool", [x], out, layer.name, kernel_shape=[s, s], strides=[s, s])


def _max_pool(g, layer, x, out):
    return g.node("MaxPool", [x], out, layer.name, kernel_shape=[layer.size] * 2,
                  strides=[layer.stride] * 2)


def _activation_layer(g, layer, x, out):
    return g.activation(layer.function, x, out, layer.name)


def _softmax(g, layer, x, out):
    return g.node("Softmax", [x], out, layer.name, axis=1)


def _flatten(g, layer, x, out):
    return g.node("Flatten", [x], out, layer.name, axis=1)


def _dropout(g, layer, x, out):
    return g.node("Identity", [x], out, layer.name)


# exact classes: a subclass may compute something else, and is refused
_EXPORTS = {Conv2D: _conv, Dense: _dense, BatchNorm2D: _batch_norm, BatchNorm1D: _batch_norm,
            Normalize: _normalize, MeanPool2D: _mean_pool, MaxPool2D: _max_pool,
            Sigmoid: _activation_layer, ReLU: _activation_layer, Tanh: _activation_layer,
            Softmax: _softmax, Flatten: _flatten, Dropout: _dropout}
