"""What a new user meets first: fit's default optimizer per model, what fit
shows (verbose, in a terminal, a log or Jupyter), the warning when a run
learns nothing, and class names kept with the model."""

import os
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

import fastcnn
from fastcnn import models, optim
from fastcnn.callbacks import NotLearningWarning, resolve_verbose
from fastcnn.layers import Dense, Flatten

OUTSIDE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def learnable(n=400, seed=0):
    """Images whose class is the brightest of ten horizontal bands."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = rng.random((n, 1, 28, 28)).astype(np.float32) * 0.3
    for i, c in enumerate(y):
        x[i, 0, 2 * c + 4 : 2 * c + 6] += 0.7
    return x, y


# ------------------------------------------------------------ the default optimizer
@pytest.mark.parametrize("build, expected", [
    (fastcnn.seed_cnn, ("sgd", 1.0)),
    (models.lenet5, ("adam", 1e-3)),
    (models.vgg_mini, ("momentum", 0.1)),
])
def test_builders_name_their_optimizer(build, expected):
    model = build()
    assert model.default_optimizer == expected
    assert f"fit without an optimizer trains with: {expected[0]}, lr {expected[1]:g}" in \
        model.summary()


def test_custom_models_default_by_loss():
    mse = fastcnn.Sequential([Flatten(), Dense(4, 3, activation="sigmoid")], (1, 2, 2))
    ce = fastcnn.Sequential([Flatten(), Dense(4, 3)], (1, 2, 2), loss="cross_entropy")
    assert mse.default_optimizer == ("sgd", 1.0) and ce.default_optimizer == ("adam", 1e-3)
    own = fastcnn.Sequential([Flatten(), Dense(4, 3)], (1, 2, 2), loss="cross_entropy",
                             default_optimizer=("momentum", 0.05))
    assert own.default_optimizer == ("momentum", 0.05)
    for bad, error in [("rmsprop", ValueError), (("adam", -1), ValueError), (3, TypeError),
                       (("adam", "fast"), TypeError)]:
        with pytest.raises(error, match="default_optimizer"):
            fastcnn.Sequential([Flatten(), Dense(4, 3)], (1, 2, 2), default_optimizer=bad)


def test_fit_without_optimizer_uses_the_models_own():
    """lenet5().fit(x, y) learns (Adam 1e-3), as the command line trains it;
    the same fit with the optimizer spelled out gives the same bits."""
    x, y = learnable()
    a = models.lenet5(seed=3)
    a.fit(x, y, epochs=2, batch_size=40, seed=1, progress=False)
    b = models.lenet5(seed=3)
    b.fit(x, y, epochs=2, batch_size=40, seed=1, progress=False,
          optimizer=optim.Adam(b, lr=1e-3))
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    assert a.evaluate(x, y) < 0.5
    # lr alone still means the paper's plain SGD at that alpha
    c = models.lenet5(seed=3)
    c.fit(x, y, epochs=1, batch_size=40, seed=1, progress=False, lr=0.05)
    d = models.lenet5(seed=3)
    d.fit(x, y, epochs=1, batch_size=40, seed=1, progress=False, optimizer=optim.SGD(d, lr=0.05))
    for k in c.params:
        np.testing.assert_array_equal(c.params[k], d.params[k])


def test_default_optimizer_survives_save_load_and_pickle(tmp_path):
    model = fastcnn.Sequential([Flatten(), Dense(4, 3)], (1, 2, 2), loss="cross_entropy",
                               default_optimizer=("momentum", 0.05))
    model.save(tmp_path / "m.npz")
    assert fastcnn.load(tmp_path / "m.npz").default_optimizer == ("momentum", 0.05)
    assert pickle.loads(pickle.dumps(model)).default_optimizer == ("momentum", 0.05)


# ------------------------------------------------------------ verbose
def test_verbose_resolution(monkeypatch):
    assert resolve_verbose("auto", progress=False) == 0
    assert resolve_verbose(2, progress=False) == 2  # asked for explicitly
    assert resolve_verbose(True) == 1 and resolve_verbose(False) == 0
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    assert resolve_verbose("auto") == 2  # a log: a line per epoch
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert resolve_verbose("auto") == 1
    with pytest.raises(ValueError, match="verbose must be one of"):
        resolve_verbose(3)


@pytest.mark.parametrize("verbose", [0, 1, 2])
def test_what_fit_shows(verbose, capsys):
    x, y = learnable(60)
    fastcnn.seed_cnn().fit(x, y, epochs=2, batch_size=20, verbose=verbose,
                           validation_data=(x[:10], y[:10]))
    out, err = capsys.readouterr()
    lines = out.splitlines()
    if verbose == 2:
        assert len(lines) == 2 and lines[1].startswith("epoch 2/2: loss ")
        assert "validation error" in lines[1] and "images/s" in lines[1] and err == ""
    elif verbose == 1:
        assert out == "" and "epoch 1/2" in err and "epoch 2/2" in err
    else:
        assert out == "" and err == ""


def test_no_terminal_gives_a_line_per_epoch_by_default():
    """In a child process whose stderr is a pipe: lines, no bar."""
    code = ("import numpy as np, fastcnn\n"
            "x = np.random.default_rng(0).random((40, 1, 28, 28)).astype('float32')\n"
            "fastcnn.seed_cnn().fit(x, np.arange(40) % 10, epochs=2, batch_size=20)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       cwd="/")
    assert r.returncode == 0, r.stderr
    assert [line.split(":")[0] for line in r.stdout.splitlines()] == ["epoch 1/2", "epoch 2/2"]
    assert "img/s" not in r.stderr


def test_jupyter_without_ipywidgets_draws_a_bar_and_warns_nothing():
    """tqdm.auto in a (pretended) Jupyter kernel without ipywidgets: a text
    bar, no 'IProgress not found' warning, with warnings as errors."""
    pytest.importorskip("tqdm")
    code = (
        "import sys, types, warnings\n"
        "warnings.simplefilter('error')\n"
        "sys.modules['ipywidgets'] = None  # not installed\n"
        "shell = type('ZMQInteractiveShell', (), {})()\n"
        "ipython = types.ModuleType('IPython'); ipython.get_ipython = lambda: shell\n"
        "sys.modules.update({'IPython': ipython, 'ipykernel': types.ModuleType('ipykernel'),\n"
        "                    'ipykernel.zmqshell': types.ModuleType('ipykernel.zmqshell')})\n"
        "import numpy as np, fastcnn\n"
        "x = np.random.default_rng(0).random((40, 1, 28, 28)).astype('float32')\n"
        "fastcnn.seed_cnn().fit(x, np.arange(40) % 10, epochs=1, batch_size=20)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       cwd="/")
    assert r.returncode == 0, r.stderr
    assert "epoch 1/1" in r.stderr and "IProgress" not in r.stderr and r.stdout == ""


# ------------------------------------------------------------ chance level
def test_a_run_at_chance_level_warns_once():
    """LeNet-5 with the paper's alpha = 1: the ReLUs die and the loss sits at
    ln 10 (the issue's example)."""
    x, y = learnable(600)
    model = models.lenet5()
    with pytest.warns(NotLearningWarning, match="chance level") as caught:
        model.fit(x, y, epochs=2, batch_size=50, lr=1.0, progress=False)
    assert len(caught) == 1
    text = str(caught[0].message)
    assert "learning rate 10x smaller than 1 (SGD)" in text
    assert "trains best with adam at lr 0.001" in text
    assert caught[0].filename == __file__  # points at the caller, not fastcnn's loop


def test_saturated_outputs_are_named():
    x, y = learnable(600)
    with pytest.warns(NotLearningWarning, match="above that level, as when the outputs saturate"):
        fastcnn.seed_cnn().fit(x, y, epochs=1, batch_size=50, lr=1000.0, progress=False)


def test_a_learning_run_does_not_warn():
    x, y = learnable(600)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotLearningWarning)
        models.lenet5().fit(x, y, epochs=1, batch_size=50, progress=False)


