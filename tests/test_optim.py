"""Optimisers and schedules: PyTorch's rules step for step, their state kept
across checkpoints, and LeNet-5's gradients against autograd."""

import numpy as np
import pytest

import fastcnn
from fastcnn.optim import SGD, Adam, CosineLR, StepLR
from helpers import import_torch


def tiny_model():
    return fastcnn.Sequential([fastcnn.Flatten(), fastcnn.Dense(6, 4, activation="tanh"),
                               fastcnn.Dense(4, 3)], input_shape=(1, 2, 3), dtype="float64",
                              seed=1, loss="cross_entropy")


def run_both(make_ours, make_torch, steps=6):
    """Feed the same gradients to a fastcnn optimiser and a torch one."""
    torch = import_torch()
    model = tiny_model()
    params = [torch.tensor(p.copy(), requires_grad=True) for p in model.params.values()]
    ours, theirs = make_ours(model), make_torch(torch, params)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        for g, tp in zip(model.grads.values(), params):
            g[...] = rng.standard_normal(g.shape)
            tp.grad = torch.tensor(g.copy())
        ours.step()
        theirs.step()
    for p, tp in zip(model.params.values(), params):
        np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kwargs", [
    dict(lr=0.1), dict(lr=0.1, momentum=0.9), dict(lr=0.05, momentum=0.8, nesterov=True),
    dict(lr=0.1, weight_decay=0.01), dict(lr=0.1, momentum=0.9, weight_decay=0.05),
])
def test_sgd_matches_torch(kwargs):
    run_both(lambda m: SGD(m, **kwargs), lambda torch, ps: torch.optim.SGD(ps, **kwargs))


@pytest.mark.parametrize("kwargs, torch_cls", [
    (dict(lr=1e-3), "Adam"), (dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6), "Adam"),
    (dict(lr=0.01, weight_decay=0.1), "Adam"),
    (dict(lr=0.01, weight_decay=0.1, decoupled=True), "AdamW"),
])
def test_adam_matches_torch(kwargs, torch_cls):
    theirs = {k: v for k, v in kwargs.items() if k != "decoupled"}
    run_both(lambda m: Adam(m, **kwargs),
             lambda torch, ps: getattr(torch.optim, torch_cls)(ps, foreach=False, **theirs))


def test_schedules_match_torch():
    torch = import_torch()
    for ours, make in [(StepLR(3, 0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.5)),
                       (CosineLR(8, 0.01), lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(
                           o, T_max=8, eta_min=0.01))]:
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.4)
        sched = make(opt)
        for epoch in range(1, 10):
            assert ours(epoch, 0.4) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
            opt.step()
            sched.step()


def test_fit_uses_the_optimizer_and_schedule(rng):
    x, y = rng.random((20, 1, 2, 3)), rng.integers(0, 3, 20)
    model = tiny_model()
    opt = Adam(model, lr=0.01)
    seen = []

    class Watch(fastcnn.callbacks.Callback):
        def on_epoch_begin(self, epoch, m):
            seen.append(opt.lr)

    model.fit(x, y, epochs=4, batch_size=5, optimizer=opt, schedule=StepLR(2, 0.1),
              callbacks=[Watch()], progress=False)
    assert seen == pytest.approx([0.01, 0.01, 0.001, 0.001])
    assert opt.t == 16
    with pytest.raises(ValueError, match="learning rate to the optimizer"):
        model.fit(x, y, batch_size=5, lr=0.1, optimizer=opt, progress=False)
    with pytest.raises(ValueError, match="made for this model"):
        tiny_model().fit(x, y, batch_size=5, optimizer=opt, progress=False)
    with pytest.raises(TypeError, match="schedule"):
        model.fit(x, y, batch_size=5, optimizer=opt, schedule=lambda e, lr: lr, progress=False)


