"""Real text from this machine for benchmarks: the Python standard library's own sources."""

from __future__ import annotations

import sysconfig
from pathlib import Path


def stdlib_text(num_bytes: int, skip: int = 0, *, tests: bool = False) -> bytes:
    """`num_bytes` of Python source, concatenated in a fixed (sorted) file order after skipping `skip` bytes.

    With `tests`, only the standard library's test suite: code the base model never trained on
    (the corpus excludes it), so learning from it is measured on unseen text.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    out, seen = bytearray(), 0
    for path in sorted(root.rglob("*.py")):
        if ("test" in path.parts) != tests or "site-packages" in path.parts:
            continue
        data = path.read_bytes()
        if seen + len(data) <= skip:
            seen += len(data)
            continue
        data = data[max(0, skip - seen) :]
        seen = skip
        out += data
        if len(out) >= num_bytes:
            return bytes(out[:num_bytes])
    raise RuntimeError(f"the standard library holds fewer than {num_bytes + skip} bytes of source")
