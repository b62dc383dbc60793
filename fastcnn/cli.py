"""The `fastcnn` command (also `python -m fastcnn`).

    fastcnn train --dataset fashion-mnist --epochs 1 --batch-size 50 --lr 1 --save model.npz
    fastcnn sweep --lr 0.1,0.3,1,3 --batch-size 10,50 --seeds 3 --scheduler local
    fastcnn export model.npz model.onnx
    fastcnn info

Errors print one line and exit with status 1 (2 for a bad command line);
--debug shows the traceback instead.
"""

import argparse
import inspect
import os
import platform
import sys
import warnings
from functools import partial

import numpy as np

from fastcnn import _onnx, _optional, conv_algorithms, datasets, models, optim
from fastcnn._files import check_writable
from fastcnn._validate import DTYPES, check_int, check_positive_float
from fastcnn._version import __version__
from fastcnn.callbacks import Callback
from fastcnn.training import TrainingInterrupted

# the choices of the options, as the library names them
MODELS = list(models.BUILDERS)
DATASETS = list(datasets.CLASS_NAMES)
ALGORITHMS = ["auto"] + [a for a in conv_algorithms.ALGORITHMS if a != "auto"]
OPTIMIZERS = list(optim.DEFAULT_LR)
LR_DEFAULTS = ", ".join(f"{v:g} for {k}" for k, v in optim.DEFAULT_LR.items())
OPTIMIZER_DEFAULTS = ", ".join(f"{v} for {k}" for k, v in models.RECOMMENDED_OPTIMIZER.items())


def _argument(parse, check, description):
    """An argparse `type=`: parse the text, then check it with the library's
    own check, in argparse's words ("expected a positive integer, got 0")."""
    def convert(text):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}") from None
        try:
            return check(value, "value")
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {description}, got {text}") from None
    return convert


_positive_int = _argument(int, check_int, "a positive integer")
_nonnegative_int = _argument(int, partial(check_int, minimum=0), "an integer >= 0")
_positive_float = _argument(float, check_positive_float, "a positive number")


def _list_of(kind):
    def parse(text):
        values = [kind(part.strip()) for part in text.split(",") if part.strip()]
        if not values:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
        if len(set(values)) != len(values):
            raise argparse.ArgumentTypeError(f"{text!r} has repeats; give each value once")
        return values
    return parse


BENCH_IMPLS = "fastcnn,torch,numpy"
DATA_FILES = "the IDX files; for cifar-10 cifar-10-python.tar.gz or cifar-10-batches-py/"


