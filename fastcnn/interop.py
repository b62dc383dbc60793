"""Moving models out of fastcnn: to PyTorch and back, and to ONNX files.

    to_torch(model)                       -> torch.nn.Sequential computing the same outputs
    from_torch(module, input_shape, ...)  -> fastcnn.Sequential computing the same outputs
    to_onnx(model, path, opset=None)      -> an ONNX file computing model.forward, for
                                             onnxruntime and other runtimes (no PyTorch)

PyTorch is needed only by to_torch and from_torch, the onnx package only by
to_onnx (pip install "fastcnn[onnx]"); each is imported when first used.
to_onnx lives in fastcnn._onnx, whose docstring maps each layer to its ONNX
operators; below, the PyTorch side.

The one difference to mind: fastcnn's convolution is the true convolution of
the paper, eq. (5), and PyTorch's Conv2d a correlation, so a kernel moves
rotated by 180 degrees. Layers map one to one:

    Conv2D(activation=f, stride, padding,   Conv2d(stride, padding, bias) + f
           bias)
    BatchNorm2D, BatchNorm1D                BatchNorm2d, BatchNorm1d (with their running
                                            estimates; affine, tracking them)
    Dropout(p)                              Dropout(p)
    MeanPool2D(s)                           AvgPool2d(s)   (stride s, no padding)
    MaxPool2D(size, stride)                 MaxPool2d(size, stride)
    Sigmoid, ReLU, Tanh, Softmax            Sigmoid, ReLU, Tanh, Softmax(dim=1)
    Flatten                                 Flatten
    Dense(activation=f)                     Linear + f

with f a sigmoid, ReLU or tanh. DeepLearnToolbox's tanh_opt has no PyTorch
module and is refused; Normalize becomes a small module that standardises
its input (to_torch only). from_torch accepts exactly these (Conv2d without
dilation or groups; an activation right after a Conv2d or Linear is fused
into it) and names anything else it cannot translate.
"""

import numpy as np

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


def _torch():
    try:
        import torch
    except ImportError:
        raise ImportError("fastcnn.interop needs PyTorch: pip install torch") from None
    return torch


def _activation_module(nn, name):
    if name == "tanh_opt":
        raise ValueError("PyTorch has no module for tanh_opt (1.7159 tanh(2x/3))")
    return {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}[name]()


def to_torch(model):
    """A torch.nn.Sequential with model's layers and parameters (copied), in
    model's dtype, that computes the same outputs for the same NCHW input."""
    torch = _torch()
    nn = torch.nn
    dtype = torch.float32 if model.dtype == np.float32 else torch.float64
    modules = []
    for layer in model.layers:
        if isinstance(layer, Conv2D):
            top, bottom, left, right = layer._pads
            if top != bottom or left != right:
                padding = "same"  # fastcnn's uneven "same" is PyTorch's
            else:
                padding = (top, left)
            conv = nn.Conv2d(layer.in_maps, layer.out_maps, layer.kernel_size, stride=layer.stride,
                             padding=padding, bias=layer.bias, dtype=dtype)
            with torch.no_grad():
                # true convolution -> correlation: rotate the kernels by 180 degrees
                conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(
                    layer.params["weight"][:, :, ::-1, ::-1])))
                if layer.bias:
                    conv.bias.copy_(torch.from_numpy(layer.params["bias"].copy()))
            modules.append(conv)
            if layer.activation:
                modules.append(_activation_module(nn, layer.activation))
        elif isinstance(layer, (BatchNorm2D, BatchNorm1D)):
            kind = nn.BatchNorm2d if isinstance(layer, BatchNorm2D) else nn.BatchNorm1d
            bn = kind(layer.maps, eps=layer.eps, momentum=layer.momentum, dtype=dtype)
            with torch.no_grad():
                for theirs, ours in ((bn.weight, layer.params["weight"]),
                                     (bn.bias, layer.params["bias"]),
                                     (bn.running_mean, layer.buffers["running_mean"]),
                                     (bn.running_var, layer.buffers["running_var"])):
                    theirs.copy_(torch.from_numpy(ours.copy()))
            modules.append(bn)
        elif isinstance(layer, Dropout):
            modules.append(nn.Dropout(layer.p))
        elif isinstance(layer, Normalize):
            modules.append(_Standardize(torch, layer.mean, layer.std, len(layer.input_shape), dtype))
        elif isinstance(layer, MeanPool2D):
            modules.append(nn.AvgPool2d(layer.scale))
        elif isinstance(layer, MaxPool2D):
            modules.append(nn.MaxPool2d(layer.size, layer.stride))
        elif isinstance(layer, (Sigmoid, ReLU, Tanh)):
            modules.append(_activation_module(nn, layer.function))
        elif isinstance(layer, Softmax):
            modules.append(nn.Softmax(dim=1))
        elif isinstance(layer, Flatten):
            modules.append(nn.Flatten())
        elif isinstance(layer, Dense):
            linear = nn.Linear(layer.in_features, layer.out_features, dtype=dtype)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(layer.params["weight"].copy()))
                linear.bias.copy_(torch.from_numpy(layer.params["bias"].copy()))
            modules.append(linear)
            if layer.activation:
                modules.append(_activation_module(nn, layer.activation))
        else:  # pragma: no cover - every fastcnn layer is handled above
            raise ValueError(f"to_torch has no PyTorch equivalent for {layer!r}")
    return nn.Sequential(*modules)


