"""Shared fixtures. Real data comes from ``$SEGVN_SHARED`` (default ``../shared`` beside the repo)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("SEGVN_SHARED", REPO_ROOT.parent / "shared")).resolve()

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HYDRA_FULL_ERROR", "1")


TINY_TRAIN = (
    "+experiment=resnet18",
    "data=camvid_streets",
    "data.image_size=[64,96]",
    "data.num_workers=0",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=2",
    "test=false",
    "logger=csv",
)
"""The tiny real training of the tests: one epoch of two steps of ResNet-18 on downscaled CamVid streets."""

SLOW_FIXTURES = frozenset({"camvid_checkpoint", "trained_run"})
"""Fixtures that train in a subprocess on first use: a test using one is slow."""
_RUNNING: dict[str, pytest.Item] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse a test that trains (through :data:`SLOW_FIXTURES`) without the ``slow`` mark."""
    unmarked = [
        item.nodeid
        for item in items
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("slow") is None
    ]
    if unmarked:
        raise pytest.UsageError(
            f"these tests train (a fixture of {sorted(SLOW_FIXTURES)}): mark them slow: {unmarked}"
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """Remember the running test, so :func:`run_python` can check its marks."""
    _RUNNING["item"] = item
    try:
        return (yield)
    finally:
        _RUNNING.pop("item", None)


@pytest.fixture(scope="session", autouse=True)
def segvn_cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """segvn's per-user cache (``SEGVN_CACHE_DIR``: runtime=auto's remembered race) in a folder of this test
    session, for library calls and the commands tests start alike: no test writes the real one."""
    path = tmp_path_factory.mktemp("segvn_cache")
    before = os.environ.get("SEGVN_CACHE_DIR")
    os.environ["SEGVN_CACHE_DIR"] = str(path)
    yield path
    if before is None:
        os.environ.pop("SEGVN_CACHE_DIR", None)
    else:
        os.environ["SEGVN_CACHE_DIR"] = before


def segvn_env(root: Path | None = None, **env: str) -> dict[str, str]:
    """The environment of a segvn command in a test: one torch thread, offline W&B, the shared data.

    ``root`` becomes ``SEGVN_ROOT`` (outputs and caches under the test's folder); ``env`` wins over all.
    """
    full_env = {
        "OMP_NUM_THREADS": "1",  # one thread per process: -n 2 on 2 cores would oversubscribe
        **os.environ,
        "WANDB_MODE": "offline",
        "SEGVN_SHARED": str(SHARED_DIR),
    }
    if root is not None:
        full_env["SEGVN_ROOT"] = str(root)
    return {**full_env, **env}


def run_python(
    *args: str,
    root: Path | None = None,
    cwd: Path | None = None,
    timeout: float = 600,
    env: dict[str, str] | None = None,
    clean_env: bool = False,
) -> subprocess.CompletedProcess:
    """Run ``python ARGS`` (a module with ``-m``, a script, ``-c``) from the repo (or ``cwd``) in
    :func:`segvn_env`, its output captured as text. Every test that starts a command goes through it,
    and must be marked ``slow`` (``make test-fast`` leaves such tests out).

    ``clean_env``: the command sees ``env`` alone, nothing inherited (a check that must not depend on
    the caller's environment, such as an installed wheel away from the checkout).
    """
    item = _RUNNING.get("item")
    if item is not None and item.get_closest_marker("slow") is None:
        raise AssertionError(f"{item.nodeid} starts a command: mark it @pytest.mark.slow")
    cmd = [sys.executable, *args]
    return subprocess.run(
        cmd,
        cwd=cwd or REPO_ROOT,
        env=dict(env or {}) if clean_env else segvn_env(root, **(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_segvn(verb: str, *args: str, root: Path | None = None, timeout: float = 600, **env: str):
    """Run ``python -m segvn.<verb> ARGS`` as a user would (offline W&B, the shared data)."""
    return run_python("-m", f"segvn.{verb}", *args, root=root, timeout=timeout, env=env)


@contextmanager
def running_server(
    command: list[str],
    ready_url: str,
    log_path: Path,
    *,
    env: dict[str, str],
    cwd: Path = REPO_ROOT,
    headers: dict[str, str] | None = None,
    timeout: float = 180,
    poll_s: float = 0.5,
    stop_timeout: float = 20,
) -> Iterator[subprocess.Popen]:
    """Start the server ``command`` (its output in ``log_path``), wait until ``GET ready_url`` answers 200,
    and stop it when the block ends. It exiting first, or no answer in ``timeout`` seconds, fails the test
    with the log's tail. Like :func:`run_python`, only for tests marked ``slow``."""
    import httpx

    item = _RUNNING.get("item")
    if item is not None and item.get_closest_marker("slow") is None:
        raise AssertionError(f"{item.nodeid} starts a server: mark it @pytest.mark.slow")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise AssertionError(
                        f"the server exited ({proc.returncode}): {log_path.read_text()[-3000:]}"
                    )
                try:
                    if httpx.get(ready_url, headers=headers, timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"no answer from {ready_url} in {timeout}s: {log_path.read_text()[-3000:]}"
                    )
                time.sleep(poll_s)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path}; set SEGVN_SHARED to the shared/ folder")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _need(SHARED_DIR)


@pytest.fixture(scope="session")
def camvid_root(shared_dir: Path) -> Path:
    return _need(shared_dir / "datasets" / "camvid")


@pytest.fixture(scope="session")
def video_path(shared_dir: Path) -> Path:
    return _need(shared_dir / "videos" / "solidWhiteRight.mp4")


@pytest.fixture(scope="session")
def weights_dir(shared_dir: Path) -> Path:
    return _need(shared_dir / "weights")


def cut_clip(video: Path, out: Path, seconds: float) -> Path:
    """The first ``seconds`` of a real video, re-muxed without re-encoding (a short real file for tests)."""
    import av

    with av.open(str(video)) as source, av.open(str(out), "w") as target:
        stream = source.streams.video[0]
        copy = target.add_stream_from_template(stream)
        for packet in source.demux(stream):
            if packet.size and packet.pts * stream.time_base < seconds:
                packet.stream = copy
                target.mux(packet)
    return out


@pytest.fixture
def compose_cfg(tmp_path):
    """Compose a task config the way ``@hydra.main`` would, with all outputs under ``tmp_path``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from segvn.utils import CONF_DIR

    def _compose(overrides=(), config_name="train"):
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(tmp_path / "run")
            cfg.hydra.runtime.cwd = str(REPO_ROOT)
            cfg.hydra.job.num = 0
            if "paths" in cfg:
                cfg.paths.log_dir = str(tmp_path / "outputs")
                cfg.paths.cache_dir = str(tmp_path / "cache")
                cfg.paths.data_dir = str(tmp_path / "data")
                cfg.paths.shared_dir = str(SHARED_DIR)
        HydraConfig().set_config(cfg)
        return cfg

    yield _compose
    HydraConfig.instance().cfg = None


@pytest.fixture
def compose_ckpt(compose_cfg):
    """``(cfg, checkpoint)`` as ``python -m segvn.<verb> ckpt_path=CKPT OVERRIDES`` composes them.

    The checkpoint's ``data``/``model`` configs are registered as ``data=checkpoint``/``model=checkpoint``,
    as the command does before Hydra starts (:mod:`segvn.cli`).
    """
    from segvn.cli import register_checkpoint_configs
    from segvn.models.checkpoint import Checkpoint

    def _compose(ckpt_path, overrides=(), config_name="predict"):
        ckpt = Checkpoint.read(ckpt_path)
        register_checkpoint_configs(ckpt)
        return compose_cfg([f"ckpt_path={ckpt_path}", *overrides], config_name=config_name), ckpt

    return _compose


@pytest.fixture(scope="session")
def camvid_checkpoint(camvid_root, tmp_path_factory) -> Path:
    """A real checkpoint: ``segvn.train`` for two steps on downscaled CamVid (made once per session)."""
    run = tmp_path_factory.mktemp("camvid_run")
    proc = run_segvn("train", *TINY_TRAIN, f"hydra.run.dir={run}", root=run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run / "checkpoints" / "last.ckpt"
