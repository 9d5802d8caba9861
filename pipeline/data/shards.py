"""WebDataset shards: a source written once as tar files of ``(PNG, label)`` samples.

Shards decouple slow, per-file datasets from training: a multi-GPU stage streams them split by
node and worker, while small ones load fully into memory behind the ``LabeledDataset`` interface.
A shard directory is written atomically and is byte-for-byte reproducible (fixed tar mtimes,
lossless PNG), so DVC sees the same output for the same input.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import tarfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader, Dataset, IterableDataset
from webdataset.utils import pytorch_worker_info

from pipeline.data.base import LabeledDataset, one_line
from pipeline.core.errors import ConfigError, DatasetError

META_FILE = "meta.json"
FORMAT = "pipeline-shards/1"
IMAGE_KEY = "png"
LABEL_KEY = "cls"
LAYOUT = (
    f"expected {META_FILE} and <prefix>-000000.tar... webdataset shards of {IMAGE_KEY}/{LABEL_KEY} "
    "samples (written by `python -m pipeline shard`)"
)


def _mode(channels: int) -> str:
    return "L" if channels == 1 else "RGB"


class _Encoded(Dataset):
    """Decode + PNG-encode in DataLoader workers: the slow part of sharding parallelizes."""

    def __init__(self, dataset: LabeledDataset):
        self.dataset = dataset
        self.mode = _mode(dataset.channels)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[bytes, int]:
        img, label = self.dataset[index]
        buf = io.BytesIO()
        (img if img.mode == self.mode else img.convert(self.mode)).save(buf, format="PNG")
        return buf.getvalue(), int(label)


def write_shards(
    dataset: LabeledDataset,
    out_dir: str | Path,
    maxcount: int = 10000,
    prefix: str = "shard",
    *,
    source: str | None = None,
    extra_meta: Mapping[str, Any] | None = None,
    num_workers: int = 0,
) -> dict[str, Any]:
    """Write ``dataset`` as ``<out_dir>/<prefix>-NNNNNN.tar`` plus ``meta.json``; return the meta.

    Everything goes to a hidden sibling directory first and is renamed into place at the end, so
    ``out_dir`` holds either the previous complete set or the new complete set, never a mix.
    """
    if isinstance(maxcount, bool) or not isinstance(maxcount, int) or maxcount < 1:
        raise ConfigError(f"maxcount must be a positive integer; got {maxcount!r}")
    if not prefix or "/" in prefix or "%" in prefix or prefix.startswith("."):
        raise ConfigError(f"shard prefix must be a plain file name stem; got {prefix!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ConfigError(f"num_workers must be a non-negative integer; got {num_workers!r}")
    if len(dataset) == 0:
        raise DatasetError(f"refusing to write an empty shard set to {out_dir}: dataset is empty")
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not (
        out_dir.is_dir() and ((out_dir / META_FILE).is_file() or not any(out_dir.iterdir()))
    ):  # replacing is only safe for an earlier shard set: never delete unrelated files
        raise ConfigError(
            f"shard output {out_dir} exists and is not a shard set (no {META_FILE}); "
            "choose an empty or new directory"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        meta = _write_into(dataset, tmp, maxcount, prefix, source, extra_meta, num_workers)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def _write_into(dataset, tmp, maxcount, prefix, source, extra_meta, num_workers) -> dict[str, Any]:
    pattern = str(tmp / f"{prefix}-%06d.tar")
    encoded = DataLoader(_Encoded(dataset), batch_size=None, num_workers=num_workers)
    count = 0
    with wds.ShardWriter(pattern, maxcount=maxcount, verbose=0, mtime=0.0) as sink:
        for png, label in encoded:
            sink.write({"__key__": f"{count:09d}", IMAGE_KEY: png, LABEL_KEY: str(label)})
            count += 1
    shards = sorted(p.name for p in tmp.glob(f"{prefix}-*.tar"))
    meta = {
        **dict(extra_meta or {}),
        "format": FORMAT,
        "source": source or getattr(dataset, "name", None),
        "num_samples": count,
        "classes": list(dataset.classes),
        "channels": int(dataset.channels),
        "num_shards": len(shards),
        "shards": shards,
        "maxcount": maxcount,
    }
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


def replace_dir(new: Path, target: Path) -> None:
    """Swap ``new`` in for ``target`` by renames; the old set is deleted only after the swap."""
    if not target.exists():
        os.replace(new, target)
        return
    old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


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


def _samples(urls: Iterator[dict[str, str]]) -> Iterator[dict[str, Any]]:
    """Raw tar samples, one shard at a time so an unreadable tar is named in its DatasetError.

    A damaged header past the first one ends a tar early without error (that is how tarfile
    reads it); the samples then lack a member or fall short of meta.json's count, both checked.
    """
    for src in urls:
        try:
            yield from wds.tarfile_samples([src])
        except (OSError, tarfile.TarError, ValueError, EOFError) as e:
            # webdataset appends the stream and url to the exception's args: keep the reason
            reason = e.args[0] if e.args and isinstance(e.args[0], str) else type(e).__name__
            raise DatasetError(f"cannot read shard {src['url']}: {one_line(reason)}") from None


def _where(sample: dict[str, Any]) -> str:
    return f"{sample.get('__url__', '?')} sample {sample.get('__key__', '?')}"


def _label(sample: dict[str, Any]) -> int:
    """The sample's label, after checking it has both an image and a label entry."""
    if IMAGE_KEY not in sample or LABEL_KEY not in sample:
        raise DatasetError(f"shard {_where(sample)} lacks .{IMAGE_KEY} or .{LABEL_KEY}: {LAYOUT}")
    try:
        return int(sample[LABEL_KEY])
    except ValueError:
        raise DatasetError(f"shard {_where(sample)} has a non-integer label: {LAYOUT}") from None


