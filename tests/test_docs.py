"""The documentation as users read it: every Python snippet in the README and the docs runs, every
tutorial script runs at small settings, and the site builds in strict mode (a broken link or API
reference fails)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
pytestmark = pytest.mark.slow


def _snippets(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


def test_the_readme_first_screen_is_short_and_has_the_snippets():
    text = (ROOT / "README.md").read_text()
    head = text.split("<!-- SUMMARY -->")[0]
    assert len(head.splitlines()) < 90 and "pip install" in head and len(_snippets(ROOT / "README.md")) == 3
    assert head.count("bash scripts/setup.sh") == 2  # exactly the two commands


@pytest.mark.parametrize("page", [p for p in PAGES if _snippets(p)], ids=lambda p: p.name)
def test_every_python_snippet_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FOUNDRY3D_CACHE", str(tmp_path / "cache"))
    namespace: dict = {"__name__": "__snippet__"}
    for i, code in enumerate(_snippets(page)):
        try:
            exec(
                compile(code, f"{page.name}#snippet{i + 1}", "exec", dont_inherit=True), namespace
            )  # as a user runs it
        except Exception as e:
            raise AssertionError(f"{page.name} snippet {i + 1} failed: {type(e).__name__}: {e}\n{code}") from e


@pytest.mark.parametrize(
    "script, args",
    [("embed_and_search.py", []), ("distill_and_deploy.py", ["--steps", "3", "--out", "student"])],
)
def test_tutorial_scripts_run(script, args, tmp_path):
    env = {**os.environ, "FOUNDRY3D_CACHE": str(tmp_path / "cache")}
    res = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "nearest" in res.stdout or "max abs difference" in res.stdout


def test_the_site_builds_in_strict_mode(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
