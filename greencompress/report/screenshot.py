"""A picture of report.html as a person would see it, taken by headless Chromium."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from greencompress.core.errors import GreencompressError

_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Headless, no sandbox (root in containers), and nothing that reaches the network: the page is self-contained.
HEADLESS_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def find_browser() -> str:
    """Path of a Chromium-family browser; GreencompressError saying how to install one when there is none."""
    for name in _BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    raise GreencompressError(
        "no Chromium found for the screenshot: install one (Debian/Ubuntu: apt-get install "
        "chromium) or leave out --screenshot; report.html is written either way"
    )


def run_headless(arguments: list[str], profile: Path, timeout_s: float = 120) -> subprocess.CompletedProcess:
    """Run the browser headless with a fresh profile folder and the given extra arguments."""
    command = [find_browser(), *HEADLESS_FLAGS, f"--user-data-dir={profile}", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)


def screenshot_html(html: Path, png: Path, width: int = 1200, height: int = 2600) -> Path:
    """Save a PNG of `html` rendered at `width` x `height` pixels."""
    import tempfile

    with tempfile.TemporaryDirectory() as profile:
        result = run_headless(
            [f"--screenshot={png.resolve()}", f"--window-size={width},{height}", html.resolve().as_uri()], Path(profile)
        )
    if result.returncode != 0 or not png.is_file():
        raise GreencompressError(f"screenshot of {html} failed (exit {result.returncode}): {result.stderr[-500:]}")
    return png
