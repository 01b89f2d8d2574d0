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


def test_threads_follow_the_environment_then_the_idle_cores(monkeypatch):
    monkeypatch.delenv("COURSE_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert runtime.choose_threads(cores=2, load=0.0)[0] == 1  # a small machine keeps a core for Jupyter
    assert runtime.choose_threads(cores=2, load=2.0)[0] == 1
    default = torch.get_num_threads()
    assert runtime.choose_threads(cores=64, load=0.0)[0] == min(64, default)  # quiet many-core: torch's default
    assert runtime.choose_threads(cores=8, load=6.5)[0] == min(1, default)  # busy: only the idle cores
    assert runtime.choose_threads(cores=8, load=30.0)[0] == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert runtime.choose_threads(cores=2, load=2.0) == (3, "OMP_NUM_THREADS=3")
    monkeypatch.setenv("COURSE_THREADS", "2")
    assert runtime.choose_threads()[0] == 2
    monkeypatch.setenv("COURSE_THREADS", "zero")
    with pytest.raises(ValueError, match="COURSE_THREADS"):
        runtime.choose_threads()


def test_setup_sets_and_prints_the_thread_count(capsys, monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    monkeypatch.setenv("COURSE_THREADS", "1")
    before = torch.get_num_threads()
    try:
        course_lib.setup()
        assert torch.get_num_threads() == 1
        assert "1 CPU thread (COURSE_THREADS=1)" in capsys.readouterr().out
    finally:
        torch.set_num_threads(before)


def test_setup_enables_colab_widgets(capsys, monkeypatch):
    import sys
    import types

    calls = []
    colab = types.ModuleType("google.colab")
    colab.output = types.SimpleNamespace(enable_custom_widget_manager=lambda: calls.append("enabled"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab.output", colab.output)
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    before = torch.get_num_threads()
    try:
        course_lib.setup()
    finally:
        torch.set_num_threads(before)
    assert calls == ["enabled"] and "on Colab" in capsys.readouterr().out


def test_progress_bar_text_and_final_state():
    from course_lib.progress import Progress

    bar = Progress(total=4, desc="training", unit="epochs", enabled=False)
    for _ in range(4):
        bar.update()
    bar.set_postfix(loss="0.123")
    bar.close()
    text = bar.text()
    assert text.startswith("training |") and "4/4 epochs" in text and text.endswith("loss 0.123")
    assert list(Progress(range(3), enabled=False)) == [0, 1, 2]