def to_onnx(model, path, opset=None):
    """Write `model` as an ONNX file at `path` that computes `model.forward`
    (an inference pass: batch norm by its running estimates, no dropout),
    and return the onnx.ModelProto written. Needs the onnx package only
    (pip install "fastcnn[onnx]"), not PyTorch.

    The graph's input is "input", (N, C, H, W) with the batch size N free;
    its output "scores", (N,) + model.output_shape; both in the model's
    dtype. Its metadata_props hold "fastcnn_version", "loss" (whether the
    scores want a softmax to be probabilities: "cross_entropy") and, if the
    model has class names (model.classes), "classes" as a JSON list.

    Parameters
    ----------
    model : fastcnn.Sequential
        Any model of fastcnn's layers; parameters holding NaN or infinity
        are refused, as forward refuses them.
    path : str or os.PathLike
        Written atomically (fastcnn._files.atomic_write), after the graph
        has passed onnx.checker.check_model: a failure leaves no file, or
        the one that was there.
    opset : int, optional
        The ONNX opset, from 13 to the newest the installed onnx knows;
        default 17 (onnxruntime 1.13 and later).

    onnxruntime (1.32) has no float64 kernels for Conv and AveragePool: a
    float64 model with those layers is a valid file that it runs only in
    float32 (build the model in float32 and copy the parameters over).
    """
    from fastcnn import _onnx  # the onnx package, imported only now

    return _onnx.to_onnx(model, path, opset)


def _Standardize(torch, mean, std, ndim, dtype):
    """A torch module computing (x - mean) / std channel by channel (Normalize)."""
    shape = (1, -1) + (1,) * (ndim - 1)

    class Standardize(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.tensor(mean, dtype=dtype).reshape(shape))
            self.register_buffer("std", torch.tensor(std, dtype=dtype).reshape(shape))

        def forward(self, x):
            return (x - self.mean) / self.std

    return Standardize()


