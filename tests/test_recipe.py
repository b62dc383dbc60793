"""What today's small CNNs are trained with (label smoothing, weight decay on
the weights only, a one-cycle learning rate, dropped last batches, a
validation split), each against PyTorch in float64; vgg_mini; and the
Fashion-MNIST recipe, which must reach 92% test accuracy in four epochs."""

import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import fastcnn
from fastcnn import optim, recipes
from fastcnn.models import vgg_mini
from helpers import import_torch, need
from test_datasets import write_split


def net_pair(torch, bn=True):
    """A small fastcnn model and the same network in PyTorch, same weights."""
    nn = torch.nn
    layers = [fastcnn.Conv2D(1, 4, 3, bias=False, padding=1, name="c")]
    mods = [nn.Conv2d(1, 4, 3, padding=1, bias=False)]
    if bn:
        layers.append(fastcnn.BatchNorm2D(4, name="bn"))
        mods.append(nn.BatchNorm2d(4))
    layers += [fastcnn.ReLU(), fastcnn.MaxPool2D(2), fastcnn.Flatten(), fastcnn.Dense(64, 5, name="d")]
    mods += [nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 5)]
    model = fastcnn.Sequential(layers, input_shape=(1, 8, 8), dtype="float64",
                               loss="cross_entropy", seed=3)
    net = nn.Sequential(*mods).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.from_numpy(model.params["c.weight"][:, :, ::-1, ::-1].copy()))
        net[-1].weight.copy_(torch.from_numpy(model.params["d.weight"]))
        net[-1].bias.copy_(torch.from_numpy(model.params["d.bias"]))
    return model, net


def torch_fit(torch, net, opt, x, y, epochs, batch, seed, sched=None, smoothing=0.0):
    """fit's loop in PyTorch: fastcnn's shuffle, the last partial batch dropped."""
    order_rng, losses = np.random.default_rng(seed), []
    for _ in range(epochs):
        order = order_rng.permutation(len(x))
        for b in range(len(x) // batch):
            idx = order[b * batch:(b + 1) * batch]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x[idx])),
                                                     torch.from_numpy(y[idx]),
                                                     label_smoothing=smoothing)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            losses.append(loss.item())
    return losses


@pytest.mark.parametrize("decay", ["linear", "cosine"])
def test_one_cycle_learning_rates_are_pytorchs(decay):
    torch = import_torch()
    p = [torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD(p, lr=0.3)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=0.3, total_steps=47, pct_start=0.25, div_factor=4, final_div_factor=1e300,
        anneal_strategy="linear" if decay == "linear" else "cos", cycle_momentum=False)
    theirs = []
    for _ in range(47):
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    ours = [optim.OneCycleLR(0.25, 0.25, 0.0, decay)(s, 47, 0.3) for s in range(47)]
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)


