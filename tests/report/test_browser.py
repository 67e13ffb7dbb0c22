"""report.html as a person sees it: loaded in headless Chromium, no console errors, every plot drawn."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import pytest

from greencompress.report.screenshot import run_headless, screenshot_html

pytestmark = pytest.mark.skipif(
    not any(shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")),
    reason="no Chromium on this machine (.ci/run installs Debian's chromium)",
)

# Injected into a copy of the page by the test only: records errors and checks every image decoded.
PROBE = """
<script>
  var problems = [];
  window.addEventListener('error', function (e) { problems.push('error: ' + e.message); }, true);
  var originalError = console.error;
  console.error = function () {
    problems.push('console.error: ' + Array.from(arguments).join(' '));
    originalError.apply(console, arguments);
  };
  window.addEventListener('load', function () {
    var images = Array.from(document.images);
    var drawn = images.filter(function (img) { return img.complete && img.naturalWidth > 0; }).length;
    document.body.setAttribute('data-probe',
                               'images=' + images.length + ';drawn=' + drawn + ';problems=' + problems.length);
    document.body.setAttribute('data-problems', problems.join(' | '));
  });
</script>
"""


def test_report_renders_in_chromium_without_errors_and_with_every_plot(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    html = (run_dir / "report.html").read_text()
    probed = tmp_path / "probed.html"
    probed.write_text(html.replace("<head>", "<head>" + PROBE, 1))
    with tempfile.TemporaryDirectory() as profile:
        result = run_headless(["--virtual-time-budget=5000", "--dump-dom", probed.as_uri()], Path(profile))
    assert result.returncode == 0, result.stderr[-1000:]
    probe = re.search(r'data-probe="images=(\d+);drawn=(\d+);problems=(\d+)"', result.stdout)
    assert probe, result.stdout[:500]
    images, drawn, problems = map(int, probe.groups())
    assert images == 3 and drawn == 3 and problems == 0, re.search(r'data-problems="([^"]*)"', result.stdout).group(1)
    # The estimate meter measured CPU time: the headline says so, never "energy saved".
    assert re.search(r"(less|MORE) CPU time|no CPU time difference", result.stdout)
    assert "energy saved" not in result.stdout and "energy was not measured on this machine" in result.stdout


def test_screenshot_is_a_real_picture(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    png = screenshot_html(run_dir / "report.html", tmp_path / "report.png", width=900, height=1400)
    from PIL import Image

    with Image.open(png) as image:
        assert image.size == (900, 1400)
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
    assert colours is not None and len(colours) > 50  # text, tables and plots, not a blank page
