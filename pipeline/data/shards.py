"""WebDataset shards: a source written once as tar files of ``(PNG, label)`` samples.

Shards decouple slow, per-file datasets from training: a multi-GPU stage streams them split by
node and worker, while small ones load fully into memory behind the ``LabeledDataset`` interface.
A shard directory is written atomically and is byte-for-byte reproducible (fixed tar mtimes,
lossless PNG), so DVC sees the same output for the same input.
"""

from __future__ import annotations

import bisect
import io
import itertools
import json
import os
import random
import shutil
import tarfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info
from torch.utils.data.dataloader import default_collate

from pipeline.core.errors import ConfigError, DatasetError
from pipeline.data.base import LabeledDataset, one_line
from pipeline.data.loaders import mix_seed, seeded_call

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

    def __init__(self, dataset: LabeledDataset, order: list[int] | None = None):
        self.dataset, self.order = dataset, order
        self.mode = _mode(dataset.channels)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[bytes, int]:
        img, label = self.dataset[index if self.order is None else self.order[index]]
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
    shuffle_seed: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write ``dataset`` as ``<out_dir>/<prefix>-NNNNNN.tar`` plus ``meta.json``; return the meta.

    With ``shuffle_seed`` the samples are written in an order drawn from it: sources list
    samples class by class, and a stream's shuffle buffer only mixes within a few shards, so a
    set meant for streamed training must be mixed once here (sample ``i`` of the set is source
    sample ``write_order(n, shuffle_seed)[i]``). ``progress(count)`` is called after each
    sample written.
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
        meta = _write_into(
            dataset, tmp, maxcount, prefix, source, extra_meta, num_workers, shuffle_seed, progress
        )
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def write_order(n: int, shuffle_seed: int | None) -> list[int] | None:
    """The source index of each written sample (``None``: the source's own order)."""
    if shuffle_seed is None:
        return None
    order = list(range(n))
    random.Random(mix_seed(shuffle_seed)).shuffle(order)
    return order


def _write_into(
    dataset, tmp, maxcount, prefix, source, extra_meta, num_workers, shuffle_seed, progress=None
) -> dict[str, Any]:
    pattern = str(tmp / f"{prefix}-%06d.tar")
    order = write_order(len(dataset), shuffle_seed)
    encoded = DataLoader(_Encoded(dataset, order), batch_size=None, num_workers=num_workers)
    count = 0
    # Only writing needs webdataset (~2 s to import); every reader here is tarfile alone.
    import webdataset as wds

    with wds.ShardWriter(pattern, maxcount=maxcount, verbose=0, mtime=0.0) as sink:
        for png, label in encoded:
            sink.write({"__key__": f"{count:09d}", IMAGE_KEY: png, LABEL_KEY: str(label)})
            count += 1
            if progress is not None:
                progress(count)
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
        # ShardWriter also starts a new shard at 3 GB, so counts are read back, not assumed.
        "counts": [len(_index_shard(tmp / s)) for s in shards],
        "maxcount": maxcount,
        "shuffle_seed": shuffle_seed,
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


def _index_shard(path: Path) -> list[tuple[str, dict[str, tuple[int, int]]]]:
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
        self.mode = _mode(self.channels)
        # Sets written before meta.json recorded per-shard counts: count them from the headers.
        counts = self.meta.get("counts") or [len(_index_shard(p)) for p in self.paths]
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
            index = _index_shard(self.paths[shard])
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


Segment = tuple[int, int, int]  # (shard, first sample, end sample) within that shard


def _take(segments: list[Segment], lo: int, hi: int) -> list[Segment]:
    """Positions ``lo..hi-1`` of the sample sequence that ``segments`` lay end to end."""
    out, pos = [], 0
    for shard, a, b in segments:
        s, e = max(lo, pos), min(hi, pos + b - a)
        if s < e:
            out.append((shard, a + s - pos, a + e - pos))
        pos += b - a
    return out