def test_the_recipes_training_equals_pytorchs(rng):
    """Batch norm, Nesterov SGD with weight decay on the weights only, a
    one-cycle learning rate per step, label smoothing and dropped last
    batches: the same losses and weights as PyTorch, step after step."""
    torch = import_torch()
    model, net = net_pair(torch)
    x, y = rng.random((44, 1, 8, 8)), rng.integers(0, 5, 44)
    sgd = optim.SGD(model, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-3,
                    decay=optim.weights_only(model))
    assert sgd.decay == ["c.weight", "d.weight"]
    history = model.fit(x, y, epochs=3, batch_size=8, optimizer=sgd, drop_last=True,
                        schedule=optim.OneCycleLR(0.2, 0.1, 0.0), label_smoothing=0.1,
                        progress=False, seed=4)
    decayed = [net[0].weight, net[-1].weight]
    rest = [net[1].weight, net[1].bias, net[-1].bias]
    opt = torch.optim.SGD([{"params": decayed, "weight_decay": 5e-3},
                           {"params": rest, "weight_decay": 0.0}],
                          lr=0.1, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=0.1, total_steps=3 * (44 // 8), pct_start=0.2, div_factor=10,
        final_div_factor=1e300, anneal_strategy="linear", cycle_momentum=False)
    losses = torch_fit(torch, net, opt, x, y, 3, 8, seed=4, sched=sched, smoothing=0.1)
    assert len(history.loss) == 15  # 44 // 8 batches an epoch
    np.testing.assert_allclose(history.loss, losses, rtol=1e-10)
    np.testing.assert_allclose(model.params["d.weight"], net[-1].weight.detach().numpy(),
                               rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(model.buffers["bn.running_var"], net[1].running_var.numpy(),
                               rtol=1e-10)


@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_with_weight_decay_on_the_weights_only(decoupled, rng):
    torch = import_torch()
    model, net = net_pair(torch, bn=False)
    x, y = rng.random((24, 1, 8, 8)), rng.integers(0, 5, 24)
    adam = optim.Adam(model, lr=0.01, weight_decay=0.1, decoupled=decoupled,
                      decay=lambda name: name.endswith("weight"))
    model.fit(x, y, epochs=2, batch_size=6, optimizer=adam, progress=False, seed=1)
    kind = torch.optim.AdamW if decoupled else torch.optim.Adam
    opt = kind([{"params": [net[0].weight, net[-1].weight], "weight_decay": 0.1},
                {"params": [net[-1].bias], "weight_decay": 0.0}], lr=0.01)
    torch_fit(torch, net, opt, x, y, 2, 6, seed=1)
    np.testing.assert_allclose(model.params["d.weight"], net[-1].weight.detach().numpy(),
                               rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(model.params["d.bias"], net[-1].bias.detach().numpy(),
                               rtol=1e-10, atol=1e-13)


def test_fit_options_are_checked():
    model = fastcnn.seed_cnn()
    x, y = np.zeros((10, 1, 28, 28), np.float32), np.zeros(10, int)
    with pytest.raises(ValueError, match="label_smoothing is for loss='cross_entropy'"):
        model.fit(x, y, label_smoothing=0.1, progress=False)
    # drop_last: whole batches only (a batch larger than the data is all of it)
    assert len(model.fit(x, y, batch_size=4, drop_last=True, progress=False).loss) == 2
    assert len(model.fit(x, y, batch_size=20, drop_last=True, progress=False).loss) == 1
    with pytest.raises(ValueError, match="not both"):
        model.fit(x, y, validation_split=0.2, validation_data=(x, y), progress=False)
    with pytest.raises(ValueError, match="no validation"):
        model.fit(x, y, validation_split=0.01, progress=False)
    with pytest.raises(ValueError, match="decay must be parameter names"):
        optim.SGD(model, weight_decay=1e-3, decay=["C1.weight", "nope"])


def test_validation_split_holds_out_the_last_images(rng):
    x, y = rng.random((50, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 50)
    a, b = fastcnn.seed_cnn(seed=1), fastcnn.seed_cnn(seed=1)
    ha = a.fit(x, y, validation_split=0.2, epochs=2, batch_size=10, progress=False)
    hb = b.fit(x[:40], y[:40], validation_data=(x[40:], y[40:]), epochs=2, batch_size=10,
               progress=False)
    assert ha.val_error == hb.val_error and ha.loss == hb.loss


def test_vgg_mini():
    model = vgg_mini(normalize=(0.3, 0.35))
    assert model.num_parameters() == 409_082
    assert [layer.name for layer in model.layers[:5]] == ["norm", "C1", "BN1", "R1", "P1"]
    assert model.layers[-2].input_shape == (1568,)
    assert vgg_mini(widths=(8, 8, 8), input_shape=(3, 32, 32)).layers[-2].input_shape == (128,)
    with pytest.raises(ValueError, match="too small"):
        vgg_mini(input_shape=(1, 2, 2))


def test_the_recipe_on_the_command_line(tmp_path):
    data = tmp_path / "data"
    write_split(data, 300, "train")
    write_split(data, 60, "test", rng=np.random.default_rng(1))
    r = subprocess.run([sys.executable, "-m", "fastcnn", "train", "--recipe", "fashion-mnist",
                        "--dataset", "mnist", "--data-dir", str(data), "--epochs", "2",
                        "--save", str(tmp_path / "m.npz"), "--no-progress"],
                       capture_output=True, text=True, timeout=600, cwd=tempfile.gettempdir())
    assert r.returncode == 0, r.stderr
    assert "epoch 2:" in r.stdout and "92% accuracy (test error <= 0.08):" in r.stdout
    model = fastcnn.load(tmp_path / "m.npz")
    assert model.layers[0].get_config()["mean"][0] > 0  # the standardisation went with it


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_the_recipe_reaches_92_percent_on_fashion_mnist_in_four_epochs(seed):
    from fastcnn import datasets

    try:
        x, y = datasets.load("fashion-mnist", "train", data_dir=os.environ.get("FASTCNN_DATA"))
        xt, yt = datasets.load("fashion-mnist", "test", data_dir=os.environ.get("FASTCNN_DATA"))
    except (FileNotFoundError, OSError) as e:
        need(False, f"Fashion-MNIST is not available: {e}")
    model, history = recipes.fashion_mnist(x, y, validation_data=(xt, yt), seed=seed,
                                           progress=False)
    assert len(history.val_error) == 4 and len(history.epoch_seconds) == 4
    assert min(history.val_error) <= 0.08, history.val_error
    assert recipes.first_epoch_below(history, 0.08) is not None
    # raw pixels in, as datasets.load gives them: the model standardises them itself
    assert model.evaluate(xt, yt) == history.val_error[-1]


def test_random_crop_and_flip_against_loops(rng):
    from fastcnn.augment import HorizontalFlip, RandomCrop

    x = rng.random((6, 2, 5, 7))
    crop, seed = RandomCrop(padding=2), 11
    out = x.copy()
    crop(out, np.random.default_rng(seed))
    dy, dx = np.random.default_rng(seed).integers(0, 5, (2, 6))
    for n in range(6):
        padded = np.zeros((2, 9, 11))
        padded[:, 2:7, 2:9] = x[n]
        np.testing.assert_array_equal(out[n], padded[:, dy[n]:dy[n] + 5, dx[n]:dx[n] + 7])
    flipped = x.copy()
    HorizontalFlip(p=0.5)(flipped, np.random.default_rng(3))
    which = np.random.default_rng(3).random(6) < 0.5
    assert 0 < which.sum() < 6
    for n in range(6):
        np.testing.assert_array_equal(flipped[n], x[n][..., ::-1] if which[n] else x[n])
    with pytest.raises(TypeError, match="augment must be"):
        fastcnn.seed_cnn().fit(np.zeros((6, 1, 28, 28)), [0] * 6, augment=[print],
                               progress=False)


def test_augmented_training_is_reproducible_and_resumes_bit_for_bit(tmp_path, rng):
    from fastcnn.augment import HorizontalFlip, RandomCrop

    x, y = rng.random((30, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 30)

    def run(epochs, seed=2, **kwargs):
        model = fastcnn.models.lenet5(seed=seed)
        model.fit(x, y, epochs=epochs, batch_size=8, optimizer=fastcnn.Adam(model), seed=5,
                  progress=False, augment=[RandomCrop(2), HorizontalFlip()], **kwargs)
        return model

    a, b = run(3), run(3)
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
    plain = fastcnn.models.lenet5(seed=2)
    plain.fit(x, y, epochs=3, batch_size=8, optimizer=fastcnn.Adam(plain), seed=5, progress=False)
    assert not np.array_equal(plain.params["OUT.bias"], a.params["OUT.bias"])
    run(1, checkpoint_dir=tmp_path)
    resumed = run(3, seed=9, checkpoint_dir=tmp_path, resume=True)
    for name in a.params:
        np.testing.assert_array_equal(resumed.params[name], a.params[name])
    with pytest.raises(ValueError, match="augment"):  # a checkpoint knows its augmentation
        model = fastcnn.models.lenet5()
        model.fit(x, y, epochs=3, batch_size=8, optimizer=fastcnn.Adam(model), seed=5,
                  progress=False, augment=[RandomCrop(3)], checkpoint_dir=tmp_path, resume=True)
