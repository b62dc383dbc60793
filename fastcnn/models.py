"""Ready-made networks.

    seed_cnn()   the network of Zhang's derivation and the DeepLearnToolbox demo
    lenet5()     LeCun et al.'s LeNet-5 (1998), with today's usual choices available

BUILDERS names them (for the command line and sweeps), and
RECOMMENDED_OPTIMIZER says how each is trained best: the paper's SGD for
seed_cnn, Adam for LeNet-5.
"""

from fastcnn.layers import Conv2D, Dense, Flatten, MaxPool2D, MeanPool2D
from fastcnn.model import Sequential, seed_cnn

__all__ = ["seed_cnn", "lenet5", "BUILDERS", "RECOMMENDED_OPTIMIZER"]


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
    c, h, w = (int(v) for v in input_shape)
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
    )


BUILDERS = {"seed_cnn": seed_cnn, "lenet5": lenet5}
RECOMMENDED_OPTIMIZER = {"seed_cnn": "sgd", "lenet5": "adam"}
