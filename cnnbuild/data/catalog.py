"""What cnnbuild knows about the built-in datasets: files, checksums, where to download them.

IDX checksums are SHA-256 of the uncompressed files, so any gzip of the same bytes is
accepted. They were computed from copies whose uncompressed MD5 sums equal those
published with the data (MNIST: the copies shipped in ``mnist/``; Fashion-MNIST: Debian's
``dataset-fashion-mnist``). CIFAR-10 is checked by the MD5 its authors publish.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

IDX_FILES = {  # split -> (images, labels), as published but without the ".gz" ending
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class IdxSource:
    """A dataset published as four IDX files; each is fetched from ``mirror + stem + ".gz"``."""

    title: str
    class_names: tuple[str, ...]
    sha256: Mapping[str, str]
    mirrors: tuple[str, ...]


@dataclass(frozen=True)
class ArchiveSource:
    """A dataset published as one archive."""

    title: str
    file_name: str
    md5: str
    urls: tuple[str, ...]


FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

IDX_SOURCES = {
    "mnist": IdxSource(
        title="MNIST",
        class_names=tuple(str(digit) for digit in range(10)),
        sha256={
            "train-images-idx3-ubyte": (
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
            ),
            "train-labels-idx1-ubyte": (
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"
            ),
            "t10k-images-idx3-ubyte": (
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
            ),
            "t10k-labels-idx1-ubyte": (
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"
            ),
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
    ),
    "fashion-mnist": IdxSource(
        title="Fashion-MNIST",
        class_names=FASHION_MNIST_CLASSES,
        sha256={
            "train-images-idx3-ubyte": (
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"
            ),
            "train-labels-idx1-ubyte": (
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"
            ),
            "t10k-images-idx3-ubyte": (
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"
            ),
            "t10k-labels-idx1-ubyte": (
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"
            ),
        },
        mirrors=(
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        ),
    ),
}

CIFAR10 = ArchiveSource(
    title="CIFAR-10",
    file_name="cifar-10-python.tar.gz",
    md5="c58f30108f718f92721af3b95e74349a",
    urls=("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
)

IMAGE_SHAPES = {"mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
