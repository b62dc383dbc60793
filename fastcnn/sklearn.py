"""scikit-learn estimators around fastcnn's networks: CNNClassifier, CNNRegressor.

    CNNClassifier(model="lenet5", epochs=10)   fit / partial_fit / predict /
                                               predict_proba / score, any labels
    CNNRegressor(model="lenet5", epochs=10)    the same network with linear
                                               outputs and the squared error

They wrap any fastcnn model builder (a name of fastcnn.models.BUILDERS, or
a function), so a network can go into a Pipeline, GridSearchCV,
cross_val_score, or dask-ml's incremental searches (which call partial_fit).
They pass scikit-learn's own estimator checks (tests/test_sklearn.py).

This is the one module of fastcnn that imports scikit-learn when it is
imported (`import fastcnn` does not import it): pip install "fastcnn[sklearn]".
"""

import inspect
import numbers
import sys

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as e:  # validate_data is new in scikit-learn 1.6
    raise ImportError(
        f"fastcnn.sklearn needs scikit-learn >= 1.6 ({e}): pip install \"fastcnn[sklearn]\" "
        "(or, in a source tree, pip install \".[sklearn]\")") from e

from fastcnn import models, optim
from fastcnn._validate import check_dtype, check_int, check_positive_float, check_shape
from fastcnn.layers import Flatten
from fastcnn.model import Sequential, scores_to_proba

__all__ = ["CNNClassifier", "CNNRegressor"]

# What the estimator itself passes to a builder; model_params may not set them.
_RESERVED = ("seed", "dtype", "input_shape", "classes")
# scikit-learn converts other input (ints, lists) to the first of these
_FLOATS = (np.float64, np.float32)


