"""The plots build and write their files (pictures are not compared)."""

import os

import numpy as np
import pytest

import fastcnn

pytest.importorskip("matplotlib")
from fastcnn import plots  # noqa: E402


@pytest.fixture
def trained(rng):
    x, y = rng.random((40, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 40)
    model = fastcnn.seed_cnn()
    history = model.fit(x, y, epochs=2, batch_size=10, progress=False, validation_data=(x, y))
    return model, history, x, y


def colour_scales(fig):
    return [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]


def test_each_plot(trained):
    model, history, x, y = trained
    curve = plots.learning_curve(history)
    assert len(curve.axes) == 2     # loss, and test error on the right
    assert curve.axes[0].get_title().startswith("Learning curve: 2 epochs, 8 batches; smoothed")
    assert curve.axes[0].get_ylabel() == "squared error, eq. (13)"
    assert plots.learning_curve(history, loss="cross_entropy").axes[0].get_ylabel() == \
        "softmax cross-entropy"
    # every picture of values has its colour scale
    for fig, panels, scales in [(plots.kernels(model, "C1"), 6, 1),
                                (plots.kernels(model, "C2"), 72, 1),
                                (plots.feature_maps(model, x[0, 0]), 5 * 12, 5),
                                (plots.confusion_matrix(model, x, y), 1, 1)]:
        assert len(colour_scales(fig)) == scales
        assert len(fig.axes) == panels + scales
    with pytest.raises(ValueError, match="not a convolution"):
        plots.kernels(model, "S1")
    with pytest.raises(ValueError, match="no layer named 'C9'"):
        plots.kernels(model, "C9")


def test_plots_name_the_classes(trained):
    model, _, x, y = trained
    model.classes = fastcnn.datasets.CLASS_NAMES["fashion-mnist"]
    best = int(model.predict(x[:1])[0])
    title = plots.feature_maps(model, x[0, 0])._suptitle.get_text()
    assert f"the network's answer is {model.classes[best]} (output " in title
    ax = plots.confusion_matrix(model, x, y).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == model.classes


def test_save_all(trained, tmp_path):
    model, history, x, y = trained
    paths = plots.save_all(model, history, x, y, tmp_path / "plots")
    names = sorted(os.path.basename(p) for p in paths)
    assert names == ["confusion_matrix.png", "feature_maps.png", "kernels_C1.png",
                     "kernels_C2.png", "learning_curve.png"]
    for p in paths:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_activations_are_the_layers_outputs(trained):
    model, _, x, _ = trained
    acts = model.activations(x[:3])
    assert list(acts) == ["C1", "S1", "C2", "S2", "F", "FC"]
    assert [a.shape[1:] for a in acts.values()] == [layer.output_shape for layer in model.layers]
    np.testing.assert_array_equal(acts["FC"], model.forward(x[:3]))


def test_a_colour_image_is_shown_in_colour():
    from fastcnn import models
    model = models.lenet5(input_shape=(3, 32, 32))
    image = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
    fig = plots.feature_maps(model, image)
    shown = fig.axes[0].get_images()[0].get_array()
    assert shown.shape == (32, 32, 3)
    np.testing.assert_allclose(shown, np.moveaxis(image, 0, -1))
    assert len(colour_scales(fig)) == 4  # one per layer of maps, none for the picture