def _decode_png(data: bytes, mode: str, where: str) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.convert(mode)
    except (OSError, ValueError, SyntaxError) as e:
        raise DatasetError(f"cannot decode image in shard {where}: {one_line(e)}") from None


class ShardDataset(IterableDataset):
    """Streams a shard set for training at scale: shards split by node, then by worker.

    With ``shuffle_buffer > 0`` the shard order is shuffled (identically on every rank, from
    ``seed`` and the epoch) and samples pass through a buffer of that size; call ``set_epoch``
    each epoch for a new, reproducible order. Each rank/worker sees only its shards, so a rank
    can get fewer samples than another: write at least ``world_size * num_workers`` shards.
    """

    def __init__(
        self,
        shard_dir: str | Path,
        *,
        shuffle_buffer: int = 0,
        seed: int = 0,
        transform: Callable | None = None,
    ):
        self.shard_dir = Path(shard_dir).expanduser()
        self.meta = read_meta(self.shard_dir)
        self.urls = [str(self.shard_dir / s) for s in self.meta["shards"]]
        self.classes: list[str] = list(self.meta["classes"])
        self.channels: int = int(self.meta["channels"])
        self.name: str = str(self.meta.get("source") or self.shard_dir.name)
        self.num_samples: int = int(self.meta["num_samples"])
        self.shuffle_buffer = int(shuffle_buffer)
        self.seed = int(seed)
        self.transform = transform
        self.epoch = 0

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[tuple[Any, int]]:
        urls = list(self.urls)
        rank, _, worker, _ = pytorch_worker_info()
        if self.shuffle_buffer > 0:
            random.Random(f"{self.seed}:{self.epoch}").shuffle(urls)
        src = wds.split_by_worker(wds.split_by_node({"url": u} for u in urls))
        samples = _samples(src)
        if self.shuffle_buffer > 1:
            rng = random.Random(f"{self.seed}:{self.epoch}:{rank}:{worker}")
            samples = wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng)(
                samples
            )
        mode = _mode(self.channels)
        for sample in samples:
            label = _label(sample)
            image = _decode_png(sample[IMAGE_KEY], mode, _where(sample))
            yield (self.transform(image) if self.transform else image), label


class InMemoryShards(LabeledDataset):
    """A whole shard set held as encoded PNG bytes: map-style, decoded per item."""

    def __init__(self, shard_dir: str | Path):
        shard_dir = Path(shard_dir).expanduser()
        meta = read_meta(shard_dir)
        self.meta = meta
        self.name = str(meta.get("source") or shard_dir.name)
        self.classes = list(meta["classes"])
        self.channels = int(meta["channels"])
        self._mode = _mode(self.channels)
        src = ({"url": str(shard_dir / s)} for s in meta["shards"])
        records = []
        for sample in _samples(src):
            label = _label(sample)  # first: it checks that the sample has both members
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
    """``in_memory=True`` for small sets (map-style, same interface as a source); otherwise
    a streaming ``ShardDataset`` (``kwargs``: ``shuffle_buffer``, ``seed``, ``transform``)."""
    if in_memory:
        if kwargs:
            raise ConfigError(f"in-memory shards take no options; got {', '.join(sorted(kwargs))}")
        return InMemoryShards(shard_dir)
    return ShardDataset(shard_dir, **kwargs)
