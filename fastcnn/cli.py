"""The `fastcnn` command (also `python -m fastcnn`).

    fastcnn train --dataset fashion-mnist --epochs 1 --batch-size 50 --lr 1 --save model.npz
    fastcnn info

Errors print one line and exit with status 1 (2 for a bad command line);
--debug shows the traceback instead.
"""

import argparse
import platform
import sys

import numpy as np


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _nonnegative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="fastcnn",
        description="Train and run the CNN of Zhang's backpropagation derivation on the CPU.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    train = sub.add_parser(
        "train",
        help="train the paper's network (seed_cnn) and report its test error",
        description="Train seed_cnn as the DeepLearnToolbox demo does (SGD, alpha 1, "
        "batch 50), then print the test error and the time per epoch.",
    )
    train.add_argument("--dataset", default="fashion-mnist", choices=["mnist", "fashion-mnist"],
                       help="dataset (default: %(default)s)")
    train.add_argument("--data-dir", default=None,
                       help="directory with the IDX files (default: search, then download)")
    train.add_argument("--epochs", type=_positive_int, default=1, help="default: %(default)s")
    train.add_argument("--batch-size", type=_positive_int, default=50, help="default: %(default)s")
    train.add_argument("--lr", type=_positive_float, default=1.0,
                       help="learning rate alpha (default: %(default)s)")
    train.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                       help="default: %(default)s")
    train.add_argument("--threads", type=_positive_int, default=None,
                       help="OpenMP threads (default: all usable cores)")
    train.add_argument("--seed", type=_nonnegative_int, default=0,
                       help="seed of initialisation and shuffling (default: %(default)s)")
    train.add_argument("--algorithm", default="auto", choices=["auto", "direct", "im2col", "fft"],
                       help="how the convolutions are computed (default: %(default)s)")
    train.add_argument("--save", default=None, metavar="PATH", help="write the trained model (.npz)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(run=cmd_train)

    bench = sub.add_parser(
        "bench",
        help="time an epoch, inference and training steps next to PyTorch and NumPy",
        description="Headline speed of the paper's network: seconds per epoch, inference "
        "images/s, microseconds per training step at batch 1 and 50, GFLOP/s against the "
        "machine's peak; fastcnn, PyTorch (if installed) and NumPy on the same threads, "
        "medians of --repeat runs. For the full suite: pytest benchmarks/ --benchmark-only.",
    )
    bench.add_argument("--threads", type=_positive_int, default=None,
                       help="threads for all three (default: fastcnn's default)")
    bench.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                       help="default: %(default)s")
    bench.add_argument("--impl", default="fastcnn,torch,numpy",
                       help="comma-separated subset of fastcnn,torch,numpy (default: all)")
    bench.add_argument("--epoch-images", type=_positive_int, default=60000,
                       help="images in the timed epoch, scaled to 60,000 (default: %(default)s)")
    bench.add_argument("--repeat", type=_positive_int, default=3,
                       help="runs per figure, median reported (default: %(default)s; "
                       "the baselines' epochs run once)")
    bench.set_defaults(run=cmd_bench)

    info = sub.add_parser("info", help="version, build flags, OpenMP, threads and SIMD path",
                          description="Show how this fastcnn was built and what it will run on.")
    info.set_defaults(run=cmd_info)
    return parser


def cmd_train(args):
    import fastcnn
    from fastcnn import datasets

    if args.threads is not None:
        fastcnn.set_num_threads(args.threads)
    x, y = datasets.load(args.dataset, "train", data_dir=args.data_dir, dtype=args.dtype)
    x_test, y_test = datasets.load(args.dataset, "test", data_dir=args.data_dir, dtype=args.dtype)
    model = fastcnn.seed_cnn(seed=args.seed, dtype=args.dtype, algorithm=args.algorithm)
    algorithms = sorted({layer.algorithm_used for layer in model.layers
                         if isinstance(layer, fastcnn.Conv2D)})
    print(f"fastcnn {fastcnn.__version__}: seed_cnn on {args.dataset} ({len(x)} training, "
          f"{len(x_test)} test images), {args.dtype}, {fastcnn.get_num_threads()} thread(s), "
          f"batch {args.batch_size}, lr {args.lr:g}, convolution: {', '.join(algorithms)}")
    history = model.fit(x, y, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                        seed=args.seed, progress=not args.no_progress,
                        validation_data=(x_test, y_test))
    batches = len(history.loss) // args.epochs
    for epoch, (seconds, error) in enumerate(zip(history.epoch_seconds, history.val_error)):
        loss = history.smoothed_loss[(epoch + 1) * batches - 1]
        print(f"epoch {epoch + 1}: smoothed loss {loss:.4f}, test error {error:.4f}, {seconds:.2f} s")
    error = history.val_error[-1]
    print(f"test error: {error:.4f} ({round(error * len(x_test))} of {len(x_test)} misclassified)")
    print(f"seconds per epoch: {np.mean(history.epoch_seconds):.2f}")
    if args.save:
        model.save(args.save)
        print(f"saved the model to {args.save}")
    return 0


def cmd_bench(args):
    import fastcnn
    from fastcnn import bench

    which = tuple(name.strip() for name in args.impl.split(",") if name.strip())
    unknown = set(which) - {"fastcnn", "torch", "numpy"}
    if unknown or not which:
        raise ValueError(f"--impl takes a subset of fastcnn,torch,numpy, got {args.impl!r}")
    if "torch" in which and not bench.torch_available():
        print("PyTorch is not installed: its column is left out (pip install torch)")
    threads = args.threads or fastcnn.get_num_threads()
    results, notes = bench.run(threads=threads, dtype=args.dtype, which=which,
                               epoch_images=args.epoch_images, repeat=args.repeat,
                               log=lambda text: print(text, file=sys.stderr))
    print(bench.format_table(results, notes))
    return 0


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


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("fastcnn: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one clear line, unless --debug
        if args.debug:
            raise
        message = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
        print(f"fastcnn: error: {message or type(e).__name__}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
