"""Augmentation of training batches: new images from old ones, each epoch.

    model.fit(x, y, augment=[RandomCrop(padding=4), HorizontalFlip()])

fit applies the steps in order to every batch it gathers (not to the
validation data), with a generator of its own seeded by fit's seed: the
same seed gives the same images, on any thread count, and a resumed fit
goes on with the draws an uninterrupted one would make (the generator's
state is in the checkpoint). Each step is vectorised NumPy over the batch.
"""

import numpy as np

from fastcnn._validate import check_int

__all__ = ["RandomCrop", "HorizontalFlip", "check_steps"]


class RandomCrop:
    """Pad each image with `padding` zeros on every side, then cut a window of
    the original size at a random place (the same for all channels of an
    image): shifts of up to `padding` pixels each way."""

    def __init__(self, padding=4):
        self.padding = check_int(padding, "padding")
        self._padded = None

    def __call__(self, x, rng):
        """Crop the batch x (n, C, H, W) in place."""
        n, c, h, w = x.shape
        p = self.padding
        if self._padded is None or self._padded.shape[1:] != (c, h + 2 * p, w + 2 * p) \
                or self._padded.shape[0] < n or self._padded.dtype != x.dtype:
            self._padded = np.zeros((n, c, h + 2 * p, w + 2 * p), x.dtype)
        padded = self._padded[:n]
        padded[:, :, p:p + h, p:p + w] = x
        dy, dx = rng.integers(0, 2 * p + 1, (2, n))
        rows = (dy[:, None] + np.arange(h))[:, None, :, None]
        cols = (dx[:, None] + np.arange(w))[:, None, None, :]
        x[...] = padded[np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None],
                        rows, cols]

    def config(self):
        """The step's settings, as JSON-compatible values."""
        return {"type": "RandomCrop", "padding": self.padding}


class HorizontalFlip:
    """Mirror each image left to right with probability p."""

    def __init__(self, p=0.5):
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
            raise ValueError(f"p must be a number in [0, 1], got {p!r}")
        self.p = float(p)

    def __call__(self, x, rng):
        """Flip images of the batch x (n, C, H, W) in place."""
        flip = rng.random(x.shape[0]) < self.p
        x[flip] = x[flip][..., ::-1]

    def config(self):
        """The step's settings, as JSON-compatible values."""
        return {"type": "HorizontalFlip", "p": self.p}


def check_steps(augment):
    """fit's augment= as a list of steps (None: none)."""
    if augment is None:
        return []
    steps = [augment] if callable(augment) and hasattr(augment, "config") else list(augment)
    for step in steps:
        if not callable(step) or not callable(getattr(step, "config", None)):
            raise TypeError(f"augment must be fastcnn.augment steps (RandomCrop, HorizontalFlip) "
                            f"or objects with __call__(x, rng) and config(), got {step!r}")
    return steps
