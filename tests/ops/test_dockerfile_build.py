"""The image's build stage installs from exactly what the Dockerfile copies: build a wheel
from those paths alone and check it holds every package the console script needs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).parents[2]


def build_stage_copies() -> list[str]:
    text = (ROOT / "Dockerfile").read_text()
    stage = text.split("\nFROM ")[1]  # the build stage, up to the runtime stage
    sources: list[str] = []
    for line in stage.splitlines():
        if match := re.match(r"COPY\s+(?!--from)(.+)\s+\S+$", line):
            sources += match.group(1).split()
    return sources


def test_the_build_stage_copies_enough_to_build_govpipe(tmp_path: Path) -> None:
    context = tmp_path / "context"
    context.mkdir()
    for source in build_stage_copies():
        path = ROOT / source
        if path.is_dir():
            shutil.copytree(path, context / source,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, context / source)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(tmp_path / "wheels"), str(context)],
        capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    wheel = next((tmp_path / "wheels").glob("govpipe-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    packages = {name.rsplit("/", 1)[0] for name in names if name.endswith("__init__.py")}
    expected = {str(p.parent.relative_to(ROOT)) for p in ROOT.glob("pipeline/**/__init__.py")}
    expected |= {str(p.parent.relative_to(ROOT)) for p in ROOT.glob("sinks/**/__init__.py")}
    assert packages == expected
    assert not any(name.startswith("tests/") for name in names)
