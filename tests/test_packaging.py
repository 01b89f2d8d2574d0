"""The environment files agree with each other and with the package metadata."""
import re
import tomllib
from pathlib import Path

import course_lib

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pins(lines) -> dict:
    pins = {}
    for line in lines:
        line = line.strip().lstrip("- ").strip()
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[_name(name)] = version.strip()
    return pins


def test_environment_yml_matches_constraints():
    constraints = _pins((ROOT / "constraints.txt").read_text().splitlines())
    conda = _pins((ROOT / "environment.yml").read_text().splitlines())
    assert conda, "environment.yml pins nothing"
    for name, version in conda.items():
        assert constraints.get(name) == version, f"{name}: environment.yml has {version}, constraints.txt {constraints.get(name)}"


def test_every_dependency_is_pinned_in_both_files():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = {_name(d) for d in meta["dependencies"]} | {_name(d) for d in meta["optional-dependencies"]["dev"]}
    constraints = _pins((ROOT / "constraints.txt").read_text().splitlines())
    conda = _pins((ROOT / "environment.yml").read_text().splitlines())
    assert deps <= set(constraints), deps - set(constraints)
    assert deps <= set(conda), deps - set(conda)


def test_installed_versions_are_the_constrained_ones():
    from importlib.metadata import version

    constraints = _pins((ROOT / "constraints.txt").read_text().splitlines())
    for name in ("torch", "torchvision", "numpy", "nbval"):
        assert version(name) == constraints[name]


def test_version_is_consistent():
    assert re.fullmatch(r"\d+\.\d+\.\d+", course_lib.__version__)
