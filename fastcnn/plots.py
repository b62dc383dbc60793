"""Pictures of training and of the network (needs matplotlib:
`pip install "fastcnn[plot]"`, or `pip install ".[plot]"` in a checkout).

    learning_curve(history)          the smoothed loss DeepLearnToolbox plots, and test error
    kernels(model, "C1")             the learned kernels of a convolution layer
    feature_maps(model, image)       C1, S1, C2, S2 for one input: the paper's Figure 1
    confusion_matrix(model, x, y)    true class against predicted class
    save_all(model, history, x, y, directory)   all of them as PNG files

Each returns a matplotlib Figure (shown inline in Jupyter; `fig.savefig(path)`
writes it). They use matplotlib's object interface, not pyplot, so they
need no display and leave pyplot's state alone.
"""

import os

import numpy as np

from fastcnn._optional import install_hint


def _figure(**kwargs):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(f"fastcnn's plots need matplotlib: {install_hint('plot')}") from None
    return Figure(**kwargs)


def learning_curve(history, title=None, loss="mse"):
    """The loss of every batch (faint), its smoothed curve rL = 0.99 rL + 0.01 L
    (as DeepLearnToolbox plots it), and the validation error after each
    epoch if the history has it (right axis). loss names the y axis: the
    model's loss ("mse", eq. (13), or "cross_entropy"); the default title
    sums the run up."""
    fig = _figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    batches = np.arange(1, len(history.loss) + 1)
    ax.plot(batches, history.loss, color="0.8", linewidth=0.6, label="loss L of each batch")
    ax.plot(batches, history.smoothed_loss, color="C0", label="smoothed loss rL")
    ax.set_xlabel("batch")
    ax.set_ylabel({"mse": "squared error, eq. (13)",
                   "cross_entropy": "softmax cross-entropy"}.get(loss, str(loss)))
    if title is None:
        epochs = len(history.epoch_loss)
        title = f"Learning curve: {epochs} epoch{'s' if epochs != 1 else ''}, {len(batches)} batches"
        if history.smoothed_loss:
            title += f"; smoothed loss {history.smoothed_loss[-1]:.4f} at the end"
        if history.val_error:
            title += f", test error {history.val_error[-1]:.4f}"
    ax.set_title(title, fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    if history.val_error:
        ends = np.cumsum(history._batches)[: len(history.val_error)]
        right = ax.twinx()
        right.plot(ends, history.val_error, "o-", color="C3", label="test error")
        right.set_ylabel("error rate")
        right.set_ylim(0, max(0.5, max(history.val_error) * 1.1))
        h2, l2 = right.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, loc="upper right")
    return fig


