"""Inside each convolution of a spec: how much of a training step's forward and backward is
matrix product (BLAS, every core) and how much is unfolding windows (numpy, one core).

    python benchmarks/conv_profile.py archs/cifar_deep.yaml [--batch-size 128]

Times the pieces the conv layer runs, on random data of the layer's shapes, each the median
of several runs: im2col of x, the forward product, the dW product, im2col of dy (stride-1
layers that pass a gradient on) and the dx product; then the layer's own forward + backward
for comparison. Prints a markdown table, then the machine's memory bandwidth for a large copy
on one thread and split over threads: the unfolding and the elementwise layers are bound by it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from cnnbuild import ops
from cnnbuild.builder import load
from cnnbuild.graph import INPUT
from cnnbuild.layers.conv import Conv


def median_ms(function: Callable[[], object], repeats: int = 5) -> float:
    """Median milliseconds of ``repeats`` calls, after one call to warm up."""
    function()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e3


def channel_major(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Random (N, C, H, W) values laid out (C, N, H, W), as layers hand them on."""
    n, c, h, w = shape
    return rng.standard_normal((c, n, h, w), np.float32).transpose(1, 0, 2, 3)


def profile(layer: Conv, input_shape: tuple[int, ...], batch: int, first: bool) -> dict:
    """Milliseconds of each piece of one conv layer's training step."""
    rng = np.random.default_rng(0)
    k, s, pad = layer.config["kernel"], layer.config["stride"], layer.pad
    f, ho, wo = layer.output_shape([input_shape])
    x = channel_major((batch, *input_shape), rng)
    dy = channel_major((batch, f, ho, wo), rng)
    weights = layer.params["W"].reshape(f, -1)
    cols = ops.im2col(x, k, k, s, pad)
    dy_rows = ops.channel_rows(dy)
    pieces = {
        "im2col x": lambda: ops.im2col(x, k, k, s, pad, cols),
        "forward GEMM": lambda: weights @ cols,
        "dW GEMM": lambda: cols @ dy_rows.T,
    }
    if not first and s == 1:
        turned = weights.reshape(f, -1, k, k)[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
        turned = turned.reshape(input_shape[0], -1)
        dy_cols = ops.im2col(dy, k, k, 1, k - 1 - pad)
        pieces["im2col dy"] = lambda: ops.im2col(dy, k, k, 1, k - 1 - pad, dy_cols)
        pieces["dx GEMM"] = lambda: turned @ dy_cols
    times = {name: median_ms(piece) for name, piece in pieces.items()}

    def whole() -> None:
        layer.forward([x], train=True)
        if first:
            layer.backward_params(dy)
        else:
            layer.backward(dy)

    times["layer"] = median_ms(whole)
    return times


def copy_bandwidth(threads: int, megabytes: int = 256) -> float:
    """GB/s read plus written by a float32 copy split over ``threads`` threads (numpy
    releases the GIL while it copies)."""
    source = np.ones(megabytes * 2**18, np.float32)
    target = np.empty_like(source)
    parts = np.array_split(np.arange(len(source)), threads)
    slices = [slice(part[0], part[-1] + 1) for part in parts]
    with ThreadPoolExecutor(threads) as pool:

        def copy() -> None:
            list(pool.map(lambda s: np.copyto(target[s], source[s]), slices))

        return 2 * source.nbytes / median_ms(copy) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    net = load(args.spec)
    columns = ["im2col x", "forward GEMM", "dW GEMM", "im2col dy", "dx GEMM", "layer"]
    print(f"{net.name}, batch {args.batch_size}: milliseconds per training step (median of 5)\n")
    print("| layer | " + " | ".join(columns) + " | GEMM share | GEMM GFLOP/s |")
    print("| --- |" + " ---: |" * (len(columns) + 2))
    for node in net.nodes:
        if not isinstance(node.layer, Conv):
            continue
        first = node.inputs == [INPUT]
        times = profile(node.layer, node.input_shapes[0], args.batch_size, first)
        products = [name for name in times if name.endswith("GEMM")]
        gemm_ms = sum(times[name] for name in products)
        macs = node.layer.macs(node.input_shapes, node.output_shape) * args.batch_size
        gflops = 2 * macs * len(products) / gemm_ms / 1e6
        cells = [f"{times[c]:.1f}" if c in times else "–" for c in columns]
        cells += [f"{gemm_ms / times['layer']:.0%}", f"{gflops:.0f}"]
        print(f"| {node.name} | {' | '.join(cells)} |", flush=True)
    cores = os.cpu_count() or 1
    print(
        f"\nMemory: a 256 MB copy moves {copy_bandwidth(1):.1f} GB/s on one thread, "
        f"{copy_bandwidth(cores):.1f} GB/s split over {cores}."
    )


if __name__ == "__main__":
    main()
