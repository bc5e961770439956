"""A reproducible training corpus from what an ordinary machine already has.

Sources: the Python standard library's source and its pydoc topics, and, when
their Debian packages are installed, GCIDE (dict-gcide), the Jargon File
(dict-jargon) and fortunes; plus synthetic long-range tasks over that text.
Nothing is downloaded. Each document goes to a fixed split (held-out when a
hash of its name says so), so the held-out set never changes between builds.

Layout of a built corpus:
    manifest.json                      sources, licences, sizes, checksums, split rule
    {train,heldout}/{source}.bin       documents concatenated
    {train,heldout}/{source}.json      [[name, offset, length], ...]
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sysconfig
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from learner.synthetic import KINDS, synthetic_documents

FORMAT = 1
SPLITS = ("train", "heldout")
HELD_OUT_PERCENT = 5
LONG_DOCUMENT = 64 * 1024  # record-sized sources are joined into documents of about this size
# Filler for the synthetic tasks, per natural source and split. A cap per source (not one for all) keeps
# every kind of text in the mix: a single 8 MiB cap filled up with the dictionary before the Jargon File
# or the fortunes were reached, so no synthetic task was ever read in them.
FILLER_BYTES_PER_SOURCE = 2 * 1024 * 1024


@dataclass(frozen=True)
class Source:
    name: str
    licence: str
    origin: str  # where the bytes come from on this machine
    documents: Callable[[], Iterator[tuple[str, bytes]]]
    available: Callable[[], bool]


def _stdlib() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _python_source() -> Iterator[tuple[str, bytes]]:
    root = _stdlib()
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if {"test", "tests", "idle_test", "site-packages"} & set(relative.parts):
            continue
        yield str(relative), path.read_bytes()


def _python_docs() -> Iterator[tuple[str, bytes]]:
    from pydoc_data.topics import topics

    yield from _grouped(((name, text.encode()) for name, text in sorted(topics.items())), "topics")


def _grouped(records: Iterator[tuple[str, bytes]], prefix: str) -> Iterator[tuple[str, bytes]]:
    """Join small records into documents of about LONG_DOCUMENT bytes, so state can carry across them."""
    batch, size, index = [], 0, 0
    for _, data in records:
        batch.append(data)
        size += len(data)
        if size >= LONG_DOCUMENT:
            yield f"{prefix}-{index:05d}", b"\n\n".join(batch)
            batch, size, index = [], 0, index + 1
    if batch:
        yield f"{prefix}-{index:05d}", b"\n\n".join(batch)


def _dictd(path: Path) -> Callable[[], Iterator[tuple[str, bytes]]]:
    def documents() -> Iterator[tuple[str, bytes]]:
        with gzip.open(path) as handle:  # dictzip files are gzip-compatible
            text = handle.read()
        yield from _grouped(((str(i), entry) for i, entry in enumerate(text.split(b"\n\n"))), path.stem.split(".")[0])

    return documents


FORTUNES = Path("/usr/share/games/fortunes")


def _fortunes() -> Iterator[tuple[str, bytes]]:
    for path in sorted(FORTUNES.rglob("*")):
        if path.is_file() and not path.suffix and not path.is_symlink():
            yield str(path.relative_to(FORTUNES)), path.read_bytes()


GCIDE = Path("/usr/share/dictd/gcide.dict.dz")
JARGON = Path("/usr/share/dictd/jargon.dict.dz")

SOURCES: tuple[Source, ...] = (
    Source("python-source", "PSF-2.0", "the Python standard library's .py files (tests excluded)",
           _python_source, lambda: True),
    Source("python-docs", "PSF-2.0", "pydoc_data.topics (Python's reference documentation as text)",
           _python_docs, lambda: True),
    Source("gcide", "GPL-3.0-or-later", f"{GCIDE} (Debian package dict-gcide)", _dictd(GCIDE), GCIDE.exists),
    Source("jargon", "public domain", f"{JARGON} (Debian package dict-jargon)", _dictd(JARGON), JARGON.exists),
    Source("fortunes", "BSD-3-Clause and public domain (see /usr/share/doc/fortunes*/copyright)",
           f"{FORTUNES} (Debian packages fortunes, fortunes-min)", _fortunes, FORTUNES.exists),
)


def _rank(source: str, document: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{source}/{document}".encode()).digest()[:4], "big")


def assign_splits(source: str, names: list[str]) -> list[str]:
    """Held-out when the name's hash says so; a source that would get none gives up its lowest-ranked one."""
    ranks = [_rank(source, name) for name in names]
    splits = ["heldout" if rank % 100 < HELD_OUT_PERCENT else "train" for rank in ranks]
    if len(names) >= 2 and "heldout" not in splits:
        splits[min(range(len(names)), key=ranks.__getitem__)] = "heldout"
    return splits


