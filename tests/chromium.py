"""Render a page in the real headless Chromium (Debian's `chromium`, installed by
scripts/install-system-deps.sh): its DOM after load, its console messages, a screenshot."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# Headless Chromium as root in a container: no sandbox, no GPU, no first-run or network extras.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]
CONSOLE = re.compile(r":CONSOLE(?::\d+|\(\d+\))\] (.*)")


@dataclass(frozen=True)
class Rendered:
    dom: str
    console: list[str]


def binary() -> str | None:
    """The Chromium executable, None when it is not installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def render(page: Path, screenshot: Path | None = None, size: str = "1100,1600") -> Rendered:
    """Load `page` (a file) and return its DOM and console messages; optionally a screenshot."""
    exe = binary()
    assert exe, "chromium is not installed (scripts/install-system-deps.sh)"
    url = page.resolve().as_uri()
    done = subprocess.run(
        [exe, *FLAGS, "--dump-dom", url], capture_output=True, text=True, timeout=60, check=True
    )
    if screenshot is not None:
        subprocess.run(
            [exe, *FLAGS, f"--screenshot={screenshot}", f"--window-size={size}", url],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    return Rendered(done.stdout, CONSOLE.findall(done.stderr))
