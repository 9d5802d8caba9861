"""WebDataset shards: the format of a shard set and reading it by index.

A shard set is a source written once (:mod:`pipeline.data.shard_writer`) as tar files of
``(PNG, label)`` samples plus ``meta.json``. Shards decouple slow, per-file datasets from
training: small sets load fully into memory behind the ``LabeledDataset`` interface
(:class:`InMemoryShards`), large ones are read from disk as needed (:class:`ShardDataset`),
by index for evaluation and as a stream for training (:mod:`pipeline.data.shard_stream`).
"""

from __future__ import annotations

import bisect
import io
import itertools
import json
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from pipeline.core.errors import ConfigError, DatasetError
from pipeline.data.base import LabeledDataset, one_line
from pipeline.data.shard_stream import ShardStream

META_FILE = "meta.json"
FORMAT = "pipeline-shards/1"
IMAGE_KEY = "png"
LABEL_KEY = "cls"
LAYOUT = (
    f"expected {META_FILE} and <prefix>-000000.tar... webdataset shards of {IMAGE_KEY}/{LABEL_KEY} "
    "samples (written by `python -m pipeline shard`)"
)


def image_mode(channels: int) -> str:
    return "L" if channels == 1 else "RGB"


def read_meta(shard_dir: str | Path) -> dict[str, Any]:
    """``meta.json`` of a shard directory, checked against the files actually present."""
    shard_dir = Path(shard_dir).expanduser()
    path = shard_dir / META_FILE
    if not path.is_file():
        raise DatasetError(f"no shard set at {shard_dir}: {LAYOUT}")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        shards, classes, channels = meta["shards"], meta["classes"], int(meta["channels"])
        int(meta["num_samples"])
    except (ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"malformed {path} ({one_line(e)}): {LAYOUT}") from None
    if not shards or not classes or channels not in (1, 3):
        raise DatasetError(f"{path} lists no shards, no classes or bad channels: {LAYOUT}")
    missing = [s for s in shards if not (shard_dir / s).is_file()]
    if missing:
        raise DatasetError(f"shard {shard_dir / missing[0]} listed in {path} is missing: {LAYOUT}")
    return meta


def _where(sample: dict[str, Any]) -> str:
    return f"{sample.get('__url__', '?')} sample {sample.get('__key__', '?')}"


def _label(sample: dict[str, Any], num_classes: int) -> int:
    """The sample's label, after checking it has both an image and a label entry and that the
    label names one of the set's ``num_classes`` classes (else training fails far from here)."""
    if IMAGE_KEY not in sample or LABEL_KEY not in sample:
        raise DatasetError(f"shard {_where(sample)} lacks .{IMAGE_KEY} or .{LABEL_KEY}: {LAYOUT}")
    try:
        label = int(sample[LABEL_KEY])
    except ValueError:
        raise DatasetError(f"shard {_where(sample)} has a non-integer label: {LAYOUT}") from None
    if not 0 <= label < num_classes:
        raise DatasetError(
            f"shard {_where(sample)} has label {label}, outside 0..{num_classes - 1} "
            f"({num_classes} classes in {META_FILE}): {LAYOUT}"
        )
    return label


def _decode_png(data: bytes, mode: str, where: str) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.convert(mode)
    except (OSError, ValueError, SyntaxError) as e:
        raise DatasetError(f"cannot decode image in shard {where}: {one_line(e)}") from None


