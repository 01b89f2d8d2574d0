"""``python -m course_lib.bench``: how fast course_lib is next to PyTorch, as ratios.

Each row times a course_lib function and its PyTorch counterpart on the same inputs in the same run
(best of several repeats, after a warm-up) and prints ``ours / torch``: 1.0 means as fast, 2.0 twice
as slow. Timings are for reading, never asserted in tests.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["Row", "time_call", "rows", "run", "main"]


@dataclass
class Row:
    """One comparison: ``ours`` and ``reference`` are zero-argument callables on prepared inputs."""

    name: str
    shape: str
    ours: Callable
    reference: Callable
    reference_name: str


def time_call(fn: Callable, repeats: int = 5, device: torch.device | None = None) -> float:
    """Best wall time of ``fn()`` in seconds over ``repeats`` runs, after one warm-up run."""
    sync = torch.cuda.synchronize if device is not None and device.type == "cuda" else (lambda: None)
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def _conv_rows(dev, quick):
    from . import conv

    shapes = [((32, 64, 56, 56), (64, 64, 3, 3), 1), ((16, 3, 224, 224), (64, 3, 7, 7), 3), ((64, 128, 28, 28), (128, 128, 3, 3), 1)]
    for index, (xs, ws, pad) in enumerate(shapes[:1] if quick else shapes):
        x, w = torch.randn(xs, device=dev), torch.randn(ws, device=dev)
        label = f"x{list(xs)} w{list(ws)[2:]}"
        yield Row("conv2d", label, lambda x=x, w=w, p=pad: conv.conv2d(x, w, padding=p), lambda x=x, w=w, p=pad: F.conv2d(x, w, padding=p), "F.conv2d")
        if index == 0:
            small = x[:1, :8, :16, :16].contiguous(), w[:8, :8].contiguous()
            yield Row("conv2d_naive", "x[1, 8, 16, 16] w[3, 3]", lambda s=small: conv.conv2d_naive(s[0], s[1], padding=1),
                      lambda s=small: F.conv2d(s[0], s[1], padding=1), "F.conv2d")


def _pool_rows(dev, quick):
    from . import pooling

    for xs, k, s in [((32, 64, 112, 112), 3, 2), ((32, 256, 56, 56), 2, 2), ((64, 512, 14, 14), 2, 2)][: 1 if quick else 3]:
        x = torch.randn(xs, device=dev)
        yield Row("max_pool2d", f"x{list(xs)} k{k} s{s}", lambda x=x, k=k, s=s: pooling.max_pool2d(x, k, s), lambda x=x, k=k, s=s: F.max_pool2d(x, k, s), "F.max_pool2d")


def _train_step(model, x, y):
    """A zero-argument callable: one forward, backward and SGD step of ``model`` on ``(x, y)``, with
    float16 autocast on CUDA as :func:`course_lib.train.fit` does."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        with torch.enable_grad():  # run() times everything under no_grad
            with torch.autocast("cuda", dtype=torch.float16, enabled=x.device.type == "cuda"):
                loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return step


def _architecture_rows(dev, quick):
    import torchvision

    from . import architectures

    # Full size only on a GPU: on a CPU one step at batch 64, 224x224 takes tens of seconds.
    full = dev.type == "cuda" and not quick
    batch, size = (64, 224) if full else (8, 112)
    ours, theirs = architectures.resnet(18).to(dev), torchvision.models.resnet18(weights=None).to(dev)
    if architectures.count_parameters(ours) != architectures.count_parameters(theirs):
        raise RuntimeError("course_lib's resnet18 and torchvision's must have the same parameter count")
    x = torch.randn(batch, 3, size, size, device=dev)
    y = torch.randint(0, 1000, (batch,), device=dev)
    if dev.type == "cuda":  # course_lib.train's layout on a GPU
        x = x.contiguous(memory_format=torch.channels_last)
        ours, theirs = ours.to(memory_format=torch.channels_last), theirs.to(memory_format=torch.channels_last)
    label = f"x[{batch},3,{size},{size}]" + ("" if full else " reduced: CPU/quick")
    yield Row("resnet18 train step", label, _train_step(ours, x, y), _train_step(theirs, x, y), "torchvision resnet18")


