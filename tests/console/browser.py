"""Headless Chromium (Debian's package) driven by Playwright for Python, for the console's tests and its
screenshots. Playwright's own browser downloads are never used: the system's chromium is named."""

from __future__ import annotations

import shutil

from tests.dbs import IN_CI


def chromium_or_skip() -> str:
    """The path of the system's chromium; skips locally (fails under CI=true, where it must be there)."""
    import pytest

    path = shutil.which("chromium")
    if path is None:
        reason = "no chromium on PATH: install Debian's package (apt-get install chromium) to run the console's tests"
        if IN_CI:
            pytest.fail(reason + " (CI=true: the README's test command installs it)")
        pytest.skip(reason)
    return path


def launch(playwright, executable: str):
    # --no-sandbox: CI containers run as root, where Chromium's sandbox cannot start; their /dev/shm is
    # often 64 MB, too small for Chromium's shared memory, hence --disable-dev-shm-usage.
    return playwright.chromium.launch(executable_path=executable, headless=True,
                                      args=["--no-sandbox", "--disable-dev-shm-usage"])
