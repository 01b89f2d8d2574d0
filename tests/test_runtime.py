"""setup(), device(), seed_everything(), settings and the version check."""
import random

import numpy as np
import pytest
import torch

import course_lib
from course_lib import runtime


def test_device_override(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert course_lib.device() == torch.device("cpu")
    monkeypatch.setenv("COURSE_DEVICE", "not-a-device")
    with pytest.raises(ValueError, match="COURSE_DEVICE"):
        course_lib.device()


def test_device_default_prefers_cuda(monkeypatch):
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert course_lib.device().type == "cuda"


def test_seed_everything_repeats_all_generators():
    course_lib.seed_everything(7)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    course_lib.seed_everything(7)
    assert first == (random.random(), np.random.rand(), torch.rand(1).item())
    with pytest.raises(ValueError, match="seed"):
        course_lib.seed_everything(-1)


def test_settings_from_env(monkeypatch):
    monkeypatch.setenv("COURSE_FAST", "1")
    assert runtime.Settings.from_env().fast
    monkeypatch.setenv("COURSE_FAST", "0")
    settings = runtime.Settings.from_env()
    assert not settings.fast and settings.pick(1, 2) == 2


def test_setup_prints_status_and_checks_version(capsys, monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert course_lib.setup(requires="0.1") == torch.device("cpu")
    line = capsys.readouterr().out
    assert course_lib.__version__ in line and "device cpu" in line and "mode" in line
    with pytest.raises(RuntimeError, match="99.0"):
        course_lib.setup(requires="99.0")
    with pytest.raises(ValueError, match="required"):
        course_lib.check_version("latest")