def kernels(model, layer="C1"):
    """The kernels k[q, p] of a Conv2D layer as images: a row per output map
    q, a column per input map p, one grey scale for the layer (0 is mid grey)."""
    conv = _layer(model, layer)
    k = conv.params["weight"]
    m, c = k.shape[:2]
    scale = float(np.abs(k).max()) or 1.0
    single = c == 1  # one input map: the kernels side by side
    rows, cols = (1, m) if single else (m, c)
    fig = _figure(figsize=(max(2, 0.9 * cols + 1), max(1.6, 0.9 * rows + 0.6)),
                  layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for q in range(m):
        for p in range(c):
            ax = axes[0][q] if single else axes[q][p]
            image = ax.imshow(k[q, p], cmap="gray", vmin=-scale, vmax=scale)
            ax.set_xticks([])
            ax.set_yticks([])
            if single:
                ax.set_xlabel(str(q + 1), fontsize=8)
            elif p == 0:
                ax.set_ylabel(str(q + 1), rotation=0, labelpad=8, fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.8, label="weight")
    fig.suptitle(f"{layer}: kernels of its {m} output maps" if single else
                 f"{layer}: kernels, output maps (rows) x input maps (columns)", fontsize=9)
    return fig


def feature_maps(model, image, title=None):
    """The paper's Figure 1 for one input: the image, then the maps of every
    layer with map-shaped output (for seed_cnn: C1, S1, C2, S2), then the
    output scores. image: (C, H, W) or (H, W) for one-channel models."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[None]
    acts = model.activations(image[None])
    maps = [(name, a[0]) for name, a in acts.items() if a.ndim == 4]
    scores = list(acts.values())[-1][0]
    rows = 1 + len(maps)
    cols = max([len(a) for _, a in maps] + [image.shape[0]])
    fig = _figure(figsize=(min(1.1 * cols + 1, 16), 1.25 * rows + 1), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    if image.shape[0] == 3:  # a colour picture, as it is seen
        axes[0][0].imshow(np.clip(np.moveaxis(image, 0, -1), 0, 1))
    else:
        for p, plane in enumerate(image):
            shown = axes[0][p].imshow(plane, cmap="gray")
        fig.colorbar(shown, ax=axes[0].tolist(), shrink=0.8, label="pixel")
    axes[0][0].set_title("input", fontsize=8, loc="left")
    for r, (name, a) in enumerate(maps, 1):
        low, high = float(a.min()), float(a.max())  # one scale per layer, to compare its maps
        for q, plane in enumerate(a):
            shown = axes[r][q].imshow(plane, cmap="viridis", vmin=low, vmax=high)
        fig.colorbar(shown, ax=axes[r].tolist(), shrink=0.8)
        axes[r][0].set_title(f"{name}: {a.shape[0]} maps of {a.shape[1]}x{a.shape[2]}",
                             fontsize=8, loc="left")
    best = int(np.argmax(scores))
    if title is None:
        kind = "probability" if model.loss == "cross_entropy" else "output"
        value = np.exp(scores[best] - np.logaddexp.reduce(scores)) if kind == "probability" \
            else scores[best]
        title = (f"Feature maps (the paper's Figure 1): the network's answer is "
                 f"{model.class_name(best)} ({kind} {value:.2f})")
    fig.suptitle(title, fontsize=9)
    return fig


def confusion_matrix(model, x, y, class_names=None):
    """Counts of true class (rows) against predicted class (columns) on x, y;
    the classes named by class_names, else by the model's own."""
    labels = np.asarray(y)
    predicted = model.predict(x)
    k = model.output_shape[0]
    counts = np.bincount(labels * k + predicted, minlength=k * k).reshape(k, k)
    names = (list(class_names) if class_names is not None
             else [model.class_name(i) for i in range(k)])
    fig = _figure(figsize=(0.55 * k + 3, 0.55 * k + 2), layout="constrained")
    ax = fig.add_subplot()
    fig.colorbar(ax.imshow(counts, cmap="Blues"), ax=ax, shrink=0.8, label="images")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if counts[i, j] > counts.max() / 2 else "black")
    ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    error = 1 - np.trace(counts) / max(1, counts.sum())
    ax.set_title(f"Confusion matrix: error {error:.4f} on {counts.sum()} images", fontsize=9)
    return fig


def save_all(model, history, x_test, y_test, directory, class_names=None):
    """Write learning_curve.png, kernels_<layer>.png for each Conv2D layer,
    feature_maps.png (first test image) and confusion_matrix.png into
    directory; return their paths. Classes are named by class_names, else
    by the model's own (model.classes)."""
    from fastcnn.layers import Conv2D

    os.makedirs(directory, exist_ok=True)
    figures = {"learning_curve": learning_curve(history, loss=model.loss)}
    for layer in model.layers:
        if isinstance(layer, Conv2D):
            figures[f"kernels_{layer.name}"] = kernels(model, layer.name)
    figures["feature_maps"] = feature_maps(model, x_test[0])
    figures["confusion_matrix"] = confusion_matrix(model, x_test, y_test, class_names)
    paths = []
    for name, fig in figures.items():
        path = os.path.join(directory, name + ".png")
        fig.savefig(path, dpi=110)
        paths.append(path)
    return paths


def _layer(model, name):
    for layer in model.layers:
        if layer.name == name:
            if "weight" not in layer.params or layer.params["weight"].ndim != 4:
                raise ValueError(f"layer {name} is not a convolution layer")
            return layer
    raise ValueError(f"no layer named {name!r}; the model has {[layer.name for layer in model.layers]}")
