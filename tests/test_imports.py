"""Importing the project has no side effects on disk: no module creates a directory or file."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("models", "memory", "learner", "workers", "agent")

IMPORT_EVERYTHING = f"""
import importlib, pkgutil, sys
sys.path.insert(0, {str(ROOT)!r})
imported = []
for name in {PACKAGES!r}:
    package = importlib.import_module(name)
    imported.append(name)
    for module in pkgutil.walk_packages(package.__path__, prefix=name + "."):
        importlib.import_module(module.name)
        imported.append(module.name)
print(len(imported))
"""


def test_importing_every_module_creates_nothing_in_the_working_directory(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("LIFELONG_")}
    result = subprocess.run([sys.executable, "-c", IMPORT_EVERYTHING], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) > 50  # every package and its modules were imported
    assert list(tmp_path.iterdir()) == []
