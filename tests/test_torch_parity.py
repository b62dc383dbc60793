"""seed_cnn against PyTorch autograd on the equivalent network.

PyTorch's Conv2d is a correlation, so its weight is our kernel rotated by 180
degrees (API.md); everything else maps one to one. Skipped when torch is not
installed, failing instead under FASTCNN_REQUIRE_DATA=1.
"""

import numpy as np
import pytest

import fastcnn
from helpers import import_torch


def torch_seed_cnn(torch, params):
    nn = torch.nn
    net = nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.Sigmoid(), nn.AvgPool2d(2),
        nn.Conv2d(6, 12, 5), nn.Sigmoid(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(192, 10), nn.Sigmoid(),
    ).double()
    with torch.no_grad():
        for layer, name in ((net[0], "C1"), (net[3], "C2")):
            layer.weight.copy_(torch.from_numpy(params[f"{name}.weight"][:, :, ::-1, ::-1].copy()))
            layer.bias.copy_(torch.from_numpy(params[f"{name}.bias"]))
        net[7].weight.copy_(torch.from_numpy(params["FC.weight"]))
        net[7].bias.copy_(torch.from_numpy(params["FC.bias"]))
    return net


def torch_grads(torch, net):
    g = {"C1.weight": net[0].weight.grad, "C1.bias": net[0].bias.grad,
         "C2.weight": net[3].weight.grad, "C2.bias": net[3].bias.grad,
         "FC.weight": net[7].weight.grad, "FC.bias": net[7].bias.grad}
    g = {k: v.numpy() for k, v in g.items()}
    for k in ("C1.weight", "C2.weight"):
        g[k] = g[k][:, :, ::-1, ::-1]
    return g


@pytest.mark.parametrize("batch", [1, 50])
def test_gradients_equal_autograd(batch):
    torch = import_torch()
    rng = np.random.default_rng(batch)
    model = fastcnn.seed_cnn(seed=batch, dtype="float64")
    for v in model.params.values():
        v += rng.uniform(-0.1, 0.1, v.shape)
    x = rng.random((batch, 1, 28, 28))
    labels = rng.integers(0, 10, batch)

    loss = model.backprop(x, labels)

    net = torch_seed_cnn(torch, model.params)
    yhat = net(torch.from_numpy(x))
    target = torch.nn.functional.one_hot(torch.from_numpy(labels), 10).double()
    torch_loss = 0.5 * ((yhat - target) ** 2).sum() / batch  # eq. (13), batch mean
    torch_loss.backward()

    np.testing.assert_allclose(model.forward(x), yhat.detach().numpy(), rtol=1e-12)
    assert loss == pytest.approx(torch_loss.item(), rel=1e-12)
    expected = torch_grads(torch, net)
    for name, g in model.grads.items():
        np.testing.assert_allclose(g, expected[name], rtol=1e-10, atol=1e-14, err_msg=name)


def test_training_steps_track_torch_sgd():
    """Ten SGD steps (alpha 1, batch 50) from the same start stay together."""
    torch = import_torch()
    rng = np.random.default_rng(0)
    model = fastcnn.seed_cnn(seed=0, dtype="float64")
    net = torch_seed_cnn(torch, model.params)
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    for _ in range(10):
        x = rng.random((50, 1, 28, 28))
        labels = rng.integers(0, 10, 50)
        model.backprop(x, labels)
        fastcnn.SGD(model, lr=1.0).step()
        opt.zero_grad()
        target = torch.nn.functional.one_hot(torch.from_numpy(labels), 10).double()
        (0.5 * ((net(torch.from_numpy(x)) - target) ** 2).sum() / 50).backward()
        opt.step()
    np.testing.assert_allclose(model.params["C1.weight"],
                               net[0].weight.detach().numpy()[:, :, ::-1, ::-1], rtol=1e-9)
    np.testing.assert_allclose(model.params["FC.weight"], net[7].weight.detach().numpy(), rtol=1e-9)