class _ShardWriter:
    def __init__(self, directory: Path, source: str):
        self.paths = {split: directory / split / f"{source}.bin" for split in SPLITS}
        self.handles = {split: path.open("wb") for split, path in self.paths.items()}
        self.index: dict[str, list[list]] = {split: [] for split in SPLITS}
        self.offsets = dict.fromkeys(SPLITS, 0)
        self.hashes = {split: hashlib.sha256() for split in SPLITS}

    def write(self, split: str, name: str, data: bytes) -> None:
        self.handles[split].write(data)
        self.hashes[split].update(data)
        self.index[split].append([name, self.offsets[split], len(data)])
        self.offsets[split] += len(data)

    def close(self) -> dict[str, dict]:
        summary = {}
        for split in SPLITS:
            self.handles[split].close()
            self.paths[split].with_suffix(".json").write_text(json.dumps(self.index[split]))
            summary[split] = {"documents": len(self.index[split]), "bytes": self.offsets[split],
                              "sha256": self.hashes[split].hexdigest()}
        return summary


def build_corpus(out: Path, *, seed: int = 0, synthetic_per_split: dict[str, int] | None = None,
                 max_bytes_per_source: int | None = None, sources: tuple[Source, ...] = SOURCES,
                 synthetic_kinds: tuple[str, ...] = KINDS[:3], synthetic_min_distance: int = 1_000,
                 filler_bytes_per_source: int = FILLER_BYTES_PER_SOURCE) -> dict:
    """Write the corpus under `out` and return its manifest.

    The synthetic options make copy-dense variants for fine-tuning (e.g. short
    distances and random records, so in-context copying is learned first).
    """
    synthetic_per_split = synthetic_per_split or {"train": 4_000, "heldout": 100}
    out = Path(out)
    for split in SPLITS:
        (out / split).mkdir(parents=True, exist_ok=True)
    manifest: dict = {
        "format": FORMAT,
        "seed": seed,
        "held_out_rule": f"sha256(source/document) % 100 < {HELD_OUT_PERCENT}",
        "sources": [],
    }
    prose: dict[str, bytearray] = {split: bytearray() for split in SPLITS}  # filler for the synthetic tasks
    for source in sources:
        entry = {"name": source.name, "licence": source.licence, "origin": source.origin}
        if not source.available():
            manifest["sources"].append({**entry, "included": False, "reason": "not installed on this machine"})
            continue
        documents, written = [], 0
        filler_taken = dict.fromkeys(SPLITS, 0)  # bytes of this source in each split's synthetic filler
        for name, data in source.documents():
            if max_bytes_per_source is not None and written >= max_bytes_per_source:
                break
            documents.append((name, data))
            written += len(data)
        writer = _ShardWriter(out, source.name)
        for (name, data), split in zip(documents, assign_splits(source.name, [name for name, _ in documents])):
            writer.write(split, name, data)
            if source.name != "python-source" and filler_taken[split] < filler_bytes_per_source:
                prose[split] += data
                filler_taken[split] += len(data)
        manifest["sources"].append({**entry, "included": True, "splits": writer.close()})
    writer = _ShardWriter(out, "synthetic")
    for split_number, split in enumerate(SPLITS):
        pool = bytes(prose[split]) or b"The quick brown fox jumps over the lazy dog. "
        for name, data in synthetic_documents(
            pool,
            count=synthetic_per_split[split],
            seed=seed * 2 + split_number,
            kinds=synthetic_kinds,
            min_distance=synthetic_min_distance,
        ):
            writer.write(split, name, data)
    manifest["sources"].append(
        {
            "name": "synthetic",
            "licence": "generated",
            "included": True,
            "origin": "learner.synthetic over this corpus's own prose",
            "kinds": list(synthetic_kinds),
            "min_distance": synthetic_min_distance,
            "filler_bytes_per_source": filler_bytes_per_source,
            "splits": writer.close(),
        }
    )
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


@dataclass(frozen=True)
class Document:
    source: str
    name: str
    data: bytes


def read_documents(corpus: Path, split: str, sources: tuple[str, ...] | None = None) -> Iterator[Document]:
    """Documents of one split of a built corpus, source by source, in build order."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    manifest = json.loads((Path(corpus) / "manifest.json").read_text())
    for entry in manifest["sources"]:
        if not entry["included"] or (sources is not None and entry["name"] not in sources):
            continue
        shard = Path(corpus) / split / f"{entry['name']}.bin"
        index = json.loads(shard.with_suffix(".json").read_text())
        with shard.open("rb") as handle:
            for name, offset, length in index:
                handle.seek(offset)
                yield Document(entry["name"], name, handle.read(length))
