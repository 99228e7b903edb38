"""The README stays a short how-to, its commands exist, the docs site's pages exist, and big files fail lint.

Cheap checks, no site build: ``make docs`` builds the site with ``--strict`` (broken links fail there).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from .conftest import REPO_ROOT, run_python

README = REPO_ROOT / "README.md"
MAX_README_LINES = 260


def test_readme_is_short() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) < MAX_README_LINES, (
        f"README.md has {len(lines)} lines (limit {MAX_README_LINES}): move details and results to docs/"
    )


def test_every_command_in_the_readme_is_a_module() -> None:
    verbs = set(re.findall(r"python -m segvn\.(\w+)", README.read_text()))
    assert {"extract", "labels", "check", "train", "evaluate", "predict", "export"} <= verbs
    missing = sorted(v for v in verbs if importlib.util.find_spec(f"segvn.{v}") is None)
    assert not missing, f"README names commands that are not modules: {missing}"


def test_readme_links_resolve() -> None:
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text())
    local = [t for t in targets if "://" not in t]
    assert local, "the README links into docs/"
    broken = sorted(t for t in local if not (REPO_ROOT / t).exists())
    assert not broken, f"README links to missing files: {broken}"


def _nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [p for v in node.values() for p in _nav_pages(v)]
    return [p for item in node for p in _nav_pages(item)]


def test_docs_nav_lists_every_page_and_only_existing_ones() -> None:
    config = yaml.safe_load((REPO_ROOT / "mkdocs.yml").read_text())
    nav = set(_nav_pages(config["nav"]))
    docs = REPO_ROOT / "docs"
    on_disk = {str(p.relative_to(docs)) for p in docs.rglob("*.md")}
    assert nav == on_disk, f"in nav only: {sorted(nav - on_disk)}; on disk only: {sorted(on_disk - nav)}"
    for page in on_disk:
        assert len((docs / page).read_text().strip().splitlines()) > 1, f"docs/{page} is empty"


# a measured figure in a comment: a 3-decimal score, a speed-up, a date, a frame rate or a step time
MEASURED = re.compile(
    r"\b(read|reads|vs|against) [+-]?0\.\d{2,}|\b0\.\d{3} (vs|against)\b|\d\.\d+x\b|20\d\d-\d\d-\d\d|\d ?fps\b|ms per|GFLOP"
)


def test_configs_carry_no_measured_figures() -> None:
    for name in ("resnet18_fast", "mobilenetv2_fast"):
        text = (REPO_ROOT / "conf" / "experiment" / f"{name}.yaml").read_text()
        assert "# measured: docs/notes/recipes.md" in text, name
    assert (REPO_ROOT / "docs" / "notes" / "recipes.md").is_file()
    found = [
        f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}"
        for path in sorted((REPO_ROOT / "conf").rglob("*.yaml"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if line.lstrip().startswith("#") and MEASURED.search(line)
    ]
    assert not found, "measured figures in config comments (move them to docs/notes/): " + "; ".join(found)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_check_size_fails_on_a_tracked_file_over_1mb(tmp_path: Path) -> None:
    (tmp_path / ".ci").mkdir()
    shutil.copy(REPO_ROOT / ".ci" / "check_size.py", tmp_path / ".ci" / "check_size.py")
    (tmp_path / "small.txt").write_text("fine\n")

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    def check() -> subprocess.CompletedProcess:
        return run_python(".ci/check_size.py", cwd=tmp_path, timeout=60)

    git("init", "-q")
    git("add", ".")
    ok = check()
    assert ok.returncode == 0, ok.stdout + ok.stderr

    (tmp_path / "weights.bin").write_bytes(b"\0" * 1_500_000)
    untracked = check()
    assert untracked.returncode == 0, "an untracked file is not the repository's"
    git("add", "weights.bin")
    big = check()
    assert big.returncode == 1
    assert "weights.bin: 1.5 MB" in big.stdout