def _detection_rows(dev, quick):
    import torchvision

    from . import detection

    gen = torch.Generator().manual_seed(0)

    def boxes(n, extent):
        corner = torch.rand(n, 2, generator=gen) * extent
        return torch.cat([corner, corner + extent / 32 + torch.rand(n, 2, generator=gen) * extent / 4], dim=1).to(dev)

    a, b = boxes(1000, 512.0), boxes(1000, 512.0)
    yield Row("box_iou", "1000 x 1000 boxes", lambda: detection.box_iou(a, b), lambda: torchvision.ops.box_iou(a, b), "torchvision.ops.box_iou")
    for n in (1000,) if quick else (1000, 4000):
        x, s = boxes(n, 512.0), torch.rand(n, generator=gen).to(dev)
        yield Row("nms", f"{n} boxes, IoU 0.5", lambda x=x, s=s: detection.nms(x, s, 0.5),
                  lambda x=x, s=s: torchvision.ops.nms(x, s, 0.5), "torchvision.ops.nms")
    # a stride-4 map of small scenes (lecture 06's Fast R-CNN) and a stride-16 map of an 800-pixel image
    maps = [((8, 64, 16, 16), 256, 1 / 4), ((2, 256, 50, 50), 512, 1 / 16)]
    for shape, count, scale in maps[:1] if quick else maps:
        features = torch.randn(shape, generator=gen).to(dev)
        image = torch.randint(0, shape[0], (count, 1), generator=gen).float().to(dev)
        rois = torch.cat([image, boxes(count, 0.75 * shape[-1] / scale)], dim=1)
        yield Row("roi_pool", f"{count} RoIs on {list(shape)}, 7x7", lambda f=features, r=rois, s=scale: detection.roi_pool(f, r, 7, s),
                  lambda f=features, r=rois, s=scale: torchvision.ops.roi_pool(f, r, 7, s), "torchvision.ops.roi_pool")


def _segmentation_rows(dev, quick):
    from . import segmentation

    gen = torch.Generator().manual_seed(0)
    # lecture 07's face heatmap: the converted classifier in one pass vs every 25x25 window batched
    classifier = segmentation.PatchClassifier(1, 2).to(dev).eval()
    fcn = classifier.fully_convolutional()
    for side in (128,) if quick else (128, 256):
        image = torch.rand(1, side, side, generator=gen).to(dev)
        yield Row("fc_to_conv heatmap", f"{side}x{side} photo, 25x25 windows, stride 4", lambda i=image: fcn(i[None]),
                  lambda i=image: segmentation.sliding_window_scores(classifier, i, 25, stride=4), "sliding windows, batched")
    # mIoU of 64 label maps of 256x256, 21 classes (PASCAL VOC's count) with ignored pixels
    target = torch.randint(0, 21, (64, 256, 256), generator=gen)
    target[torch.rand(target.shape, generator=gen) < 0.05] = 255
    pred = torch.randint(0, 21, target.shape, generator=gen)
    target, pred = target.to(dev), pred.to(dev)

    def reference():
        keep = target != 255
        counts = torch.bincount(target[keep] * 21 + pred[keep], minlength=21 * 21).view(21, 21)
        inter = counts.diagonal()
        return (inter / (counts.sum(0) + counts.sum(1) - inter)).nanmean()

    yield Row("mean_iou", "64 x 256x256, 21 classes, ignore 255", lambda: segmentation.mean_iou(pred, target, 21, 255),
              reference, "torch.bincount confusion")


# Row generators in lecture order; each takes (device, quick) and yields Rows.
ROW_GROUPS = [_conv_rows, _pool_rows, _architecture_rows, _detection_rows, _segmentation_rows]


def rows(device: torch.device, quick: bool = False):
    for group in ROW_GROUPS:
        yield from group(device, quick)


def run(device: torch.device, quick: bool = False, repeats: int = 5, out=sys.stdout) -> list[dict]:
    """Time every row and print a table; returns the rows as dicts (name, shape, ours_ms, torch_ms, ratio)."""
    results = []
    print(f"course_lib vs PyTorch on {device} (torch {torch.__version__}, {torch.get_num_threads()} threads); ratio = ours / torch", file=out)
    print(f"{'function':22s} {'input':34s} {'ours ms':>9s} {'torch ms':>9s} {'ratio':>6s}  reference", file=out)
    with torch.no_grad():
        for row in rows(device, quick):
            ours = time_call(row.ours, repeats, device)
            ref = time_call(row.reference, repeats, device)
            results.append({"name": row.name, "shape": row.shape, "ours_ms": 1e3 * ours, "torch_ms": 1e3 * ref, "ratio": ours / ref})
            print(f"{row.name:22s} {row.shape:34s} {1e3 * ours:9.2f} {1e3 * ref:9.2f} {ours / ref:6.2f}  {row.reference_name}", file=out, flush=True)
    return results


def main(argv=None) -> int:
    from .runtime import device as default_device

    parser = argparse.ArgumentParser(prog="python -m course_lib.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: course_lib.device())")
    parser.add_argument("--quick", action="store_true", help="one shape per function")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per row; the best counts (default 10)")
    args = parser.parse_args(argv)
    run(torch.device(args.device) if args.device else default_device(), quick=args.quick, repeats=args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
