"""Saving and loading models: `fastcnn.load`, `Sequential.save`.

A model file is an .npz of the architecture (JSON) and the parameters; see
fastcnn._modelfile for the format and how it is read safely. Nothing is
pickled, loading never runs code from the file, layers are rebuilt from a
fixed table of fastcnn's own classes, and files are written atomically.
"""

from fastcnn._files import atomic_write
from fastcnn._modelfile import (
    CONFIG_KEY,
    FORMAT,
    FORMAT_VERSION,
    LIMITS,
    TRAINING_KEY,
    ModelFile,
    bad,
)
from fastcnn._modelfile import write as save
from fastcnn.model import Sequential

__all__ = ["load", "save", "atomic_write", "FORMAT", "FORMAT_VERSION", "CONFIG_KEY",
           "TRAINING_KEY", "LIMITS"]


def load(path, with_training_state=False, limits=None):
    """Read a model written by `save` (or `Sequential.save`, or a checkpoint of fit).

    With with_training_state=True, return (model, state, arrays): the
    training state and arrays of a checkpoint, or None and {} for a plain
    model file.

    Raises FileNotFoundError for a missing file, and ValueError, naming the
    problem, for a file that is not a fastcnn model (wrong format, truncated,
    corrupt, pickled objects, missing or unexpected parameters, wrong shapes
    or dtypes, NaN or inf values: a model with NaN parameters is refused
    here, not loaded) or that was written by a newer fastcnn whose format
    this one cannot read.

    Reading is bounded: each array's header is checked against the
    architecture and the archive before its data is read, compressed
    entries are never decompressed past the size they declare, and a file
    that would need more than LIMITS allow is refused before the memory is
    spent: its JSON configuration (16 MiB) and training state (256 MiB),
    its parameter count (100 million) and the activations of one image
    (64 MiB). `limits` (a dict of some of LIMITS' keys) changes them for
    this call; changing fastcnn.io.LIMITS changes them for every call.
    Loading takes time linear in the size of the architecture.
    """
    with ModelFile(path, limits) as f:
        layers = f.plan()  # before anything is allocated
        try:
            model = Sequential.from_config(f.model_config, layers=layers)
        except (TypeError, ValueError, KeyError) as e:
            if str(e).startswith(str(path)):
                raise
            raise bad(path, f"its architecture cannot be built ({e})") from None
        for name, value in f.parameters(model.params).items():
            model.params[name][...] = value
        for name, value in f.buffers(model.buffers).items():
            model.buffers[name][...] = value
        if not with_training_state:
            return model
        state, arrays = f.training_state(model.num_parameters())
        return model, state, arrays