def test_resume_with_adam_and_a_schedule_is_bit_for_bit(rng, tmp_path):
    x, y = rng.random((30, 1, 2, 3)), rng.integers(0, 3, 30)
    straight = tiny_model()
    straight.fit(x, y, epochs=5, batch_size=7, optimizer=Adam(straight, lr=0.02),
                 schedule=CosineLR(5), progress=False)
    first = tiny_model()
    first.fit(x, y, epochs=2, batch_size=7, optimizer=Adam(first, lr=0.02), schedule=CosineLR(5),
              progress=False, checkpoint_dir=tmp_path)
    later = tiny_model()
    later.fit(x, y, epochs=5, batch_size=7, optimizer=Adam(later, lr=0.02), schedule=CosineLR(5),
              progress=False, checkpoint_dir=tmp_path, resume=True)
    for k in straight.params:
        np.testing.assert_array_equal(later.params[k], straight.params[k])
    other = tiny_model()
    with pytest.raises(ValueError, match="optimizer or its settings"):
        other.fit(x, y, epochs=6, batch_size=7, optimizer=SGD(other, lr=0.02),
                  schedule=CosineLR(5), progress=False, checkpoint_dir=tmp_path, resume=True)


@pytest.mark.parametrize("make, match", [
    (lambda m: SGD(m, momentum=1.0), "momentum must be in"),
    (lambda m: SGD(m, nesterov=True), "needs a momentum"),
    (lambda m: SGD(m, weight_decay=-1), "weight_decay must be >= 0"),
    (lambda m: Adam(m, betas=(0.9,)), "betas"),
    (lambda m: Adam(m, eps=0), "eps"),
    (lambda m: Adam(m, lr=-1), "lr must be"),
    (lambda m: StepLR(0), "step_size"),
    (lambda m: CosineLR(3, min_lr=-1), "min_lr"),
])
def test_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make(tiny_model())


def test_lenet5_gradients_equal_autograd(rng):
    torch = import_torch()
    from fastcnn import interop
    from fastcnn.models import lenet5

    for activation, pooling in [("relu", "max"), ("tanh", "mean")]:
        model = lenet5(seed=2, dtype="float64", activation=activation, pooling=pooling)
        net = interop.to_torch(model)
        x = rng.standard_normal((6, 1, 28, 28))
        labels = rng.integers(0, 10, 6)
        loss = model.backprop(x, labels)
        out = net(torch.from_numpy(x))
        tl = torch.nn.functional.cross_entropy(out, torch.from_numpy(labels))
        tl.backward()
        assert loss == pytest.approx(tl.item(), rel=1e-12)
        grads = [p.grad.numpy() for p in net.parameters()]
        for (name, g), tg in zip(model.grads.items(), grads):
            if g.ndim == 4:
                tg = tg[:, :, ::-1, ::-1]
            np.testing.assert_allclose(g, tg, rtol=1e-9, atol=1e-13, err_msg=name)


def test_optimizers_by_name():
    """optim.create: the names and default rates the command line and the
    sweeps use, defined once."""
    from fastcnn import optim

    m = tiny_model()
    sgd, momentum, adam = (optim.create(name, m) for name in ("sgd", "momentum", "adam"))
    assert type(sgd) is SGD and sgd.lr == 1.0 and sgd.momentum == 0
    assert type(momentum) is SGD and momentum.lr == 0.1 and momentum.momentum == 0.9
    assert type(adam) is Adam and adam.lr == 1e-3
    assert optim.create("sgd", m, lr=0.3, momentum=0.5, weight_decay=1e-4).config() == \
        SGD(m, lr=0.3, momentum=0.5, weight_decay=1e-4).config()
    with pytest.raises(ValueError, match="optimizer must be one of"):
        optim.create("rmsprop", m)
    with pytest.raises(ValueError, match="Adam has betas"):
        optim.create("adam", m, momentum=0.9)


@pytest.mark.parametrize("make", [
    lambda m: fastcnn.SGD(m, lr=0.1, momentum=0.9),
    lambda m: fastcnn.Adam(m, lr=1e-3),
])
def test_a_pickled_optimizer_still_steps_its_model(make):
    """Pickled together, model and optimiser stay linked: a step after
    unpickling changes the unpickled model's parameters, as the original's."""
    import pickle
    rng = np.random.default_rng(0)
    x, y = rng.random((8, 1, 28, 28)), rng.integers(0, 10, 8)
    model = fastcnn.seed_cnn()
    opt = make(model)
    model.backprop(x, y)
    opt.step()
    model2, opt2 = pickle.loads(pickle.dumps((model, opt)))
    assert opt2.model is model2
    for m, o in ((model, opt), (model2, opt2)):
        m.backprop(x, y)
        o.step()
    for name in model.params:
        np.testing.assert_array_equal(model.params[name], model2.params[name])