def build_parser():
    parser = argparse.ArgumentParser(
        prog="fastcnn",
        description="Train and run the CNN of Zhang's backpropagation derivation on the CPU.",
    )
    parser.add_argument("--version", action="version", version=f"fastcnn {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    # --debug also after the command (fastcnn train --debug); SUPPRESS keeps
    # the value given before it when it is not repeated
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks on errors")

    def command(name, **kwargs):
        return sub.add_parser(name, parents=[common], **kwargs)

    train = command(
        "train",
        help="train the paper's network (seed_cnn) and report its test error",
        description="Train seed_cnn as the DeepLearnToolbox demo does (SGD, alpha 1, "
        "batch 50), or LeNet-5 (ReLU, max pooling, softmax cross-entropy, Adam 1e-3), "
        "then print the test error and the time per epoch.",
    )
    train.add_argument("--model", default=None, choices=MODELS,
                       help="network (default: seed_cnn, the paper's, for 28x28 grey images; "
                            "lenet5 for cifar-10)")
    train.add_argument("--optimizer", default=None, choices=OPTIMIZERS,
                       help=f"sgd (the paper's), momentum (SGD with momentum "
                            f"{optim.DEFAULT_MOMENTUM:g}) or adam "
                            f"(default: {OPTIMIZER_DEFAULTS})")
    train.add_argument("--dataset", default="fashion-mnist", choices=DATASETS,
                       help="dataset (default: %(default)s)")
    train.add_argument("--data-dir", default=None,
                       help=f"directory with the dataset's files ({DATA_FILES}; default: search, "
                            f"then download)")
    train.add_argument("--epochs", type=_positive_int, default=None,
                       help="default: 1 (4 with --recipe)")
    train.add_argument("--recipe", default=None, choices=["fashion-mnist"],
                       help="train vgg_mini with the recipe of fastcnn.recipes (batch norm, "
                            "Nesterov SGD, one-cycle learning rate, label smoothing; batch 128) "
                            "and print when the test error first reached 0.08")
    train.add_argument("--batch-size", type=_positive_int, default=50, help="default: %(default)s")
    train.add_argument("--lr", type=_positive_float, default=None,
                       help=f"learning rate alpha (default: {LR_DEFAULTS})")
    train.add_argument("--dtype", default="float32", choices=DTYPES,
                       help="default: %(default)s")
    train.add_argument("--threads", type=_positive_int, default=None,
                       help="OpenMP threads (default: all usable cores)")
    train.add_argument("--seed", type=_nonnegative_int, default=0,
                       help="seed of initialisation and shuffling (default: %(default)s)")
    train.add_argument("--algorithm", default="auto", choices=ALGORITHMS,
                       help="how the convolutions are computed (default: %(default)s)")
    train.add_argument("--save", default=None, metavar="PATH", help="write the trained model (.npz)")
    train.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                       help="write DIR/last.npz after every epoch and DIR/best.npz after the best")
    train.add_argument("--resume", action="store_true",
                       help="go on from --checkpoint-dir's last.npz, as if never stopped")
    train.add_argument("--plot", default=None, metavar="DIR",
                       help="write the learning curve, kernels, feature maps and confusion "
                            "matrix as PNG files into DIR (needs matplotlib)")
    train.add_argument("--csv-log", default=None, metavar="PATH",
                       help="write one CSV row per epoch (loss, test error, seconds)")
    train.add_argument("--early-stopping", type=_positive_int, default=None, metavar="N",
                       help="stop after N epochs without a lower test error (keeps the best)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(run=cmd_train)

    evaluate = command("evaluate", help="error rate of a saved model on a dataset",
                              description="Print the error rate of MODEL on a dataset split, "
                                          "and its errors class by class.")
    evaluate.add_argument("model", help="a model file written by fastcnn (.npz)")
    evaluate.add_argument("--dataset", default="fashion-mnist", choices=DATASETS)
    evaluate.add_argument("--split", default="test", choices=["train", "test"])
    evaluate.add_argument("--data-dir", default=None,
                          help=f"directory with the dataset's files ({DATA_FILES})")
    evaluate.set_defaults(run=cmd_evaluate)

    predict = command("predict", help="classify images with a saved model",
                             description="Print the class of each image in IMAGES (IDX files, "
                                         ".npy arrays, or pictures such as PNG), or write a CSV.")
    predict.add_argument("model", help="a model file written by fastcnn (.npz)")
    predict.add_argument("images", nargs="+", help="IDX, .npy or picture files")
    predict.add_argument("--csv", default=None, metavar="PATH",
                         help="write file,index,label,class,score_0.. rows to PATH instead of "
                              "printing")
    predict.add_argument("--invert", action="store_true",
                         help="use 1 - pixel (dark strokes on light paper, unlike MNIST)")
    predict.add_argument("--top", type=_positive_int, default=1, metavar="K",
                         help="print the K most likely classes of each image (default 1)")
    predict.add_argument("--resize", action="store_true",
                         help="scale images of another size to the model's (needs Pillow)")
    predict.set_defaults(run=cmd_predict)

    export = command(
        "export", help="write a saved model as an ONNX file (for onnxruntime and others)",
        description="Write a saved model as an ONNX file computing its outputs: input 'input' "
        "(N, C, H, W), output 'scores', in the model's dtype, batch size free. Needs the onnx "
        'package (pip install "fastcnn[onnx]"), not PyTorch.')
    export.add_argument("model", help="a model file written by fastcnn (.npz)")
    export.add_argument("output", help="the ONNX file to write (.onnx)")
    export.add_argument("--opset", type=_positive_int, default=None,
                        help=f"ONNX opset, {_onnx.MIN_OPSET} up to the newest the installed "
                             f"onnx knows (default: {_onnx.DEFAULT_OPSET})")
    export.set_defaults(run=cmd_export)

    gradcheck = command(
        "gradcheck", help="check the backpropagation of the paper's network numerically",
        description="Compare the gradients of seed_cnn (float64) with central differences of "
                    "the loss, entry by entry: the paper's derivation checked on this machine.")
    gradcheck.add_argument("--samples", type=_positive_int, default=25,
                           help="entries checked per parameter tensor (default: %(default)s)")
    gradcheck.add_argument("--batch", type=_positive_int, default=4, help="images (default: 4)")
    gradcheck.add_argument("--seed", type=_nonnegative_int, default=0)
    gradcheck.add_argument("--algorithm", default="auto", choices=ALGORITHMS)
    gradcheck.set_defaults(run=cmd_gradcheck)

    bench = command(
        "bench",
        help="time an epoch, inference and training steps next to PyTorch and NumPy",
        description="Headline speed of the paper's network: seconds per epoch, inference "
        "images/s, microseconds per training step at batch 1 and 50, GFLOP/s against the "
        "machine's peak; fastcnn, PyTorch (if installed) and NumPy on the same threads, "
        "medians of --repeat runs. For the full suite: pytest benchmarks/ --benchmark-only.",
    )
    bench.add_argument("--threads", type=_positive_int, default=None,
                       help="threads for all three (default: fastcnn's default)")
    bench.add_argument("--dtype", default="float32", choices=DTYPES,
                       help="default: %(default)s")
    bench.add_argument("--impl", default=BENCH_IMPLS,
                       help="comma-separated subset of fastcnn,torch,numpy (default: all)")
    bench.add_argument("--epoch-images", type=_positive_int, default=60000,
                       help="images in the timed epoch, scaled to 60,000 (default: %(default)s)")
    bench.add_argument("--repeat", type=_positive_int, default=3,
                       help="runs per figure, median reported (default: %(default)s; "
                       "the baselines' epochs run once)")
    bench.set_defaults(run=cmd_bench)

    sweep = command(
        "sweep",
        help="train a grid of learning rates, batch sizes and seeds, as Dask tasks",
        description="Train one model per learning rate, batch size and seed on a Dask cluster "
        "(pip install 'fastcnn[distributed]') and print the table (--csv also writes it). The "
        "results are bit for bit those of the same runs one after another. Point it at a "
        "running cluster with --scheduler tcp://HOST:8786.",
    )
    sweep.add_argument("--model", default=None, choices=MODELS,
                       help="default: seed_cnn for 28x28 grey images, lenet5 for cifar-10")
    sweep.add_argument("--optimizer", default=None, choices=OPTIMIZERS,
                       help=f"default: {OPTIMIZER_DEFAULTS}")
    sweep.add_argument("--lr", type=_list_of(_positive_float), default=None, metavar="LIST",
                       help=f"learning rates, e.g. 0.1,0.3,1,3 (default: {LR_DEFAULTS})")
    sweep.add_argument("--batch-size", type=_list_of(_positive_int), default=[50],
                       metavar="LIST", help="batch sizes, e.g. 10,50 (default: 50)")
    sweep.add_argument("--seeds", type=_positive_int, default=1,
                       help="seeds 0..N-1 for every point (default: %(default)s)")
    sweep.add_argument("--epochs", type=_positive_int, default=1, help="default: %(default)s")
    sweep.add_argument("--dataset", default="fashion-mnist", choices=DATASETS,
                       help="default: %(default)s")
    sweep.add_argument("--data-dir", default=None,
                       help=f"directory with the dataset's files ({DATA_FILES})")
    sweep.add_argument("--train-images", type=_positive_int, default=None, metavar="N",
                       help="train on the first N training images (default: all)")
    sweep.add_argument("--test-images", type=_positive_int, default=None, metavar="N",
                       help="test on the first N test images (default: all)")
    sweep.add_argument("--dtype", default="float32", choices=DTYPES,
                       help="default: %(default)s")
    sweep.add_argument("--scheduler", default="local", metavar="ADDRESS|local|serial",
                       help="a Dask scheduler's address (tcp://host:8786), 'local' for a "
                       "cluster of this machine's cores, or 'serial' to run here one after "
                       "another (default: %(default)s)")
    sweep.add_argument("--workers", type=_positive_int, default=None,
                       help="with --scheduler local: worker processes (default: one per core)")
    sweep.add_argument("--threads-per-worker", type=_positive_int, default=1,
                       help="with --scheduler local (default: %(default)s)")
    sweep.add_argument("--csv", default=None, metavar="PATH",
                       help="also write the table as CSV to PATH")
    sweep.add_argument("--save-best", default=None, metavar="PATH",
                       help="write the best model (lowest test error) to PATH (.npz)")
    sweep.add_argument("--no-progress", action="store_true", help="no progress bar")
    sweep.set_defaults(run=cmd_sweep)

    info = command("info", help="version, build flags, OpenMP, threads and SIMD path",
                          description="Show how this fastcnn was built and what it will run on.")
    info.set_defaults(run=cmd_info)
    return parser


def _load_data(args):
    """(x, y, x_test, y_test) of --dataset from --data-dir, in --dtype."""
    x, y = datasets.load(args.dataset, "train", data_dir=args.data_dir, dtype=args.dtype)
    x_test, y_test = datasets.load(args.dataset, "test", data_dir=args.data_dir, dtype=args.dtype)
    return x, y, x_test, y_test


def _shape_text(shape):
    return "x".join(str(v) for v in shape)


def _builder(args):
    """models.BUILDERS[args.model] for the images of args.dataset: the
    builders that take input_shape get the dataset's; seed_cnn, the paper's
    network, takes only 1x28x28 images, and says so before any data is read."""
    shape = datasets.SHAPES[args.dataset]
    if args.model is None:  # the paper's network where it fits
        args.model = "seed_cnn" if tuple(shape) == (1, 28, 28) else "lenet5"
    build = models.BUILDERS[args.model]
    if "input_shape" in inspect.signature(build).parameters:
        return partial(build, input_shape=shape)
    fixed = build(dtype="float64").input_shape
    if tuple(fixed) != tuple(shape):
        others = ", ".join(m for m in MODELS if m != args.model)
        raise ValueError(f"--model {args.model} takes {_shape_text(fixed)} images, and "
                         f"{args.dataset}'s are {_shape_text(shape)}: use --model {others}")
    return build


def _check_model_input(path, model, dataset):
    shape = datasets.SHAPES[dataset]
    if tuple(model.input_shape) != tuple(shape):
        raise ValueError(f"{path} takes {_shape_text(model.input_shape)} images, and {dataset}'s "
                         f"are {_shape_text(shape)}: evaluate it on a dataset it was trained for")


def _optimizer_name(args):
    return args.optimizer or models.RECOMMENDED_OPTIMIZER[args.model]


def cmd_train(args):
    import fastcnn
    from fastcnn import callbacks

    if args.recipe:
        return _train_recipe(args)
    args.epochs = args.epochs or 1
    if args.resume and not args.checkpoint_dir:
        raise ValueError("--resume needs --checkpoint-dir (where the run was checkpointed)")
    _check_outputs(args, ("--save", "--csv-log"), ("--checkpoint-dir", "--plot"))
    build = _builder(args)  # before the data is read: a wrong pairing is reported at once
    if args.threads is not None:
        fastcnn.set_num_threads(args.threads)
    x, y, x_test, y_test = _load_data(args)
    model = build(seed=args.seed, dtype=args.dtype, algorithm=args.algorithm)
    model.classes = datasets.CLASS_NAMES[args.dataset]
    name = _optimizer_name(args)
    optimizer = optim.create(name, model, lr=args.lr)
    algorithms = sorted({layer.algorithm_used for layer in model.layers
                         if isinstance(layer, fastcnn.Conv2D)})
    print(f"fastcnn {fastcnn.__version__}: {args.model} on {args.dataset} ({len(x)} training, "
          f"{len(x_test)} test images), {args.dtype}, {fastcnn.get_num_threads()} thread(s), "
          f"batch {args.batch_size}, {name} lr {optimizer.lr:g}, convolution: "
          f"{', '.join(algorithms)}")
    hooks = []
    if args.csv_log:
        hooks.append(callbacks.CSVLogger(args.csv_log))
    if args.early_stopping:
        hooks.append(callbacks.EarlyStopping("val_error", patience=args.early_stopping))
    hooks.append(_PrintEpochs())
    try:
        history = model.fit(x, y, epochs=args.epochs, batch_size=args.batch_size,
                            optimizer=optimizer, seed=args.seed, verbose=_bar(args),
                            validation_data=(x_test, y_test), callbacks=hooks,
                            checkpoint_dir=args.checkpoint_dir, resume=args.resume)
    except KeyboardInterrupt as e:
        where = (f" in epoch {e.epoch} after batch {e.batch}"
                 if isinstance(e, TrainingInterrupted) else "")
        hint = (f"; {args.checkpoint_dir}/last.npz holds the last whole epoch: go on with the "
                f"same command and --resume" if args.checkpoint_dir
                else "; nothing was saved (with --checkpoint-dir a run can be resumed)")
        print(f"fastcnn: training interrupted{where}{hint}", file=sys.stderr)
        return 130
    if not history.val_error:
        print(f"nothing to do: the checkpoint already holds {args.epochs} epoch(s)")
        return 0
    error = history.val_error[-1]
    print(f"test error: {error:.4f} ({round(error * len(x_test))} of {len(x_test)} misclassified)")
    print(f"seconds per epoch: {np.mean(history.epoch_seconds):.2f}")
    _save_and_plot(args, model, history, x_test, y_test)
    return 0


def _save_and_plot(args, model, history, x_test, y_test):
    """--save and --plot, after training (their paths were checked before)."""
    if args.save:
        model.save(args.save)
        print(f"saved the model to {args.save}")
    if args.plot:
        from fastcnn import plots

        paths = plots.save_all(model, history, x_test, y_test, args.plot)
        print(f"plots written to {args.plot}: " + ", ".join(os.path.basename(p) for p in paths))


def _train_recipe(args):
    """fastcnn train --recipe fashion-mnist: fastcnn.recipes.fashion_mnist."""
    import fastcnn
    from fastcnn import callbacks, recipes

    if args.resume or args.checkpoint_dir:
        raise ValueError("--recipe does not take --checkpoint-dir or --resume")
    if datasets.SHAPES[args.dataset] != (1, 28, 28):
        raise ValueError(f"--recipe {args.recipe} trains on 1x28x28 images, and {args.dataset}'s "
                         f"are {_shape_text(datasets.SHAPES[args.dataset])}; leave --recipe out "
                         f"and choose --model")
    _check_outputs(args, ("--save", "--csv-log"), ("--plot",))
    if args.threads is not None:
        fastcnn.set_num_threads(args.threads)
    epochs = args.epochs or 4
    x, y, x_test, y_test = _load_data(args)
    print(f"fastcnn {fastcnn.__version__}: the {args.recipe} recipe (vgg_mini, batch 128, "
          f"Nesterov SGD with a one-cycle learning rate, label smoothing 0.1) on {args.dataset} "
          f"({len(x)} training, {len(x_test)} test images), {args.dtype}, "
          f"{fastcnn.get_num_threads()} thread(s), {epochs} epoch(s)", flush=True)
    hooks = [callbacks.CSVLogger(args.csv_log)] if args.csv_log else []
    hooks.append(_PrintEpochs())
    model, history = recipes.fashion_mnist(x, y, validation_data=(x_test, y_test), seed=args.seed,
                                           epochs=epochs, dtype=args.dtype,
                                           verbose=_bar(args), callbacks=hooks,
                                           algorithm=args.algorithm)
    error = history.val_error[-1]
    print(f"test error: {error:.4f} ({round(error * len(x_test))} of {len(x_test)} misclassified)")
    reached = recipes.first_epoch_below(history, 0.08)
    print("92% accuracy (test error <= 0.08): " + (
        f"reached after epoch {reached[0]}, {reached[1]:.1f} s of training" if reached
        else "not reached"))
    _save_and_plot(args, model, history, x_test, y_test)
    return 0


def _check_outputs(args, files=(), directories=()):
    """Every output path of a command, checked before it loads or trains
    anything; and --plot's matplotlib."""
    for options, directory in ((files, False), (directories, True)):
        for option in options:
            path = getattr(args, option[2:].replace("-", "_"), None)
            if path:
                check_writable(path, directory, name=option)
    if getattr(args, "plot", None) and _optional.module("matplotlib") is None:
        raise ImportError(f"--plot needs matplotlib: {_optional.install_hint('plot')}")


def _bar(args):
    """A progress bar (1) on a terminal unless --no-progress, else none (0): the
    commands print their own lines (train's _PrintEpochs, sweep's table)."""
    return 1 if not args.no_progress and sys.stderr.isatty() else 0


class _PrintEpochs(Callback):
    """A line per epoch, besides the progress bar."""

    def on_epoch_end(self, epoch, logs, model):
        print(f"epoch {epoch}: smoothed loss {logs['smoothed_loss']:.4f}, "
              f"test error {logs['val_error']:.4f}, {logs['seconds']:.2f} s", flush=True)


def cmd_evaluate(args):
    import fastcnn

    model = fastcnn.load(args.model)
    _check_model_input(args.model, model, args.dataset)
    x, y = datasets.load(args.dataset, args.split, data_dir=args.data_dir, dtype=model.dtype.name)
    predicted = model.predict(x)
    wrong = predicted != y
    print(f"{args.model} on {args.dataset} {args.split} ({len(y)} images): error "
          f"{wrong.mean():.4f} ({int(wrong.sum())} misclassified)")
    names = datasets.CLASS_NAMES[args.dataset]
    if model.classes is not None and list(model.classes) != list(names):
        print(f"note: the model's classes ({', '.join(model.classes)}) are not those of "
              f"{args.dataset}; the ids are compared as they are")
    width = max(len(n) for n in names)
    for c, name in enumerate(names):
        mask = y == c
        if mask.any():
            confused = np.bincount(predicted[mask & wrong], minlength=len(names))
            most = (f", most often taken for {model.class_name(int(np.argmax(confused)))}"
                    if confused.any() else "")
            print(f"  {name.ljust(width)}  error {wrong[mask].mean():.4f} of "
                  f"{int(mask.sum())}{most}")
    return 0


def cmd_predict(args):
    import fastcnn
    from fastcnn._files import write_csv

    _check_outputs(args, ("--csv",))
    model = fastcnn.load(args.model)
    k = model.num_classes
    if args.top > k:
        raise ValueError(f"--top {args.top}: the model has only {k} classes")
    channels, size = model.input_shape[0], model.input_shape[1:]
    rows = []
    for path in args.images:
        x = datasets.read_images(path, channels=channels, size=size if args.resize else None)
        if x.shape[1] != channels:
            raise ValueError(f"{path}: {x.shape[1]}-channel images, the model takes {channels}")
        if x.shape[2:] != size:
            raise ValueError(f"{path}: {x.shape[2]}x{x.shape[3]} images, the model takes "
                             f"{size[0]}x{size[1]}; give --resize to scale them")
        if args.invert:
            x = 1 - x
        proba = model.predict_proba(x)
        for i, p in enumerate(proba):
            rows.append((path, i, p))
    if args.csv:
        write_csv(args.csv, [dict({"file": path, "index": i, "label": int(np.argmax(p)),
                                   "class": model.class_name(int(np.argmax(p)))},
                                  **{f"score_{j}": f"{v:.6g}" for j, v in enumerate(p)})
                             for path, i, p in rows],
                  ["file", "index", "label", "class"] + [f"score_{j}" for j in range(k)])
        print(f"{len(rows)} predictions written to {args.csv}")
        return 0
    # each class with its probability (a softmax model) or output (the
    # paper's sigmoids); class ids for a model saved without names
    for path, i, p in rows:
        best = np.argsort(-p, kind="stable")[: args.top]
        print(f"{path}[{i}]: " + ", ".join(f"{model.class_name(int(c))} {p[c]:.3f}" for c in best))
    return 0


def cmd_export(args):
    import fastcnn
    from fastcnn import interop

    check_writable(args.output)  # before the model is read
    model = fastcnn.load(args.model)
    proto = interop.to_onnx(model, args.output, opset=args.opset)
    print(f"wrote {args.output}: ONNX opset {proto.opset_import[0].version}, input "
          f"{_batch_shape(model.input_shape)} -> scores {_batch_shape(model.output_shape)}, "
          f"{model.dtype.name}, {len(model.layers)} layers, {model.num_parameters()} parameters")
    return 0


def _batch_shape(shape):
    """'(N, 1, 28, 28)' for the per-image shape (1, 28, 28)."""
    return "(" + ", ".join(map(str, ("N",) + tuple(shape))) + ")"


def cmd_gradcheck(args):
    import fastcnn

    rng = np.random.default_rng(args.seed)
    model = fastcnn.seed_cnn(seed=args.seed, dtype="float64", algorithm=args.algorithm)
    for p in model.params.values():  # away from the symmetric start, biases included
        p += rng.uniform(-0.1, 0.1, p.shape)
    x = rng.random((args.batch, 1, 28, 28))
    labels = rng.integers(0, 10, args.batch)
    eps = 1e-5
    check = fastcnn.gradcheck(model, x, labels, samples=args.samples, eps=eps, seed=rng)
    print(f"seed_cnn, float64, {args.batch} random images, central differences "
          f"(eps {eps:g}) against backprop:")
    for name, worst in check.errors.items():
        print(f"  {name:10s} {check.entries[name]:5d} entries   largest relative difference "
              f"{worst:.1e}")
    print("the gradients agree: the derivation holds" if check.ok
          else "GRADIENTS DISAGREE: the backpropagation is wrong on this machine")
    return 0 if check.ok else 1


def cmd_bench(args):
    import fastcnn
    from fastcnn import bench

    which = tuple(name.strip() for name in args.impl.split(",") if name.strip())
    unknown = set(which) - {"fastcnn", "torch", "numpy"}
    if unknown or not which:
        raise ValueError(f"--impl takes a subset of fastcnn,torch,numpy, got {args.impl!r}")
    if "torch" in which and not bench.torch_available():
        if args.impl != BENCH_IMPLS:  # asked for by name
            raise ValueError("--impl torch needs PyTorch, which is not installed "
                             "(pip install torch), or leave torch out of --impl")
        print("PyTorch is not installed: its column is left out (pip install torch)",
              file=sys.stderr)
        which = tuple(name for name in which if name != "torch")
    threads = args.threads or fastcnn.get_num_threads()
    results, notes = bench.run(threads=threads, dtype=args.dtype, which=which,
                               epoch_images=args.epoch_images, repeat=args.repeat,
                               log=lambda text: print(text, file=sys.stderr))
    print(bench.format_table(results, notes))
    return 0


def cmd_sweep(args):
    import fastcnn
    from fastcnn import distributed

    _check_outputs(args, ("--csv", "--save-best"))
    local = args.scheduler == "local"
    if not local and (args.workers is not None or args.threads_per_worker != 1):
        raise ValueError("--workers and --threads-per-worker set up the cluster of --scheduler "
                         f"local; they do not apply to --scheduler {args.scheduler}")
    build = _builder(args)
    x, y, x_test, y_test = _load_data(args)
    data = (x[:args.train_images], y[:args.train_images],
            x_test[:args.test_images], y_test[:args.test_images])
    name = _optimizer_name(args)
    grid = {"dtype": args.dtype, "optimizer": name, "lr": args.lr or [optim.DEFAULT_LR[name]],
            "batch_size": args.batch_size, "epochs": args.epochs}
    runs = len(grid["lr"]) * len(grid["batch_size"]) * args.seeds
    print(f"fastcnn {fastcnn.__version__}: {runs} runs of {args.model} on {args.dataset} "
          f"({len(data[0])} training, {len(data[2])} test images), {name}, "
          f"{args.epochs} epoch(s) each, scheduler {args.scheduler}", flush=True)
    cluster = dict(workers=args.workers, threads_per_worker=args.threads_per_worker) if local else {}
    result = distributed.sweep(build, grid, data, client=args.scheduler,
                               seeds=args.seeds, progress=_bar(args), **cluster)
    _print_sweep(result, ["lr", "batch_size"])
    if args.csv:
        result.to_csv(args.csv)
        print(f"wrote {len(result.records)} rows to {args.csv}")
    if args.save_best and result.best is not None:
        result.best.save(args.save_best)
        print(f"saved the best model to {args.save_best}")
    return 0 if result.best is not None else 1


def _print_sweep(result, keys):
    """Each point's runs, the mean test error over its seeds, and the best."""
    best = result.best_record
    print(" ".join(f"{k:>10}" for k in keys) + "  seed  status    final loss  test error  seconds")
    for run in result.records:
        mark = "  <- best" if run is best else ""
        print(" ".join(f"{run.point[k]:>10g}" for k in keys)
              + f"  {run.seed:>4}  {run.status:<8}  {run.final_loss:>10.5f}  "
              f"{run.test_error:>10.4f}  {run.seconds:>7.2f}{mark}")
    if best is None:
        print("every run diverged: try smaller learning rates")
        return
    errors = {}
    for run in result.records:
        errors.setdefault(tuple(run.point[k] for k in keys), []).append(run.test_error)
    # a point whose runs did not all finish has no mean
    means = {point: float(np.mean(e)) for point, e in errors.items() if not np.isnan(e).any()}
    if means:
        point = min(means, key=means.get)
        print(f"best mean test error over seeds: {means[point]:.4f} at "
              + ", ".join(f"{k}={v:g}" for k, v in zip(keys, point)))
    print(f"best run: test error {best.test_error:.4f} at "
          + ", ".join(f"{k}={best.point[k]:g}" for k in keys) + f", seed {best.seed}")


def cmd_info(args):
    import fastcnn

    info = fastcnn.build_info()
    print(f"fastcnn {fastcnn.__version__}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()} "
          f"{platform.system()}")
    print(f"OpenMP: {'on' if fastcnn.openmp_enabled() else 'off (serial build)'}")
    print(f"threads: {fastcnn.get_num_threads()}")
    print(f"SIMD kernels: {fastcnn.simd_path()} (available: {', '.join(fastcnn.available_simd_paths())})")
    print(f"compiler: {info.get('compiler', '?')}, flags: {' '.join(info.get('compile_args', []))}")
    return 0


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """A warning as one line of the command's own voice, not a source location."""
    print(f"fastcnn: warning: {message}", file=sys.stderr, flush=True)


def _one_line(text):
    """A message's lines joined by "; ", or by a space after a line that ends
    with a colon (it introduces what follows: "could not download X: URL...",
    not "X:; URL")."""
    message = ""
    for line in text.splitlines():
        line = line.strip()
        if line:
            message += ("" if not message else " " if message.endswith(":") else "; ") + line
    return message


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():  # restores showwarning afterwards
            warnings.showwarning = _show_warning
            return args.run(args)
    except KeyboardInterrupt:
        print("fastcnn: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`fastcnn info | head -1`): stop quietly, as
        # Unix tools do, and keep Python from complaining again at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as e:  # one clear line, unless --debug
        if args.debug:
            raise
        print(f"fastcnn: error: {_one_line(str(e)) or type(e).__name__}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