def epoch_segments(
    counts: list[int], seed: int, epoch: int, rank: int, world: int
) -> list[Segment]:
    """Rank ``rank``'s share of epoch ``epoch``, before the shuffle buffer.

    The shards, in an order drawn from ``(seed, epoch)``, make one sequence of ``n`` samples;
    rank ``r`` takes positions ``[r p, (r + 1) p)`` with ``p = ceil(n / world)``, wrapping to
    the start for the last rank (every rank gets ``p``, so DDP steps stay in lockstep). A rank
    thus reads whole shards but at most two shared with a neighbour.
    """
    n = sum(counts)
    order = list(range(len(counts)))
    random.Random(mix_seed(seed, epoch)).shuffle(order)
    sequence = [(s, 0, counts[s]) for s in order if counts[s]]
    per_rank = -(-n // world)
    lo, hi = rank * per_rank, (rank + 1) * per_rank
    # Wrapping covers at most one extra pass: world > n has no sample for some ranks anyway.
    return _take(sequence, lo, min(hi, n)) + _take(sequence, max(lo, n) - n, hi - n)


def worker_batches(steps: int, workers: int) -> list[int]:
    """Batches per DataLoader worker: contiguous blocks, the first ``steps % workers`` one longer."""
    workers = max(workers, 1)
    return [steps // workers + (w < steps % workers) for w in range(workers)]


def delivered(counts: list[int], steps: int) -> tuple[list[int], int]:
    """Batches each worker had delivered after ``steps`` loader steps, and the worker whose
    batch comes next.

    A DataLoader over an iterable dataset takes batches from its workers in turn, skipping
    workers that have run out: batch ``t`` of every worker still going, round after round.
    """
    out = [0] * len(counts)
    left = steps
    for t in range(max(counts, default=0)):
        for w, c in enumerate(counts):
            if c > t:
                if left == 0:
                    return out, w
                out[w] += 1
                left -= 1
    return out, 0


def _shuffled(items: Iterator[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """A bounded shuffle: each incoming item swaps with a random one of ``size`` held."""
    if size <= 1:
        yield from items
        return
    held: list[Any] = []
    for item in items:
        if len(held) < size:
            held.append(item)
            continue
        j = rng.randrange(size)
        yield held[j]
        held[j] = item
    rng.shuffle(held)
    yield from held


class ShardStream(IterableDataset):
    """One rank's training batches over a :class:`ShardDataset`, epoch by epoch.

    The rank's share (:func:`epoch_segments`) is cut into ``steps = share // batch_size`` batches,
    handed to the DataLoader workers as contiguous blocks; each worker reads its shards front to
    back through a shuffle buffer seeded by ``(seed, epoch, rank, worker)``, and sample ``i`` is
    augmented under the seed ``(augment_seed, epoch, i)``, as :class:`SeededTransform` does.
    The order therefore depends only on the seed, the epoch, the world size and the number of
    workers; ``set_epoch(e, skip)`` resumes after ``skip`` batches, each worker dropping (before
    decoding) exactly the samples of the batches it had delivered.
    """

    def __init__(
        self,
        shards: ShardDataset,
        transform: Callable | None,
        *,
        batch_size: int,
        order_seed: int,
        augment_seed: int,
        rank: int = 0,
        world: int = 1,
        num_workers: int = 0,
    ):
        if not 0 <= rank < world:
            raise ConfigError(f"rank {rank} is outside world size {world}")
        self.shards, self.transform = shards, transform
        self.batch_size, self.order_seed, self.augment_seed = batch_size, order_seed, augment_seed
        self.rank, self.world, self.num_workers = rank, world, num_workers
        self.per_rank = -(-len(shards) // world)
        self.steps_per_epoch = self.per_rank // batch_size
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = int(epoch), int(skip)

    def worker_plan(self, worker: int) -> tuple[list[Segment], int]:
        """The segments worker ``worker`` reads this epoch and the batches it skips first."""
        counts = worker_batches(self.steps_per_epoch, self.num_workers)
        first = sum(counts[:worker]) * self.batch_size
        share = epoch_segments(
            self.shards.counts, self.order_seed, self.epoch, self.rank, self.world
        )
        segments = _take(share, first, first + counts[worker] * self.batch_size)
        return segments, delivered(counts, self.skip)[0][worker]

    def _role(self, loader_worker: int) -> int:
        """The block a DataLoader worker reads. A loader starts its round robin at worker 0, so
        a resumed epoch rotates the roles: its worker 0 takes the block whose batch is next."""
        counts = worker_batches(self.steps_per_epoch, self.num_workers)
        return (loader_worker + delivered(counts, self.skip)[1]) % len(counts)

    def _samples(self, segments: list[Segment]) -> Iterator[tuple[int, dict[str, Any]]]:
        for shard, a, b in segments:
            first = self.shards.starts[shard]
            for i, sample in enumerate(_read_range(self.shards.paths[shard], a, b)):
                yield first + a + i, sample

    def __iter__(self) -> Iterator[tuple[Any, torch.Tensor]]:
        info = get_worker_info()
        if (1 if info is None else info.num_workers) != max(self.num_workers, 1):
            raise ConfigError("ShardStream: read it through a DataLoader with its num_workers")
        worker = self._role(0 if info is None else info.id)
        segments, skip = self.worker_plan(worker)
        rng = random.Random(mix_seed(self.order_seed, self.epoch, self.rank, worker))
        samples = _shuffled(self._samples(segments), self.shards.shuffle_buffer, rng)
        batch = []
        for index, sample in itertools.islice(samples, skip * self.batch_size, None):
            image, label = _decode(sample, self.shards.mode, self.shards.num_classes)
            if self.transform is not None:
                seed = mix_seed(self.augment_seed, self.epoch, index)
                image = seeded_call(self.transform, image, seed)
            batch.append((image, label))
            if len(batch) == self.batch_size:
                yield default_collate(batch)
                batch = []

    def __len__(self) -> int:
        return self.steps_per_epoch - self.skip


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
