"""Ready-made networks.

    seed_cnn()   the network of Zhang's derivation and the DeepLearnToolbox demo
    lenet5()     LeCun et al.'s LeNet-5 (1998), with today's usual choices available
    vgg_mini()   a small network as trained today: 3x3 convolutions, batch norm,
                 ReLU, max pooling (fastcnn.recipes.fashion_mnist trains it)

BUILDERS names them (for the command line and sweeps), and
RECOMMENDED_OPTIMIZER says how each is trained best: the paper's SGD for
seed_cnn, Adam for LeNet-5.
"""

from fastcnn._validate import check_int
from fastcnn.layers import (
    BatchNorm2D,
    Conv2D,
    Dense,
    Flatten,
    MaxPool2D,
    MeanPool2D,
    Normalize,
    ReLU,
)
from fastcnn.model import Sequential, seed_cnn

# What each trains with best, at optim.DEFAULT_LR: the paper's SGD (alpha 1)
# for seed_cnn, Adam for LeNet-5, SGD with momentum for vgg_mini. The
# builders make it the model's default_optimizer, which fit uses when given
# neither an optimizer nor a learning rate, as the command line does.
RECOMMENDED_OPTIMIZER = {"seed_cnn": "sgd", "lenet5": "adam", "vgg_mini": "momentum"}

__all__ = ["seed_cnn", "lenet5", "vgg_mini", "BUILDERS", "RECOMMENDED_OPTIMIZER"]


def lenet5(seed=0, dtype="float32", activation="relu", pooling="max", input_shape=(1, 28, 28),
           classes=10, loss="cross_entropy", algorithm="auto"):
    """LeNet-5 (LeCun, Bottou, Bengio and Haffner, 1998):

        C1  Conv2D(C -> 6, 5x5)      28x28 (a 28x28 input is padded by 2, as for MNIST)
        S2  pool 2x2                 14x14
        C3  Conv2D(6 -> 16, 5x5)     10x10
        S4  pool 2x2                 5x5
        F5  Dense(400 -> 120)
        F6  Dense(120 -> 84)
        out Dense(84 -> classes)     scores, for the softmax cross-entropy

    Parameters
    ----------
    seed, dtype : as for seed_cnn.
    activation : "relu" (today's choice), "tanh", "tanh_opt" (the scaled tanh
        of the original) or "sigmoid".
    pooling : "max" or "mean" (the original subsampled by averaging).
    input_shape : (C, H, W); (1, 28, 28) for MNIST, (3, 32, 32) for CIFAR-10.
    classes : int
    loss : "cross_entropy" (scores out) or "mse" (sigmoid outputs, as the paper).
    algorithm : for the convolutions (fastcnn.conv_algorithms).

    61,706 parameters for one 28x28 channel and 10 classes.
    """
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3:
        raise ValueError(f"input_shape must be (channels, height, width), got {input_shape!r}")
    c, h, w = (check_int(v, "input_shape entries") for v in input_shape)
    classes = check_int(classes, "classes")
    pad = 2 if (h, w) == (28, 28) else 0
    pool = {"max": MaxPool2D, "mean": MeanPool2D}.get(pooling)
    if pool is None:
        raise ValueError(f"pooling must be 'max' or 'mean', got {pooling!r}")
    out_activation = None if loss == "cross_entropy" else "sigmoid"
    # C1 keeps (padded) size - 4, S2 halves, C3 takes 4 more, S4 halves
    h4, w4 = ((h + 2 * pad - 4) // 2 - 4) // 2, ((w + 2 * pad - 4) // 2 - 4) // 2
    if h4 < 1 or w4 < 1:
        raise ValueError(f"LeNet-5 needs images of at least 28x28 (or 32x32 unpadded), got {h}x{w}")
    return Sequential(
        [
            Conv2D(c, 6, 5, activation=activation, padding=pad, algorithm=algorithm, name="C1"),
            pool(2, name="S2"),
            Conv2D(6, 16, 5, activation=activation, algorithm=algorithm, name="C3"),
            pool(2, name="S4"),
            Flatten(name="F"),
            Dense(16 * h4 * w4, 120, activation=activation, name="F5"),
            Dense(120, 84, activation=activation, name="F6"),
            Dense(84, classes, activation=out_activation, name="OUT"),
        ],
        input_shape=(c, h, w),
        dtype=dtype,
        seed=seed,
        loss=loss,
        default_optimizer=RECOMMENDED_OPTIMIZER["lenet5"],
    )


def vgg_mini(seed=0, dtype="float32", widths=(16, 32), hidden=256, input_shape=(1, 28, 28),
             classes=10, normalize=None, algorithm="auto", init="pytorch"):
    """A small VGG-style network (Simonyan and Zisserman's 3x3 stacks, with
    Ioffe and Szegedy's batch norm), for each width w of `widths`:

        Cn   Conv2D(-> w, 3x3, padding 1, no bias)   same size
        BNn  BatchNorm2D(w)
        Rn   ReLU
        Pn   MaxPool2D(2)                            half size
    then
        F    Flatten
        FC   Dense(-> hidden) + ReLU
        OUT  Dense(hidden -> classes)                scores, for the softmax cross-entropy

    For 1x28x28 images and the default widths: 16 maps of 14x14, then 32 of
    7x7 (1568 features), 409,082 parameters.

    Parameters
    ----------
    seed, dtype : as for seed_cnn.
    widths : maps of each convolution block.
    hidden : units of the hidden dense layer.
    input_shape : (C, H, W); H and W must halve len(widths) times.
    classes : int
    normalize : (mean, std), optional
        Start with Normalize(mean, std), so the model takes raw [0, 1]
        pixels (fastcnn.recipes passes the training set's).
    algorithm : for the convolutions (fastcnn.conv_algorithms).
    init : "pytorch" (the default: PyTorch's initialisation, as the recipe
        it is trained with) or "paper" (eq. (1)-(3)).
    """
    c, h, w = (check_int(v, "input_shape entries") for v in input_shape)
    widths = [check_int(v, "widths") for v in widths]
    layers = [] if normalize is None else [Normalize(*normalize, name="norm")]
    for i, width in enumerate(widths, 1):
        if h < 2 or w < 2:
            raise ValueError(f"input_shape {tuple(input_shape)} is too small for "
                             f"{len(widths)} blocks that halve it")
        layers += [Conv2D(c, width, 3, padding=1, bias=False, algorithm=algorithm, init=init,
                          name=f"C{i}"),
                   BatchNorm2D(width, name=f"BN{i}"), ReLU(name=f"R{i}"), MaxPool2D(2, name=f"P{i}")]
        c, h, w = width, h // 2, w // 2
    layers += [Flatten(name="F"), Dense(c * h * w, check_int(hidden, "hidden"), activation="relu",
                                        init=init, name="FC"),
               Dense(hidden, check_int(classes, "classes"), init=init, name="OUT")]
    return Sequential(layers, input_shape=input_shape, dtype=dtype, seed=seed,
                      loss="cross_entropy", default_optimizer=RECOMMENDED_OPTIMIZER["vgg_mini"])


BUILDERS = {"seed_cnn": seed_cnn, "lenet5": lenet5, "vgg_mini": vgg_mini}
