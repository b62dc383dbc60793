"""Moving models between fastcnn and PyTorch (torch is needed only here).

    to_torch(model)                       -> torch.nn.Sequential computing the same outputs
    from_torch(module, input_shape, ...)  -> fastcnn.Sequential computing the same outputs

The one difference to mind: fastcnn's convolution is the true convolution of
the paper, eq. (5), and PyTorch's Conv2d a correlation, so a kernel moves
rotated by 180 degrees. Layers map one to one:

    Conv2D(activation="sigmoid")   Conv2d + Sigmoid
    MeanPool2D(s)                  AvgPool2d(s)          (stride s, no padding)
    Sigmoid                        Sigmoid
    Flatten                        Flatten
    Dense(activation="sigmoid")    Linear + Sigmoid

from_torch accepts exactly these (Conv2d with stride 1, no padding, no
dilation, no groups; a Sigmoid right after a Conv2d or Linear is fused into
it) and names anything else it cannot translate.
"""

import numpy as np

from fastcnn.layers import Conv2D, Dense, Flatten, MeanPool2D, Sigmoid
from fastcnn.model import Sequential


def _torch():
    try:
        import torch
    except ImportError:
        raise ImportError("fastcnn.interop needs PyTorch: pip install torch") from None
    return torch


def to_torch(model):
    """A torch.nn.Sequential with model's layers and parameters (copied), in
    model's dtype, that computes the same outputs for the same NCHW input."""
    torch = _torch()
    nn = torch.nn
    dtype = torch.float32 if model.dtype == np.float32 else torch.float64
    modules = []
    for layer in model.layers:
        if isinstance(layer, Conv2D):
            conv = nn.Conv2d(layer.in_maps, layer.out_maps, layer.kernel_size, dtype=dtype)
            with torch.no_grad():
                # true convolution -> correlation: rotate the kernels by 180 degrees
                conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(
                    layer.params["weight"][:, :, ::-1, ::-1])))
                conv.bias.copy_(torch.from_numpy(layer.params["bias"].copy()))
            modules.append(conv)
            if layer.activation == "sigmoid":
                modules.append(nn.Sigmoid())
        elif isinstance(layer, MeanPool2D):
            modules.append(nn.AvgPool2d(layer.scale))
        elif isinstance(layer, Sigmoid):
            modules.append(nn.Sigmoid())
        elif isinstance(layer, Flatten):
            modules.append(nn.Flatten())
        elif isinstance(layer, Dense):
            linear = nn.Linear(layer.in_features, layer.out_features, dtype=dtype)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(layer.params["weight"].copy()))
                linear.bias.copy_(torch.from_numpy(layer.params["bias"].copy()))
            modules.append(linear)
            if layer.activation == "sigmoid":
                modules.append(nn.Sigmoid())
        else:  # pragma: no cover - every fastcnn layer is handled above
            raise ValueError(f"to_torch has no PyTorch equivalent for {layer!r}")
    return nn.Sequential(*modules)


def from_torch(module, input_shape, dtype=None, algorithm="auto"):
    """A fastcnn Sequential with module's layers and parameters (copied).

    Parameters
    ----------
    module : torch.nn.Sequential (or a single supported module)
    input_shape : (C, H, W)
        The shape of one input image (PyTorch modules do not record it).
    dtype : "float32" or "float64", optional
        Default: that of module's parameters.
    algorithm : str
        For the Conv2D layers (see fastcnn.conv_algorithms).
    """
    torch = _torch()
    nn = torch.nn
    children = list(module.children()) if isinstance(module, nn.Sequential) else [module]
    if dtype is None:
        params = list(module.parameters())
        dtype = "float64" if params and params[0].dtype == torch.float64 else "float32"
    layers, weights, i = [], [], 0
    while i < len(children):
        m = children[i]
        fused = i + 1 < len(children) and isinstance(children[i + 1], nn.Sigmoid)
        activation = "sigmoid" if fused else None
        if isinstance(m, nn.Conv2d):
            problems = [f"{name}={getattr(m, name)}" for name, ok in (
                ("stride", (1, 1)), ("padding", (0, 0)), ("dilation", (1, 1)))
                if tuple(getattr(m, name)) != ok]
            if m.groups != 1:
                problems.append(f"groups={m.groups}")
            if m.bias is None:
                problems.append("bias=False")
            if problems:
                raise ValueError(f"layer {i} ({m}): fastcnn's Conv2D has stride 1, no padding, "
                                 f"no dilation, no groups and a bias; this one has "
                                 f"{', '.join(problems)}")
            layers.append(Conv2D(m.in_channels, m.out_channels, tuple(m.kernel_size),
                                 activation=activation, algorithm=algorithm))
            # correlation -> true convolution: rotate back
            weights.append({"weight": m.weight.detach().cpu().numpy()[:, :, ::-1, ::-1],
                            "bias": m.bias.detach().cpu().numpy()})
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
        elif isinstance(m, nn.Sigmoid):
            layers.append(Sigmoid())
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
                             f"fastcnn has Conv2d, AvgPool2d, Sigmoid, Flatten and Linear")
        i += 2 if fused else 1
    model = Sequential(layers, input_shape=input_shape, dtype=dtype)
    for layer, values in zip(layers, weights):
        for name, value in values.items():
            layer.params[name][...] = value
    return model


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)
