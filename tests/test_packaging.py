"""The installed package stands on its own: a wheel holds every package and the Hydra configs.

Builds segvn's wheel, installs it (without dependencies, which the test's environment already has) into
a temporary folder, and composes the configs from a working directory outside the repository, so a
``pip install .`` or a wheel finds ``conf/`` without the checkout.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from .conftest import REPO_ROOT, run_python

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    src = tmp_path_factory.mktemp("src")  # a copy, so the build leaves nothing (build/, egg-info) in the repo
    for name in ("segvn", "conf"):
        shutil.copytree(REPO_ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, src / name)
    proc = run_python(
        "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), ".", cwd=src, timeout=300
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = out.glob("segvn-*.whl")
    return path


@pytest.mark.slow
def test_wheel_holds_every_package_and_config(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    source = {str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "segvn").rglob("*.py")}
    missing = sorted(s for s in source if s not in names)
    assert not missing, f"modules left out of the wheel (list their packages in pyproject.toml): {missing}"
    configs = {
        f"segvn/conf/{p.relative_to(REPO_ROOT / 'conf')}" for p in (REPO_ROOT / "conf").rglob("*.yaml")
    }
    assert configs and configs <= names, sorted(configs - names)


@pytest.mark.slow
def test_installed_wheel_composes_its_configs_outside_the_repo(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    proc = run_python(
        "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel), timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    script = (
        "import segvn, pathlib; from hydra import compose, initialize_config_module\n"
        "from segvn.utils.config import CONFIG_MODULE\n"
        f"assert pathlib.Path(segvn.__file__).is_relative_to({str(target)!r}), segvn.__file__\n"
        "import segvn.inference.options  # the predict/evaluate schemas\n"
        "with initialize_config_module(CONFIG_MODULE, version_base='1.3'):\n"
        "    cfg = compose('train', overrides=['+experiment=resnet18', 'data=camvid_streets'])\n"
        "    p = compose('predict', overrides=['data=camvid', 'model=deeplabv3plus'])\n"
        "    assert p.batch_size is None and p.runtime == 'auto'  # the typed schema's defaults\n"
        "print(cfg.model.net.encoder_name, cfg.data.source.group_by)\n"
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = run_python("-c", script, cwd=work, env=env, clean_env=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["resnet18", "sequence"]