class _CNNEstimator(BaseEstimator):
    """What CNNClassifier and CNNRegressor share: parameters, input shapes,
    building the network, and training one epoch at a time."""

    def __init__(self, model="lenet5", model_params=None, image_shape=None, epochs=10,
                 batch_size=50, optimizer=None, lr=None, dtype="float32", random_state=None,
                 verbose=0):
        # scikit-learn's rule: store the parameters as given, check them in fit
        self.model = model
        self.model_params = model_params
        self.image_shape = image_shape
        self.epochs = epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.lr = lr
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------ parameters
    def _builder(self):
        """(name, function) of the `model` parameter."""
        if isinstance(self.model, str):
            if self.model not in models.BUILDERS:
                raise ValueError(f"model must be one of {sorted(models.BUILDERS)} or a function "
                                 f"builder(seed=, ...) -> fastcnn.Sequential, got {self.model!r}")
            return self.model, models.BUILDERS[self.model]
        if not callable(self.model):
            raise TypeError(f"model must be one of {sorted(models.BUILDERS)} or a function "
                            f"builder(seed=, ...) -> fastcnn.Sequential, got {self.model!r}")
        return getattr(self.model, "__name__", repr(self.model)), self.model

    def _optimizer_name(self):
        """The `optimizer` parameter, or the builder's recommended one (Adam
        for a function fastcnn does not know)."""
        if self.optimizer is not None:
            if self.optimizer not in optim.DEFAULT_LR:
                raise ValueError(f"optimizer must be one of {tuple(optim.DEFAULT_LR)} or None "
                                 f"(the model's recommended one), got {self.optimizer!r}")
            return self.optimizer
        name = self.model if isinstance(self.model, str) else next(
            (n for n, builder in models.BUILDERS.items() if builder is self.model), None)
        return models.RECOMMENDED_OPTIMIZER.get(name, "adam")

    def _check_params(self):
        """Check every parameter (scikit-learn checks in fit, not __init__)."""
        self._builder()
        if self.model_params is not None:
            if not isinstance(self.model_params, dict):
                raise TypeError(f"model_params must be a dict of builder arguments or None, "
                                f"got {self.model_params!r}")
            taken = sorted(set(self.model_params) & set(_RESERVED))
            if taken:
                raise ValueError(f"model_params must not set {taken}: the estimator passes them "
                                 f"(seed from random_state, dtype, the data's image shape and "
                                 f"number of outputs)")
        if self.image_shape is not None:
            shape = check_shape(self.image_shape, "image_shape must be (channels, height, width)",
                                "image_shape entries")
            if len(shape) != 3:
                raise ValueError(f"image_shape must be (channels, height, width) or None, "
                                 f"got {self.image_shape!r}")
        check_int(self.epochs, "epochs")
        check_int(self.batch_size, "batch_size")
        name = self._optimizer_name()
        if self.lr is not None:
            check_positive_float(self.lr, "lr")
        check_dtype(self.dtype)
        self._verbosity()
        return name

    def _verbosity(self):
        """verbose as an int >= 0 (True is 1)."""
        if isinstance(self.verbose, bool):
            return int(self.verbose)
        return check_int(self.verbose, "verbose", minimum=0)

    def _base_seed(self):
        """The seed of this training: random_state itself if it is an int
        (as fastcnn's own seed=), else drawn from it (None: NumPy's global
        generator, a new network each fit)."""
        rs = self.random_state
        if isinstance(rs, numbers.Integral) and not isinstance(rs, bool):
            return check_int(rs, "random_state", minimum=0, maximum=2**32 - 1)
        return int(check_random_state(rs).randint(0, 2**31 - 1))

    # ----------------------------------------------------------------- input
    def _validate_X(self, X, y="no_validation", reset=False, **y_checks):
        """X as C-contiguous images (N, C, H, W) in the network's dtype (and
        y, checked), from flat rows (N, F) or images (N, C, H, W). With
        reset, records n_features_in_ and image_shape_; else checks X
        against them."""
        if reset:  # a new training: its parameters first, then the data
            self._check_params()
        # ensure_2d=False: images are 4-D, so the feature count is checked here
        check = dict(reset=reset, ensure_2d=False, allow_nd=True, dtype=_FLOATS)
        if isinstance(y, str) and y == "no_validation":  # as validate_data: y=None is an error
            X = validate_data(self, X, **check)
        else:
            X, y = validate_data(self, X, y, **check, **y_checks)
        if X.ndim not in (2, 4):
            hint = (" Reshape your data either using array.reshape(-1, 1) if your data has a "
                    "single feature or array.reshape(1, -1) if it contains a single sample."
                    if X.ndim < 2 else
                    " For one-channel images (N, H, W), use X[:, None]." if X.ndim == 3 else "")
            raise ValueError(f"Expected 2D array of rows (n_samples, n_features) or 4D array of "
                             f"images (n_samples, channels, height, width), got {X.ndim}D array "
                             f"of shape {X.shape} instead.{hint}")
        n_features = int(np.prod(X.shape[1:]))
        if reset:
            self.image_shape_ = self._image_shape_of(X)
            self.n_features_in_ = n_features
        elif X.ndim == 2 and n_features != self.n_features_in_:
            raise ValueError(f"X has {n_features} features, but {type(self).__name__} is "
                             f"expecting {self.n_features_in_} features as input.")
        elif X.ndim == 4 and X.shape[1:] != self.image_shape_:
            raise ValueError(f"X has images of shape {X.shape[1:]} ({n_features} features), but "
                             f"{type(self).__name__} is expecting images of shape "
                             f"{self.image_shape_} ({self.n_features_in_} features) as input.")
        # fit converts to the dtype asked for; predict to the trained network's
        dtype = check_dtype(self.dtype) if reset else self.model_.dtype
        X = np.ascontiguousarray(X.reshape((X.shape[0],) + self.image_shape_), dtype=dtype)
        return X if isinstance(y, str) and y == "no_validation" else (X, y)

    def _image_shape_of(self, X):
        """(C, H, W) of the images in X: its own for 4-D X; for rows,
        image_shape, or (1, 1, n_features) without it."""
        given = None if self.image_shape is None else tuple(int(v) for v in self.image_shape)
        if X.ndim == 4:
            if given is not None and given != X.shape[1:]:
                raise ValueError(f"X holds images of shape {X.shape[1:]}, but image_shape is "
                                 f"{given}; leave image_shape=None for 4-D input")
            return tuple(X.shape[1:])
        if given is None:
            return (1, 1, X.shape[1])
        if int(np.prod(given)) != X.shape[1]:
            raise ValueError(f"X has {X.shape[1]} features per row, but image_shape {given} "
                             f"holds {int(np.prod(given))}")
        return given

    # ------------------------------------------------------------- the network
    def _build(self, n_outputs, seed):
        """builder(seed=, dtype=, input_shape=, classes=, **model_params),
        passing only the arguments the builder takes; the network must then
        take image_shape_ and give n_outputs."""
        name, builder = self._builder()
        kwargs = dict(self.model_params or {})
        wanted = {"seed": seed, "dtype": check_dtype(self.dtype).name,
                  "input_shape": self.image_shape_, "classes": n_outputs}
        try:
            params = inspect.signature(builder).parameters
        except (TypeError, ValueError):  # no signature (a builtin): pass everything
            params = None
        takes_any = params is None or any(p.kind is p.VAR_KEYWORD for p in params.values())
        if not takes_any and "seed" not in params:
            raise TypeError(f"the builder {name} must take a seed= argument "
                            f"(builder(seed=, ...) -> fastcnn.Sequential)")
        kwargs.update({k: v for k, v in wanted.items() if takes_any or k in params})
        where = ("" if self.image_shape is not None or self.image_shape_[:2] != (1, 1) else
                 "; flat rows of X are taken as (1, 1, n_features) images unless image_shape="
                 "(channels, height, width) says how to fold them")
        try:
            network = builder(**kwargs)
        except (ValueError, TypeError) as e:
            kind = TypeError if isinstance(e, TypeError) else ValueError
            raise kind(f"model {name!r} cannot be built for images {self.image_shape_} and "
                       f"{n_outputs} outputs: {e}{where}") from e
        if not isinstance(network, Sequential):
            raise TypeError(f"the builder {name} must return a fastcnn.Sequential, "
                            f"got {type(network).__name__}")
        for what, have, want in (("images of shape", network.input_shape, self.image_shape_),
                                 ("outputs", network.output_shape, (n_outputs,))):
            if tuple(have) != tuple(want):
                raise ValueError(f"model {name!r} builds a network for {what} {tuple(have)}, the "
                                 f"data needs {tuple(want)}" + self._fixed_hint(name, params)
                                 + where)
        return network

    @staticmethod
    def _fixed_hint(name, params):
        if name == "seed_cnn":
            return (" (seed_cnn is the paper's network: 1x28x28 images and 10 classes only; "
                    "use model='lenet5' or 'vgg_mini' for others)")
        missing = [k for k in ("input_shape", "classes") if params and k not in params]
        return f" (the builder takes no {' or '.join(missing)}= argument)" if missing else ""

    def _start(self, n_outputs):
        """A new network and optimiser state: what fit and a first partial_fit
        do (after _validate_X(reset=True) has checked the parameters)."""
        self._seed = self._base_seed()
        self.model_ = self._build(n_outputs, self._seed)
        self.optimizer_ = self._optimizer_name()
        self._lr = None if self.lr is None else float(self.lr)
        self._optimizer_state = None
        self.n_iter_ = 0
        self.loss_curve_ = []

    def _train_epoch(self, X, targets):
        """One epoch of fastcnn's fit, with the optimiser state kept between
        calls (the optimiser is made again each time, for the network as it
        is now: a pickled estimator has a new network object)."""
        opt = optim.create(self.optimizer_, self.model_, lr=self._lr)
        if self._optimizer_state is not None:
            opt.load_state(*self._optimizer_state)
        # each epoch its own shuffle, from the base seed and its number, so that
        # fit(epochs=E) trains exactly as E calls of partial_fit
        seed = int(np.random.SeedSequence([self._seed, self.n_iter_]).generate_state(1)[0])
        batch_size = check_int(self.batch_size, "batch_size")
        history = self.model_.fit(X, targets, epochs=1, batch_size=batch_size, seed=seed,
                                  verbose=1 if self._verbosity() >= 2 else 0, optimizer=opt)
        self._optimizer_state = opt.state()
        self.n_iter_ += 1
        self.loss_curve_.append(history.epoch_loss[-1])
        if self._verbosity():
            print(f"epoch {self.n_iter_}: loss {history.epoch_loss[-1]:.6g}, "
                  f"{history.epoch_seconds[-1]:.3g} s", file=sys.stderr, flush=True)

    def _fit(self, X, targets, n_outputs):
        self._start(n_outputs)
        for _ in range(check_int(self.epochs, "epochs")):
            self._train_epoch(X, targets)
        return self

    def _scores(self, X):
        check_is_fitted(self, "model_")
        X = self._validate_X(X)
        return self.model_.predict_scores(X, batch_size=256)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.non_deterministic = False  # with an int random_state, bit for bit
        return tags