def from_torch(module, input_shape, dtype=None, algorithm="auto", loss="mse"):
    """A fastcnn Sequential with module's layers, parameters and batch norm's
    running estimates (copied).

    Parameters
    ----------
    module : torch.nn.Sequential (or a single supported module)
    input_shape : (C, H, W)
        The shape of one input image (PyTorch modules do not record it).
    dtype : "float32" or "float64", optional
        Default: that of module's parameters.
    algorithm : str
        For the Conv2D layers (see fastcnn.conv_algorithms).
    loss : "mse" or "cross_entropy"
        What the model trains against (Sequential's loss): "cross_entropy"
        for a network that ends in scores, as PyTorch classifiers trained
        with CrossEntropyLoss do.
    """
    torch = _torch()
    nn = torch.nn
    children = list(module.children()) if isinstance(module, nn.Sequential) else [module]
    if dtype is None:
        params = list(module.parameters())
        dtype = "float64" if params and params[0].dtype == torch.float64 else "float32"
    layers, weights, i = [], [], 0
    activations = {nn.Sigmoid: "sigmoid", nn.ReLU: "relu", nn.Tanh: "tanh"}
    while i < len(children):
        m = children[i]
        following = type(children[i + 1]) if i + 1 < len(children) else None
        fused = following in activations
        activation = activations.get(following)
        if isinstance(m, nn.Conv2d):
            problems = [f"{name}={getattr(m, name)}" for name, ok in (("dilation", (1, 1)),)
                        if tuple(getattr(m, name)) != ok]
            if m.groups != 1:
                problems.append(f"groups={m.groups}")
            if m.padding_mode != "zeros":
                problems.append(f"padding_mode={m.padding_mode!r}")
            if len(set(m.stride)) != 1:
                problems.append(f"stride={m.stride}")
            if problems:
                raise ValueError(f"layer {i} ({m}): fastcnn's Conv2D has no dilation or groups, "
                                 f"zero padding and one stride; this one has "
                                 f"{', '.join(problems)}")
            padding = m.padding if isinstance(m.padding, str) else tuple(m.padding)
            layers.append(Conv2D(m.in_channels, m.out_channels, tuple(m.kernel_size),
                                 activation=activation, algorithm=algorithm, stride=m.stride[0],
                                 padding=padding, bias=m.bias is not None))
            # correlation -> true convolution: rotate back
            weights.append({"weight": m.weight.detach().cpu().numpy()[:, :, ::-1, ::-1]})
            if m.bias is not None:
                weights[-1]["bias"] = m.bias.detach().cpu().numpy()
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            if not m.affine or not m.track_running_stats or m.momentum is None:
                raise ValueError(f"layer {i} ({m}): fastcnn's batch norm has a scale and shift "
                                 f"(affine) and running estimates with a momentum")
            kind = BatchNorm2D if isinstance(m, nn.BatchNorm2d) else BatchNorm1D
            layers.append(kind(m.num_features, momentum=m.momentum, eps=m.eps))
            weights.append({"weight": m.weight.detach().cpu().numpy(),
                            "bias": m.bias.detach().cpu().numpy(),
                            "running_mean": m.running_mean.detach().cpu().numpy(),
                            "running_var": m.running_var.detach().cpu().numpy()})
            fused = False
        elif isinstance(m, nn.Dropout):
            layers.append(Dropout(m.p))
            weights.append({})
            fused = False
        elif isinstance(m, nn.Linear):
            if m.bias is None:
                raise ValueError(f"layer {i} ({m}): fastcnn's Dense has a bias; this one has none")
            layers.append(Dense(m.in_features, m.out_features, activation=activation))
            weights.append({"weight": m.weight.detach().cpu().numpy(),
                            "bias": m.bias.detach().cpu().numpy()})
        elif isinstance(m, nn.AvgPool2d):
            k = _pair(m.kernel_size)
            s = _pair(m.stride if m.stride is not None else m.kernel_size)
            if k[0] != k[1] or s != k or _pair(m.padding) != (0, 0) or m.ceil_mode:
                raise ValueError(f"layer {i} ({m}): fastcnn's MeanPool2D pools square blocks with "
                                 f"stride equal to their size, no padding, no ceil_mode")
            layers.append(MeanPool2D(k[0]))
            weights.append({})
            fused = False
        elif isinstance(m, nn.MaxPool2d):
            k = _pair(m.kernel_size)
            st = _pair(m.stride if m.stride is not None else m.kernel_size)
            if k[0] != k[1] or st[0] != st[1] or _pair(m.padding) != (0, 0) or m.ceil_mode \
                    or _pair(m.dilation) != (1, 1):
                raise ValueError(f"layer {i} ({m}): fastcnn's MaxPool2D pools square windows with "
                                 f"one stride, no padding, no dilation, no ceil_mode")
            layers.append(MaxPool2D(k[0], st[0]))
            weights.append({})
            fused = False
        elif type(m) in activations:
            layers.append({"sigmoid": Sigmoid, "relu": ReLU, "tanh": Tanh}[activations[type(m)]]())
            weights.append({})
            fused = False
        elif isinstance(m, nn.Softmax):
            if m.dim not in (1, -1):
                raise ValueError(f"layer {i} ({m}): only a softmax over the features (dim=1)")
            layers.append(Softmax())
            weights.append({})
            fused = False
        elif isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                raise ValueError(f"layer {i} ({m}): only Flatten(start_dim=1, end_dim=-1)")
            layers.append(Flatten())
            weights.append({})
            fused = False
        else:
            raise ValueError(f"layer {i} ({type(m).__name__}) has no fastcnn equivalent; "
                             f"fastcnn has Conv2d, BatchNorm2d, BatchNorm1d, Dropout, AvgPool2d, "
                             f"MaxPool2d, Sigmoid, ReLU, Tanh, Softmax, Flatten and Linear")
        i += 2 if fused else 1
    model = Sequential(layers, input_shape=input_shape, dtype=dtype, loss=loss)
    for layer, values in zip(layers, weights):
        for name, value in values.items():
            (layer.buffers if name in layer.buffers else layer.params)[name][...] = value
    return model


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)
