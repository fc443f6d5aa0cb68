"""The datasets cnnbuild knows, each declared once: what it holds, where it is, how it is read.

IDX checksums are SHA-256 of the uncompressed files, so any gzip of the same bytes is
accepted. They were computed from copies whose uncompressed MD5 sums equal those
published with the data (MNIST: the copies shipped in ``mnist/``; Fashion-MNIST: Debian's
``dataset-fashion-mnist``). CIFAR-10 is checked by the MD5 its authors publish.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cnnbuild.data import cifar, loaders
from cnnbuild.data.dataset import Dataset
from cnnbuild.data.download import Progress
from cnnbuild.data.folder import ImageShape
from cnnbuild.data.locate import Place

Stats = tuple[tuple[float, ...], tuple[float, ...]]  # (mean, std), one value per channel


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset; ``load(info, split, data_dir, image_shape, download, progress)`` reads it."""

    name: str  # the spec's training.dataset
    title: str  # for messages
    load: Loader
    image_shape: ImageShape | None = None  # (C, H, W); None: the images decide
    class_names: tuple[str, ...] = ()  # empty: the data names them
    channel_stats: Stats | None = None  # of the training images, 0..1 scale; None: computed
    checksums: Mapping[str, str] = field(default_factory=dict)  # file name -> digest
    mirrors: tuple[str, ...] = ()  # a file is fetched from mirror + name (+ ".gz" if IDX)
    package_folder: Path | None = None  # a copy shipped inside cnnbuild
    system_folders: tuple[Place, ...] = ()  # copies installed by the system


Loader = Callable[
    [DatasetInfo, str, Path | None, ImageShape | None, bool, Progress | None], Dataset
]


def _by_name(*infos: DatasetInfo) -> dict[str, DatasetInfo]:
    return {info.name: info for info in infos}


DATASETS: dict[str, DatasetInfo] = _by_name(
    DatasetInfo(
        name="mnist",
        title="MNIST",
        load=loaders.load_idx,
        image_shape=(1, 28, 28),
        class_names=tuple(str(digit) for digit in range(10)),
        channel_stats=((0.1307,), (0.3081,)),
        checksums={
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
        package_folder=Path(__file__).with_name("mnist"),
    ),
    DatasetInfo(
        name="fashion-mnist",
        title="Fashion-MNIST",
        load=loaders.load_idx,
        image_shape=(1, 28, 28),
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        channel_stats=((0.2860,), (0.3530,)),
        checksums={
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
        system_folders=(
            Place(
                Path("/usr/share/datasets/fashion-mnist"),
                "installed by Debian's dataset-fashion-mnist package",
            ),
        ),
    ),
    DatasetInfo(
        name="cifar10",
        title="CIFAR-10",
        load=loaders.load_cifar10,
        image_shape=cifar.IMAGE_SHAPE,
        class_names=cifar.CLASS_NAMES,
        channel_stats=((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
        checksums={cifar.ARCHIVE: "c58f30108f718f92721af3b95e74349a"},
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
    ),
    DatasetInfo(name="folder", title="Your own images", load=loaders.load_folder),
)


def dataset_names() -> list[str]:
    """The names ``load_dataset`` accepts, in declaration order."""
    return list(DATASETS)