def _split_name(name: str) -> tuple[str, str]:
    """webdataset's naming: a sample's key is the path up to the first dot of the file name."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext


def _shard_error(path: Path, e: BaseException) -> DatasetError:
    return DatasetError(f"cannot read shard {path}: {one_line(e)}")


def _read_samples(
    path: Path, start: int = 0, stop: int | None = None
) -> Iterator[tuple[str, dict[str, bytes]]]:
    """``(key, {extension: bytes})`` of samples ``start..stop-1`` of one shard, in one forward
    pass; the data of skipped samples is seeked over, not read.

    A damaged header past the first one ends a tar early without error (that is how tarfile
    reads it); the samples then lack a member or fall short of meta.json's count, which the
    callers check."""
    n, key, parts = -1, None, {}
    try:
        with tarfile.open(path, "r:") as tar:
            while (member := tar.next()) is not None:
                tar.members.clear()  # tarfile keeps every header otherwise: memory per shard
                if not member.isfile():
                    continue
                k, ext = _split_name(member.name)
                if k != key:
                    if key is not None and n >= start:
                        yield key, parts
                    n, key, parts = n + 1, k, {}
                    if stop is not None and n >= stop:
                        return
                if n >= start:
                    parts[ext] = tar.extractfile(member).read()
    except (OSError, tarfile.TarError, EOFError) as e:
        raise _shard_error(path, e) from None
    if key is not None and n >= start:
        yield key, parts


def index_shard(path: Path) -> list[tuple[str, dict[str, tuple[int, int]]]]:
    """``(key, {extension: (data offset, size)})`` of every sample of one shard: headers only."""
    index: list[tuple[str, dict[str, tuple[int, int]]]] = []
    try:
        with tarfile.open(path, "r:") as tar:
            while (member := tar.next()) is not None:
                tar.members.clear()
                if not member.isfile():
                    continue
                k, ext = _split_name(member.name)
                if not index or index[-1][0] != k:
                    index.append((k, {}))
                index[-1][1][ext] = (member.offset_data, member.size)
    except (OSError, tarfile.TarError, EOFError) as e:
        raise _shard_error(path, e) from None
    return index


def _decode(sample: dict[str, Any], mode: str, num_classes: int) -> tuple[Image.Image, int]:
    label = _label(sample, num_classes)  # first: it checks that the sample has both members
    return _decode_png(sample[IMAGE_KEY], mode, _where(sample)), label


class ShardDataset(Dataset):
    """A shard set read from disk as needed, never held in memory; sample ``i`` is the
    ``i``-th written.

    Indexing (evaluation, the attack's chosen samples) reads only the shard holding the sample,
    indexed once by its tar headers. Training streams it instead (:meth:`training_stream`):
    whole shards read front to back, in an order drawn per epoch.
    """

    def __init__(self, shard_dir: str | Path, *, limit: int | None = None, shuffle_buffer: int = 0):
        self.shard_dir = Path(shard_dir).expanduser()
        self.meta = read_meta(self.shard_dir)
        self.paths = [self.shard_dir / s for s in self.meta["shards"]]
        self.classes: list[str] = list(self.meta["classes"])
        self.channels: int = int(self.meta["channels"])
        self.name: str = str(self.meta.get("source") or self.shard_dir.name)
        self.mode = image_mode(self.channels)
        # Sets written before meta.json recorded per-shard counts: count them from the headers.
        counts = self.meta.get("counts") or [len(index_shard(p)) for p in self.paths]
        _check_counts(self.shard_dir, counts, int(self.meta["num_samples"]))
        if limit is not None:  # the first ``limit`` samples: later shards drop out
            counts = [max(0, min(c, limit - s)) for c, s in zip(counts, _starts(counts))]
        self.counts = [c for c in counts if c]
        self.paths = self.paths[: len(self.counts)]
        self.starts = _starts(self.counts)
        self.shuffle_buffer = int(shuffle_buffer)
        self._cached: tuple[int, list, Any] | None = None  # (shard, its index, open file)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return sum(self.counts)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        shard = bisect.bisect_right(self.starts, index) - 1
        key, members = self._shard(shard)[1][index - self.starts[shard]]
        handle = self._cached[2]
        sample: dict[str, Any] = {"__key__": key, "__url__": str(self.paths[shard])}
        try:
            for ext, (offset, size) in members.items():
                if ext in (IMAGE_KEY, LABEL_KEY):
                    handle.seek(offset)
                    sample[ext] = handle.read(size)
        except OSError as e:
            raise _shard_error(self.paths[shard], e) from None
        return _decode(sample, self.mode, self.num_classes)

    def _shard(self, shard: int) -> tuple[int, list, Any]:
        """The index and an open file of ``shard``; one is kept (reads by index are mostly in
        order, so the next sample is nearly always in the same shard)."""
        if self._cached is None or self._cached[0] != shard:
            self._close()
            index = index_shard(self.paths[shard])
            if len(index) < self.counts[shard]:
                raise _short(self.paths[shard], len(index), self.counts[shard])
            self._cached = (shard, index, self.paths[shard].open("rb"))
        return self._cached

    def _close(self) -> None:
        # getattr: __del__ also runs for an instance whose __init__ raised (a missing shard)
        if getattr(self, "_cached", None) is not None:
            self._cached[2].close()
            self._cached = None

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers: no open file crosses over
        return {**self.__dict__, "_cached": None}

    def __del__(self) -> None:
        self._close()

    def __iter__(self) -> Iterator[tuple[Image.Image, int]]:
        """Every sample in order, each shard read once front to back."""
        for path, count in zip(self.paths, self.counts, strict=True):
            for sample in _read_range(path, 0, count):
                yield _decode(sample, self.mode, self.num_classes)

    def read_encoded(self, shard: int, start: int, stop: int) -> Iterator[dict[str, Any]]:
        """Samples ``start..stop-1`` of shard ``shard``, undecoded (webdataset-style dicts)."""
        return _read_range(self.paths[shard], start, stop)

    def decode(self, sample: dict[str, Any]) -> tuple[Image.Image, int]:
        return _decode(sample, self.mode, self.num_classes)

    def training_stream(self, transform: Callable | None, **options) -> ShardStream:
        """This set's training batches for one rank; ``options`` are :class:`ShardStream`'s."""
        return ShardStream(self, transform, **options)

    def __repr__(self) -> str:
        return (
            f"ShardDataset(name={self.name!r}, samples={len(self)}, shards={len(self.counts)}, "
            f"classes={self.num_classes}, channels={self.channels})"
        )


def _starts(counts: list[int]) -> list[int]:
    return [0, *itertools.accumulate(counts)][: len(counts)]


def _check_counts(shard_dir: Path, counts: Any, total: int) -> None:
    if (
        not isinstance(counts, list)
        or not all(isinstance(c, int) and c >= 0 for c in counts)
        or sum(counts) != total
    ):
        raise DatasetError(
            f"{shard_dir / META_FILE}: per-shard counts do not add up to num_samples {total}: "
            f"{LAYOUT}"
        )


def _short(path: Path, found: int, expected: int) -> DatasetError:
    return DatasetError(
        f"shard {path} holds {found} samples but {META_FILE} says {expected} (damaged or "
        "truncated): rewrite it with `python -m pipeline shard`"
    )


def _read_range(path: Path, start: int, stop: int | None) -> Iterator[dict[str, Any]]:
    """Samples ``start..stop-1`` of one shard (``stop`` None: to its end) as webdataset-style
    dicts; a shard shorter than ``stop`` fails."""
    got = 0
    for key, parts in _read_samples(path, start, stop):
        got += 1
        yield {"__key__": key, "__url__": str(path), **parts}
    if stop is not None and got < stop - start:
        raise _short(path, start + got, stop)


class InMemoryShards(LabeledDataset):
    """A whole shard set held as encoded PNG bytes: map-style, decoded per item."""

    def __init__(self, shard_dir: str | Path):
        shard_dir = Path(shard_dir).expanduser()
        meta = read_meta(shard_dir)
        self.meta = meta
        self.name = str(meta.get("source") or shard_dir.name)
        self.classes = list(meta["classes"])
        self.channels = int(meta["channels"])
        self._mode = image_mode(self.channels)
        records = []
        for shard in meta["shards"]:
            for sample in _read_range(shard_dir / shard, 0, None):
                label = _label(sample, len(self.classes))  # first: checks both members exist
                records.append((sample["__key__"], _where(sample), sample[IMAGE_KEY], label))
        if len(records) != int(meta["num_samples"]):
            raise DatasetError(
                f"shard set {shard_dir} holds {len(records)} samples but {META_FILE} says "
                f"{meta['num_samples']} (a shard is damaged or truncated): rewrite it with "
                "`python -m pipeline shard`"
            )
        records.sort(key=lambda r: r[0])
        self.keys = [r[0] for r in records]
        self._where = [r[1] for r in records]
        self._png = [r[2] for r in records]
        self.targets = [r[3] for r in records]

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return _decode_png(self._png[index], self._mode, self._where[index]), self.targets[index]


def open_shards(
    shard_dir: str | Path, *, in_memory: bool = False, **kwargs: Any
) -> ShardDataset | InMemoryShards:
    """``in_memory=True`` for small sets (every encoded sample held in memory); otherwise a
    ``ShardDataset`` read from disk as needed (``kwargs``: ``limit``, ``shuffle_buffer``).
    Both are map-style with the same interface as a source."""
    if in_memory:
        if kwargs:
            raise ConfigError(f"in-memory shards take no options; got {', '.join(sorted(kwargs))}")
        return InMemoryShards(shard_dir)
    return ShardDataset(shard_dir, **kwargs)
