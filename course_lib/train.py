"""One training loop for the whole course: any device, AMP and channels-last on CUDA, a progress bar,
and a history you can plot. Data is either a ``(x, y)`` pair of tensors (the course's datasets are
small enough to sit in memory, on the GPU if there is one) or any iterable of ``(x, y)`` batches.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .progress import Progress
from .runtime import device as default_device
from .validate import positive_int

__all__ = ["History", "fit", "evaluate", "predict", "evaluating", "batches", "confusion_matrix"]


@dataclass
class History:
    """Per-epoch record of a :func:`fit` run (lists of floats, one entry per epoch)."""

    train_loss: list = field(default_factory=list)
    train_acc: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_acc: list = field(default_factory=list)
    seconds: list = field(default_factory=list)

    @property
    def epochs(self) -> int:
        return len(self.train_loss)

    def summary(self) -> str:
        if not self.epochs:
            return "no epochs run"
        text = f"{self.epochs} epochs in {sum(self.seconds):.1f} s: train loss {self.train_loss[-1]:.3f}, acc {self.train_acc[-1]:.1%}"
        if self.val_acc:
            text += f" | val loss {self.val_loss[-1]:.3f}, acc {self.val_acc[-1]:.1%}"
        return text


def batches(data, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None):
    """Yield ``(x, y)`` mini-batches from a pair of tensors, or pass an iterable of batches through."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        x, y = data
        if len(x) != len(y):
            raise ValueError(f"data must hold as many labels as inputs, got {len(x)} inputs and {len(y)} labels")
        order = torch.randperm(len(x), generator=generator).to(x.device) if shuffle else torch.arange(len(x), device=x.device)
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            yield x[index], y[index]
    else:
        yield from data


def _autocast(dev: torch.device, amp: bool):
    if amp and dev.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def _prepare(model: torch.nn.Module, dev: torch.device, channels_last: bool):
    model.to(dev)
    if channels_last and dev.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return model


def _to(x, y, dev, channels_last):
    x = x.to(dev, non_blocking=True)
    if channels_last and dev.type == "cuda" and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(dev, non_blocking=True)


@contextlib.contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Eval mode inside the block; on exit every module gets back its own training flag.

    ``model.train(was_training)`` would not do: it sets every module alike, so a frozen BatchNorm that
    was deliberately in eval mode while the rest fine-tunes (lecture 05) would start training again.
    """
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


@torch.no_grad()
def evaluate(model, data, batch_size: int = 256, loss_fn=F.cross_entropy, device=None, amp: bool = True) -> dict:
    """Mean loss and accuracy of ``model`` on ``data``: ``{"loss": float, "accuracy": float}``."""
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    total_loss, correct, count = 0.0, 0, 0
    with evaluating(model):
        for x, y in batches(data, batch_size):
            x, y = _to(x, y, dev, False)
            with _autocast(dev, amp):
                logits = model(x)
            total_loss += float(loss_fn(logits.float(), y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            count += y.numel()  # per-pixel labels [N, H, W] count every pixel
    if count == 0:
        raise ValueError("data must contain at least one example")
    return {"loss": total_loss / count, "accuracy": correct / count}


@torch.no_grad()
def predict(model, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits ``[N, classes]`` of ``model`` for inputs ``x [N, ...]``, in eval mode, on the model's device."""
    dev = next(model.parameters()).device
    with evaluating(model):
        return torch.cat([model(x[i : i + batch_size].to(dev)).float() for i in range(0, len(x), batch_size)])


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[num_classes, num_classes]`` int64 counts, rows = true class, columns = predicted class."""
    positive_int("num_classes", num_classes)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    index = target.long() * num_classes + pred.long()
    return torch.bincount(index.flatten(), minlength=num_classes**2).view(num_classes, num_classes)


def fit(
    model: torch.nn.Module,
    train,
    val=None,
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 64,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    loss_fn=F.cross_entropy,
    device=None,
    amp: bool = True,
    channels_last: bool = True,
    seed: int = 0,
    progress: bool = True,
) -> History:
    """Train ``model`` and return its :class:`History`.

    ``train`` / ``val``: ``(x [N, ...], y [N])`` tensors or iterables of batches. On CUDA the forward
    pass runs under float16 autocast with a gradient scaler (``amp``) and conv inputs use the
    channels-last layout (``channels_last``); elsewhere both are no-ops. The learning rate follows a
    cosine schedule to zero. ``seed`` fixes the shuffling.
    """
    positive_int("epochs", epochs)
    positive_int("batch_size", batch_size)
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    dev = torch.device(device) if device is not None else default_device()
    model = _prepare(model, dev, channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "adam":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    else:
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    steps_per_epoch = None
    if isinstance(train, (tuple, list)) and len(train) == 2 and isinstance(train[0], torch.Tensor):
        steps_per_epoch = -(-len(train[0]) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * (steps_per_epoch or 1))
    scaler = torch.amp.GradScaler("cuda", enabled=amp and dev.type == "cuda")
    generator = torch.Generator().manual_seed(seed)
    history = History()

    bar = Progress(total=epochs, desc="training", unit="epochs", enabled=progress)
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        total_loss, correct, count = 0.0, 0, 0
        for x, y in batches(train, batch_size, shuffle=True, generator=generator):
            x, y = _to(x, y, dev, channels_last)
            with _autocast(dev, amp):
                logits = model(x)
                loss = loss_fn(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            if steps_per_epoch is not None:
                schedule.step()
            total_loss += float(loss.detach()) * y.numel()
            correct += int((logits.detach().argmax(1) == y).sum())
            count += y.numel()  # per-pixel labels [N, H, W] count every pixel
        if steps_per_epoch is None:
            schedule.step()
        history.train_loss.append(total_loss / max(count, 1))
        history.train_acc.append(correct / max(count, 1))
        if val is not None:
            scores = evaluate(model, val, batch_size=max(batch_size, 256), loss_fn=loss_fn, amp=amp)
            history.val_loss.append(scores["loss"])
            history.val_acc.append(scores["accuracy"])
        history.seconds.append(time.perf_counter() - start)
        postfix = {"loss": f"{history.train_loss[-1]:.3f}"}
        if history.val_acc:
            postfix["val_acc"] = f"{history.val_acc[-1]:.1%}"
        bar.set_postfix(postfix)
        bar.update()
    bar.close()
    return history