def test_chance_level_of_unbalanced_soft_targets():
    """The level is the loss of outputting the class frequencies p:
    -sum p ln p for the cross-entropy, 1/2 sum p (1 - p) for squared error."""
    from fastcnn.callbacks import ChanceLevelCheck
    from fastcnn.training import Batches

    y = np.array([0] * 30 + [1] * 10)
    x = np.zeros((40, 1, 2, 2), np.float32)
    for loss, expected in [("cross_entropy", -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))),
                           ("mse", 0.5 * (0.75 * 0.25 + 0.25 * 0.75))]:
        model = fastcnn.Sequential([Flatten(), Dense(4, 3, activation=None if loss != "mse"
                                                     else "sigmoid")], (1, 2, 2), loss=loss)
        check = ChanceLevelCheck()
        check.run = type("Run", (), {"batches": Batches(model, x, y, 10, 0)})()
        check.on_train_begin(model, None)
        assert check.chance == pytest.approx(expected)


# ------------------------------------------------------------ class names
def test_classes_are_checked_and_kept(tmp_path):
    model = fastcnn.seed_cnn()
    assert model.classes is None and model.class_name(3) == "3"
    names = fastcnn.datasets.CLASS_NAMES["fashion-mnist"]
    model.classes = names
    assert model.classes == names and model.class_name(9) == "Ankle boot"
    assert "classes: T-shirt/top, Trouser" in model.summary()
    model.save(tmp_path / "m.npz")
    assert fastcnn.load(tmp_path / "m.npz").classes == names
    assert pickle.loads(pickle.dumps(model)).classes == names
    for bad, error, match in [(names[:9], ValueError, "10 classes, got 9"),
                              ("abcdefghij", TypeError, "list of class names"),
                              (["a"] * 10, ValueError, "'a' appears twice")]:
        with pytest.raises(error, match=match):
            model.classes = bad
    model.classes = None
    assert model.classes is None


def test_resume_ignores_class_names_and_names_the_difference(tmp_path):
    x, y = learnable(60)
    a = fastcnn.seed_cnn()
    a.fit(x, y, epochs=1, batch_size=20, progress=False, checkpoint_dir=tmp_path)
    b = fastcnn.seed_cnn()
    b.classes = [str(i) for i in range(10)]
    b.fit(x, y, epochs=2, batch_size=20, progress=False, checkpoint_dir=tmp_path, resume=True)
    other = models.lenet5(activation="sigmoid", pooling="mean", loss="mse")
    with pytest.raises(ValueError, match=r"different architecture than this model \(layer C1 "
                                         r"\(Conv2D\): padding the default there, 2 here\)") as e:
        other.fit(x, y, epochs=3, batch_size=20, progress=False, checkpoint_dir=tmp_path,
                  resume=True)
    assert len(str(e.value)) < 200 + len(str(tmp_path))
