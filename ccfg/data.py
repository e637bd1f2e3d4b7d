"""Fashion-MNIST and its concept vocabulary.

`fashion_mnist(split)` reads the dataset's gzip IDX files (the format of LeCun's MNIST page:
a big-endian magic ``0x0000 0x08 ndim``, then ``ndim`` big-endian uint32 sizes, then the uint8
data) with the standard library and NumPy only, and returns what the shipped model produces:
``(N, 1, 32, 32)`` float32 images in [-1, 1], the 28x28 image padded by 2 pixels of background (-1),
with int64 labels 0-9 in the dataset's own numbering.

The concept vocabulary names what the model is conditioned on: each class alone, a few groups of
classes that overlap one another, and the null concept (the unconditional branch). A concept's id
is the index of its class embedding in the model (``num_class_embeds = len(CONCEPTS) + 1``, null
last), so these ids must never be reordered once a model is trained on them.
"""
from __future__ import annotations

import gzip
import os
import struct

import numpy as np

__all__ = ["CLASSES", "GROUPS", "CONCEPTS", "NULL", "NULL_ID", "NUM_CLASS_EMBEDS", "concept_id",
           "concept_classes", "concepts", "concepts_containing", "fashion_mnist",
           "fashion_mnist_raw", "read_idx", "DEFAULT_DIR", "FILES"]

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_SPLIT_SIZE = {"train": 60000, "test": 10000}

CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
           "ankle-boot")

# Groups overlap on purpose: negative guidance is tested where the negative shares classes with
# the positive (footwear vs sneaker, top vs shirt, upper-body vs top, warm vs footwear).
GROUPS = {
    "top": ("t-shirt", "pullover", "coat", "shirt"),
    "footwear": ("sandal", "sneaker", "ankle-boot"),
    "upper-body": ("t-shirt", "pullover", "dress", "coat", "shirt"),   # top + dress
    "warm": ("pullover", "coat", "ankle-boot"),                         # crosses top and footwear
}

NULL = "null"
CONCEPTS = CLASSES + tuple(GROUPS)      # ids 0..13; the class ids equal the dataset labels
NULL_ID = len(CONCEPTS)                 # 14: the last class embedding
NUM_CLASS_EMBEDS = len(CONCEPTS) + 1    # 15

_CONCEPT_CLASSES = {name: (i,) for i, name in enumerate(CLASSES)}
_CONCEPT_CLASSES.update({g: tuple(CLASSES.index(c) for c in members)
                         for g, members in GROUPS.items()})


def _check_name(name):
    """The concept's canonical name (matched case-insensitively: "Sneaker" is "sneaker")."""
    if not isinstance(name, str):
        raise TypeError(f"concept: expected a concept name (str), got {type(name).__name__}")
    key = name.strip().lower()
    if key != NULL and key not in _CONCEPT_CLASSES:
        raise ValueError(f"concept: unknown concept {name!r}; valid names: "
                         f"{', '.join(CONCEPTS)}, {NULL}")
    return key


def concept_id(name):
    """The class-embedding index of concept `name` (``"null"`` -> `NULL_ID`)."""
    name = _check_name(name)
    return NULL_ID if name == NULL else CONCEPTS.index(name)


def concept_classes(name):
    """The class indices (dataset numbering, sorted) that concept `name` contains.
    The null concept contains every class."""
    name = _check_name(name)
    if name == NULL:
        return tuple(range(len(CLASSES)))
    return tuple(sorted(_CONCEPT_CLASSES[name]))


def concepts(include_null=False):
    """Concept names in id order (the null concept last when `include_null`)."""
    return CONCEPTS + ((NULL,) if include_null else ())


def concepts_containing(label):
    """Ids of the (non-null) concepts that contain class `label` (0-9), in id order."""
    if not isinstance(label, (int, np.integer)) or isinstance(label, bool) or not 0 <= label < 10:
        raise ValueError(f"label: expected a class index 0-9, got {label!r}")
    return tuple(i for i, name in enumerate(CONCEPTS) if int(label) in _CONCEPT_CLASSES[name])


# ---------------------------------------------------------------- IDX files

def read_idx(path):
    """Read one (optionally gzip-compressed) IDX file of unsigned bytes as a uint8 array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:          # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path}: not a readable IDX file ({exc})") from None
    if len(data) < 4:
        raise ValueError(f"{path}: truncated IDX file ({len(data)} bytes, no header)")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08 or ndim == 0:
        raise ValueError(f"{path}: bad IDX magic {data[:4].hex()} (expected 000008NN, "
                         "unsigned bytes)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    count = int(np.prod(shape, dtype=np.int64))
    if len(data) - header != count:
        raise ValueError(f"{path}: IDX sizes {shape} need {count} bytes of data, "
                         f"file has {len(data) - header}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _data_dir(path):
    if path is not None:
        return os.fspath(path), "path="
    if os.environ.get("CCFG_DATA"):
        return os.environ["CCFG_DATA"], "CCFG_DATA"
    return DEFAULT_DIR, "default location"


def fashion_mnist_raw(split="train", path=None):
    """The split as stored: uint8 images (N, 28, 28) and uint8 labels (N,).

    Files are looked up in `path`, else in ``$CCFG_DATA``, else in `DEFAULT_DIR`."""
    split = split.strip().lower() if isinstance(split, str) else split
    if split not in FILES:
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    directory, source = _data_dir(path)
    names = FILES[split]
    files = [os.path.join(directory, n) for n in names]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST {split} split not found ({source}: {directory}); missing "
            f"{', '.join(os.path.basename(m) for m in missing)}. Install it with "
            f"`apt-get install dataset-fashion-mnist` (files go to {DEFAULT_DIR}), or put "
            f"{', '.join(n for pair in FILES.values() for n in pair)} "
            "(gzip IDX files from https://github.com/zalandoresearch/fashion-mnist) in a "
            "directory and pass path= or set CCFG_DATA to it.")
    images, labels = read_idx(files[0]), read_idx(files[1])
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"{files[0]}: expected images of shape (N, 28, 28), got {images.shape}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"{files[1]}: expected {images.shape[0]} labels, got shape {labels.shape}")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{files[1]}: labels must be 0-9, found {int(labels.max())}")
    return images, labels


def fashion_mnist(split="train", path=None):
    """Images (N, 1, 32, 32) float32 in [-1, 1] (28x28 padded by 2 px of -1) and labels (N,) int64.

    The pixel map is ``x = p / 127.5 - 1`` for the stored byte ``p`` (0 = background -> -1)."""
    raw, labels = fashion_mnist_raw(split, path)
    images = np.full((raw.shape[0], 1, 32, 32), -1.0, dtype=np.float32)
    images[:, 0, 2:30, 2:30] = raw.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    return images, labels.astype(np.int64)
