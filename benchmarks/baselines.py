"""PyTorch twins of fastcnn's Fashion-MNIST recipe, for the benchmarks.

fastcnn.recipes.fashion_mnist trains models.vgg_mini; `TorchRecipe` does
the same work in PyTorch: the same network with the same starting
parameters (fastcnn.interop.to_torch of the vgg_mini the recipe builds,
Normalize included), Nesterov SGD with weight decay on the convolution and
dense weights only, OneCycleLR stepped per batch, cross-entropy with label
smoothing, batches of 128 in fastcnn's shuffled order with the last partial
one dropped. tests/test_recipe.py checks, in float64, that each of these
pieces in PyTorch equals fastcnn's; here they are only timed.

PyTorch is imported when a twin is made, so the module imports without it.
"""

import time

import numpy as np

from fastcnn import models
from fastcnn.interop import to_torch

# recipes.fashion_mnist's settings
LR, MOMENTUM, WEIGHT_DECAY, SMOOTHING, BATCH = 0.1, 0.9, 5e-4, 0.1, 128
WARMUP, START = 0.2, 0.1  # OneCycleLR: 20% of the steps up from 0.1 x LR, then down to 0


def recipe_model(x, seed=0, dtype="float32"):
    """The vgg_mini that recipes.fashion_mnist builds for training images x:
    standardised by their mean and std, PyTorch's initialisation."""
    mean, std = float(np.mean(x, dtype=np.float64)), float(np.std(x, dtype=np.float64))
    return models.vgg_mini(seed=seed, dtype=dtype, normalize=(mean, std))


class TorchRecipe:
    """recipes.fashion_mnist in PyTorch, for a fastcnn model's architecture
    and starting parameters (not changed: to_torch copies them)."""

    def __init__(self, model):
        import torch

        self.torch = torch
        nn = torch.nn
        self.net = to_torch(model)
        weights = [m.weight for m in self.net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        decayed = {id(p) for p in weights}
        rest = [p for p in self.net.parameters() if id(p) not in decayed]
        self.opt = torch.optim.SGD([{"params": weights, "weight_decay": WEIGHT_DECAY},
                                    {"params": rest, "weight_decay": 0.0}],
                                   lr=LR, momentum=MOMENTUM, nesterov=True)

    def loss(self, x, labels):
        """The batch's loss, with its graph (training mode)."""
        return self.torch.nn.functional.cross_entropy(self.net(x), labels,
                                                      label_smoothing=SMOOTHING)

    def step(self, x, labels):
        """One training step on tensors x (n, 1, 28, 28) and labels (n,)."""
        self.net.train()
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(x, labels)
        loss.backward()
        self.opt.step()
        return loss.item()

    def fit(self, x, y, epochs=4, seed=0, validation_data=None):
        """Train as the recipe does, the one-cycle schedule spread over
        `epochs`. Returns (training seconds of each epoch, validation error
        after each): the evaluation is not timed, as in fastcnn's fit."""
        torch = self.torch
        xs, ys = torch.from_numpy(x), torch.from_numpy(np.asarray(y, dtype=np.int64))
        batches = len(x) // BATCH  # the last partial batch is dropped
        # torch's OneCycleLR ends at initial_lr / final_div_factor: 0 for the recipe
        sched = torch.optim.lr_scheduler.OneCycleLR(
            self.opt, max_lr=LR, total_steps=epochs * batches, pct_start=WARMUP,
            anneal_strategy="linear", div_factor=1 / START, final_div_factor=1e300,
            cycle_momentum=False)
        order_rng = np.random.default_rng(seed)  # fit's shuffle: a new permutation each epoch
        seconds, errors = [], []
        for _ in range(epochs):
            start = time.perf_counter()
            order = torch.from_numpy(order_rng.permutation(len(x)))
            for b in range(batches):
                idx = order[b * BATCH:(b + 1) * BATCH]
                self.step(xs[idx], ys[idx])
                sched.step()
            seconds.append(time.perf_counter() - start)
            if validation_data is not None:
                errors.append(self.error(*validation_data))
        return seconds, errors

    def predict(self, x, batch_size=1000):
        """Class ids (N,) for images x (N, 1, 28, 28), in inference mode."""
        torch = self.torch
        self.net.eval()
        with torch.no_grad():
            out = [self.net(torch.from_numpy(x[s:s + batch_size])).argmax(1)
                   for s in range(0, len(x), batch_size)]
        return torch.cat(out).numpy()

    def error(self, x, y):
        """Fraction of x misclassified."""
        return float(np.mean(self.predict(x) != np.asarray(y)))


def torch_fashion_mnist(x, y, validation_data=None, seed=0, epochs=4):
    """recipes.fashion_mnist in PyTorch, from the same starting parameters:
    (training seconds of each epoch, validation error after each)."""
    return TorchRecipe(recipe_model(x, seed)).fit(x, y, epochs, seed, validation_data)
