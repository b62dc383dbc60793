"""fastcnn <-> PyTorch: the same outputs and gradients both ways."""

import numpy as np
import pytest

import fastcnn
from fastcnn import interop
from helpers import import_torch


def test_to_torch_same_outputs_and_gradients(rng, dtype):
    torch = import_torch()
    model = fastcnn.seed_cnn(seed=3, dtype=dtype.name)
    for p in model.params.values():
        p += rng.uniform(-0.1, 0.1, p.shape).astype(dtype)
    net = interop.to_torch(model)
    assert isinstance(net, torch.nn.Sequential)
    x = rng.random((5, 1, 28, 28)).astype(dtype)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    out = net(torch.from_numpy(x))
    np.testing.assert_allclose(out.detach().numpy(), model.forward(x), rtol=tol, atol=tol)
    labels = rng.integers(0, 10, 5)
    target = torch.nn.functional.one_hot(torch.from_numpy(labels), 10).to(out.dtype)
    (0.5 * ((out - target) ** 2).sum() / 5).backward()
    model.backprop(x, labels)
    np.testing.assert_allclose(net[0].weight.grad.numpy()[:, :, ::-1, ::-1],
                               model.grads["C1.weight"], rtol=1e-4 if dtype == np.float32 else 1e-10,
                               atol=1e-7)


def test_from_torch_round_trip_and_other_networks(rng):
    torch = import_torch()
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(3, 4, (3, 2)), nn.Sigmoid(), nn.AvgPool2d(2), nn.Conv2d(4, 5, 3),
                        nn.Sigmoid(), nn.Flatten(), nn.Linear(5 * 3 * 4, 7), nn.Sigmoid(),
                        nn.Linear(7, 3)).double()
    model = interop.from_torch(net, input_shape=(3, 12, 13))
    assert model.dtype == np.float64
    assert [type(layer).__name__ for layer in model.layers] == [
        "Conv2D", "MeanPool2D", "Conv2D", "Flatten", "Dense", "Dense"]
    assert model.layers[0].activation == "sigmoid" and model.layers[-1].activation is None
    x = rng.random((4, 3, 12, 13))
    np.testing.assert_allclose(model.forward(x), net(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-12, atol=1e-12)
    back = interop.to_torch(model)
    np.testing.assert_allclose(back(torch.from_numpy(x)).detach().numpy(), model.forward(x),
                               rtol=1e-12, atol=1e-12)
    # a float32 network becomes a float32 model
    assert interop.from_torch(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), (1, 2, 2)).dtype == np.float32


@pytest.mark.parametrize("module, match", [
    ("nn.Conv2d(1, 2, 3, dilation=2)", "dilation"),
    ("nn.Conv2d(2, 2, 3, groups=2)", "groups"),
    ("nn.Conv2d(1, 2, 3, dilation=2)", "dilation"),
    ("nn.Conv2d(1, 2, 3, padding=1, padding_mode='reflect')", "padding_mode"),
    ("nn.Conv2d(1, 2, 3, stride=(1, 2))", "stride"),
    ("nn.MaxPool2d(2, padding=1)", "no padding"),
    ("nn.LeakyReLU()", "LeakyReLU.* no fastcnn equivalent"),
    ("nn.BatchNorm2d(1, affine=False)", "affine"),
    ("nn.BatchNorm2d(1, momentum=None)", "momentum"),
    ("nn.AvgPool2d(2, stride=1)", "stride equal"),
])
def test_from_torch_names_what_it_cannot_translate(module, match):
    torch = import_torch()
    nn = torch.nn  # noqa: F841 - used by eval
    with pytest.raises(ValueError, match=match):
        interop.from_torch(torch.nn.Sequential(eval(module)), input_shape=(1, 8, 8))


def test_batch_norm_dropout_and_bias_free_convolutions_both_ways(rng):
    """vgg_mini trained a little (so its running estimates are not the
    start's) goes to PyTorch and back with the same outputs at inference;
    from_torch keeps the running estimates and takes the loss."""
    torch = import_torch()
    from fastcnn.models import vgg_mini

    model = vgg_mini(dtype="float64", normalize=(0.3, 0.35), widths=(4, 6), hidden=12, seed=1)
    x = rng.random((16, 1, 28, 28))
    model.fit(x, np.arange(16) % 10, epochs=1, batch_size=8, lr=0.01, progress=False)
    net = interop.to_torch(model).eval()
    np.testing.assert_allclose(net(torch.from_numpy(x)).detach().numpy(), model.forward(x),
                               rtol=1e-10, atol=1e-12)
    children = list(net.children())[1:]  # after the standardisation
    body = torch.nn.Sequential(*children[:-1], torch.nn.Dropout(0.25), children[-1])
    back = interop.from_torch(body, (1, 28, 28), loss="cross_entropy")
    assert back.loss == "cross_entropy"
    assert [type(layer).__name__ for layer in back.layers][:2] == ["Conv2D", "BatchNorm2D"]
    assert not back.layers[0].bias and isinstance(back.layers[-2], fastcnn.Dropout)
    for ours in ("running_mean", "running_var"):
        np.testing.assert_array_equal(back.layers[1].buffers[ours], model.buffers[f"BN1.{ours}"])
    standardised = (x - 0.3) / 0.35
    np.testing.assert_allclose(back.forward(standardised), model.forward(x), rtol=1e-12,
                               atol=1e-12)
