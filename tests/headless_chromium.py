"""Open a local page in headless Chromium: its rendered DOM, its console messages and a screenshot.

No driver or CDP client: Chromium's own --dump-dom and --screenshot, with --enable-logging=stderr,
which writes every console message (and failed loads) to stderr as `CONSOLE` lines. The profile is a
fresh empty folder and every background service that would reach the network is off.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
         "--disable-default-apps", "--mute-audio")
# e.g. `[1:1:1202/140733.789130:INFO:CONSOLE:1] "planted failure", source: file:///tmp/page.html (1)`;
# every level (log, warning, error) is written as INFO, so the caller decides what counts.
_CONSOLE = re.compile(r'CONSOLE[:(]\d+\)?\] "(?P<message>.*)", source: (?P<source>\S*)')


@dataclass
class PageLoad:
    """The DOM after load and the console lines (errors and others) that the page produced."""

    dom: str
    console: list[str]


def chromium() -> str:
    return shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"


def load(page: Path, *, timeout: float = 90.0) -> PageLoad:
    """Load `page` (a local file) and return its DOM and console messages."""
    with tempfile.TemporaryDirectory(prefix="unitvox-chromium-") as profile:
        done = subprocess.run(
            [chromium(), *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
             "--virtual-time-budget=3000", "--dump-dom", page.resolve().as_uri()],
            capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"chromium exited {done.returncode}: {done.stderr[-2000:]}")
    console = [f"{m['message']} ({m['source']})" for m in map(_CONSOLE.search, done.stderr.splitlines()) if m]
    return PageLoad(dom=done.stdout, console=console)


def screenshot(page: Path, output: Path, *, width: int = 1280, height: int = 2000, timeout: float = 90.0) -> Path:
    """A PNG of `page` at `width` x `height` pixels, written to `output`."""
    with tempfile.TemporaryDirectory(prefix="unitvox-chromium-") as profile:
        done = subprocess.run(
            [chromium(), *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
             "--hide-scrollbars", f"--screenshot={output.resolve()}", page.resolve().as_uri()],
            capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0 or not output.exists():
        raise RuntimeError(f"chromium screenshot failed ({done.returncode}): {done.stderr[-2000:]}")
    return output
