"""The wheel and sdist build, and the wheel works in a fresh virtual environment.

The sources are copied to a temporary folder first, so that building writes
nothing (``build/``, ``*.egg-info``, ``dist/``) into the checkout. ``python -m
build`` makes the sdist, then the wheel from the sdist, so a file missing from
the sdist fails here too. The fresh venv gets its dependencies from the
configured package index (about 40 s).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile

from conftest import ROOT

import pygeoapi_prefect

VERSION = "0.10.0"


def run(*command: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, timeout=600, **kwargs
    )
    assert result.returncode == 0, f"{command}: {result.stdout[-2000:]}{result.stderr[-3000:]}"
    return result


def test_wheel_and_sdist_build_and_the_wheel_works(tmp_path):
    assert pygeoapi_prefect.__version__ == VERSION
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copytree(ROOT / "src", source / "src", ignore=ignore)
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--outdir", dist, source)

    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    assert wheel.name == f"pygeoapi_prefect-{VERSION}-py3-none-any.whl"
    assert sdist.name == f"pygeoapi_prefect-{VERSION}.tar.gz"
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"pygeoapi_prefect/py.typed", "pygeoapi_prefect/cli/serve.py"} <= names
    assert not any(name.startswith("tests/") for name in names)
    entry_points = zipfile.ZipFile(wheel).read(
        f"pygeoapi_prefect-{VERSION}.dist-info/entry_points.txt"
    )
    assert b"pygeoapi-prefect = pygeoapi_prefect.cli:cli" in entry_points
    with tarfile.open(sdist) as archive:
        members = set(archive.getnames())
    assert f"pygeoapi_prefect-{VERSION}/src/pygeoapi_prefect/cli/openapi.py" in members

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", wheel)
    imported = run(
        venv / "bin" / "python",
        "-c",
        "import pygeoapi_prefect, pygeoapi_prefect.manager; print(pygeoapi_prefect.__file__)",
        cwd=tmp_path,
    )
    assert str(venv) in imported.stdout
    version = run(venv / "bin" / "pygeoapi-prefect", "--version", cwd=tmp_path)
    assert version.stdout.strip() == f"pygeoapi-prefect, version {VERSION}"
    shutil.copy(ROOT / "example-config.yml", tmp_path / "example-config.yml")
    run(
        venv / "bin" / "pygeoapi-prefect",
        "openapi",
        "--config",
        tmp_path / "example-config.yml",
        cwd=tmp_path,
    )
    document = (tmp_path / "example-openapi.yml").read_text()
    assert f"pygeoapi-prefect={VERSION}" in document.splitlines()[0]
    assert "/processes/hi-prefect-world/execution" in document
    assert "minDuration" in document