class CNNClassifier(ClassifierMixin, _CNNEstimator):
    """A fastcnn network as a scikit-learn classifier.

    Parameters
    ----------
    model : str or callable, default "lenet5"
        A name of fastcnn.models.BUILDERS ("lenet5", "vgg_mini", "seed_cnn")
        or a function builder(seed=, dtype=, input_shape=, classes=, ...)
        returning a fastcnn.Sequential. Only the arguments the builder takes
        are passed; the network it returns must take images of the data's
        shape and give one output per class (seed_cnn is fixed to 1x28x28
        images and 10 classes, and says so). lenet5 needs images of at
        least 28x28 (or 32x32).
    model_params : dict, optional
        More arguments for the builder (activation, widths, loss, ...); not
        seed, dtype, input_shape or classes, which the estimator passes.
    image_shape : (C, H, W), optional
        How to fold flat rows X (N, C*H*W) into images. Without it, rows
        are (1, 1, n_features) images. Images X (N, C, H, W) bring their
        own shape (image_shape, if given, must agree).
    epochs : int, default 10
        Passes over the data in fit; partial_fit makes one per call.
    batch_size : int, default 50
    optimizer : "sgd", "momentum", "adam" or None
        None: the builder's fastcnn.models.RECOMMENDED_OPTIMIZER (the
        paper's SGD for seed_cnn, Adam for lenet5, momentum for vgg_mini),
        Adam for a function fastcnn does not know.
    lr : float, optional
        Learning rate; None is fastcnn.optim.DEFAULT_LR of the optimiser.
    dtype : "float32" or "float64", default "float32"
        Precision of the network; X is converted to it.
    random_state : int, RandomState or None
        An int seeds the initialisation (as fastcnn's seed=) and the
        shuffles: the same int gives the same network bit for bit. None
        draws from NumPy's global generator, so each fit differs.
    verbose : int, default 0
        1: a line per epoch on stderr (loss, seconds); 2: also fastcnn's
        progress bar.

    Attributes
    ----------
    classes_ : ndarray
        The labels, sorted (np.unique): any type (strings, ints not from 0).
        The network has len(classes_) outputs, two for a binary problem.
    model_ : fastcnn.Sequential
        The trained network (pickles, saves with model_.save).
    n_features_in_ : int
        C*H*W; image_shape_ : (C, H, W).
    optimizer_ : str
        The optimiser trained with.
    n_iter_ : int
        Epochs trained (fit's and partial_fit's).
    loss_curve_ : list of float
        The mean training loss of each epoch.

    Notes
    -----
    fit starts over: a new network from random_state, then `epochs` epochs,
    each one call of fastcnn's Sequential.fit with the optimiser state
    carried over. partial_fit trains one such epoch, building the network
    on its first call; later calls go on with the network, optimiser and
    learning rate of the first (batch_size and verbose may change). So
    fit(X, y) trains exactly as `epochs` calls of partial_fit(X, y), bit for
    bit. Pass `classes=` to the first partial_fit when one batch of data may
    not hold every label.

    fit takes no sample_weight: fastcnn's losses weigh every sample of a
    batch alike (scikit-learn's checks then leave the weighting out).

    X should be scaled as the network expects (fastcnn's builders are made
    for pixels in [0, 1]); put a scaler before it in a Pipeline for other
    features: the estimator does not rescale X itself.

    predict_proba is the softmax of the scores for a cross-entropy network
    (lenet5, vgg_mini). For a squared-error network (seed_cnn's sigmoid
    outputs) it is the outputs clipped at 0 and divided by their sum (even
    where every output is 0), so that rows sum to 1 as scikit-learn
    requires; predict is the class of the largest probability either way.
    """

    def fit(self, X, y):
        """Train a new network for `epochs` epochs on images X (N, C, H, W)
        or rows (N, C*H*W), labels y (N,). Returns self."""
        X, y = self._validate_X(X, y, reset=True)
        check_classification_targets(y)
        classes = np.unique(y)
        if len(classes) < 2:
            raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes in the "
                             f"data, got 1 class: {classes[0]!r}")
        self.classes_ = classes
        return self._fit(X, self._encode(y), len(classes))

    def partial_fit(self, X, y, classes=None):
        """One epoch on X, y; the first call builds the network for
        `classes` (all the labels there will be; default: those in y).
        Returns self."""
        first = not hasattr(self, "model_")
        X, y = self._validate_X(X, y, reset=first)
        check_classification_targets(y)
        if classes is not None:
            classes = np.unique(np.asarray(classes))
            if not first and not np.array_equal(classes, self.classes_):
                raise ValueError(f"classes={classes!r} is not the same as on the first call to "
                                 f"partial_fit, was {self.classes_!r}")
        if first:
            self.classes_ = np.unique(y) if classes is None else classes
            if len(self.classes_) < 2:
                raise ValueError(f"{type(self).__name__} needs at least 2 classes: pass them "
                                 f"all with classes= on the first call to partial_fit")
            self._start(len(self.classes_))
        self._train_epoch(X, self._encode(y))
        return self

    def _encode(self, y):
        """Class ids 0..K-1 of the labels y, refusing labels not in classes_."""
        try:
            index = np.searchsorted(self.classes_, y)
        except TypeError:  # labels that do not compare with classes_ (str and int)
            raise ValueError(f"y holds labels of type {np.asarray(y).dtype}, which do not compare "
                             f"with classes_ {self.classes_!r}") from None
        index = np.clip(index, 0, len(self.classes_) - 1)
        unknown = self.classes_[index] != y
        if np.any(unknown):
            raise ValueError(f"y holds labels {np.unique(np.asarray(y)[unknown])!r} that are not "
                             f"in classes_ {self.classes_!r}; pass every label with classes= on "
                             f"the first call to partial_fit")
        return index.astype(np.int64)

    def predict_proba(self, X):
        """Probabilities (N, len(classes_)), float64, rows summing to 1."""
        scores = self._scores(X)
        if self.model_.loss == "cross_entropy":
            proba = scores_to_proba(scores, self.model_.loss).astype(np.float64)
        else:  # squared error: sigmoid outputs, or whatever the last layer gives
            proba = np.clip(scores.astype(np.float64), 0, None)
            proba[proba.sum(axis=1) == 0] = 1
        # in float64, so that the rows sum to 1 to rounding, not to float32's
        proba /= proba.sum(axis=1, keepdims=True)
        return proba

    def predict(self, X):
        """The label of the largest probability, (N,) of classes_' type."""
        proba = self.predict_proba(X)  # first: it raises NotFittedError before fit
        return self.classes_[np.argmax(proba, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = False
        return tags


class CNNRegressor(RegressorMixin, _CNNEstimator):
    """A fastcnn network as a scikit-learn regressor: the squared error of
    eq. (13) on linear outputs, one per target.

    Parameters are CNNClassifier's. The builder is asked for `classes=`
    outputs (one per target column) and its network must end in a layer
    without activation: lenet5 and vgg_mini do (their cross-entropy is
    replaced by the squared error, same layers and initialisation); seed_cnn
    ends in a sigmoid and is refused.

    The targets are standardised for training (mean 0 and standard
    deviation 1 per column, from fit's y or the first partial_fit's) and
    predictions scaled back, so the default learning rates suit targets of
    any scale.

    Attributes: model_, n_features_in_, image_shape_, optimizer_, n_iter_,
    loss_curve_ as for CNNClassifier; y_mean_, y_scale_, the standardisation.
    """

    def fit(self, X, y):
        """Train a new network for `epochs` epochs on images X (N, C, H, W)
        or rows (N, C*H*W), targets y (N,) or (N, K). Returns self."""
        X, y = self._validate_X(X, y, reset=True, y_numeric=True, multi_output=True)
        y = self._standardise(y, reset=True)
        return self._fit(X, y, y.shape[1])

    def partial_fit(self, X, y):
        """One epoch on X, y; the first call builds the network (and takes
        the standardisation of y from this y). Returns self."""
        first = not hasattr(self, "model_")
        X, y = self._validate_X(X, y, reset=first, y_numeric=True, multi_output=True)
        y = self._standardise(y, reset=first)
        if first:
            self._start(y.shape[1])
        self._train_epoch(X, y)
        return self

    def _standardise(self, y, reset):
        y = np.asarray(y, dtype=np.float64)
        if reset:
            self._single_output = y.ndim == 1
        y = y.reshape(len(y), -1)
        if reset:
            self.y_mean_ = y.mean(axis=0)
            scale = y.std(axis=0)
            self.y_scale_ = np.where(scale > 0, scale, 1.0)
        elif y.shape[1] != len(self.y_mean_):
            raise ValueError(f"y has {y.shape[1]} targets per sample, the network was built for "
                             f"{len(self.y_mean_)}")
        return (y - self.y_mean_) / self.y_scale_

    def _build(self, n_outputs, seed):
        network = super()._build(n_outputs, seed)
        if network.loss == "mse":
            last = next(layer for layer in reversed(network.layers)
                        if not isinstance(layer, Flatten))
            if getattr(last, "activation", "none") is not None:
                raise ValueError(f"model {self._builder()[0]!r} builds a network whose outputs "
                                 f"go through {last!r}; regression needs a last layer without "
                                 f"activation (linear outputs), as lenet5 and vgg_mini have")
            return network
        # a cross-entropy network ends in linear scores: the same network, trained
        # on the squared error, from the same initialisation
        config = dict(network.get_config(), loss="mse")
        regressor = Sequential.from_config(config)
        regressor.reset_parameters(seed)
        return regressor

    def predict(self, X):
        """Predicted targets, (N,) or (N, K) as y was in fit, float64."""
        out = self._scores(X).astype(np.float64) * self.y_scale_ + self.y_mean_
        return out.ravel() if self._single_output else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
