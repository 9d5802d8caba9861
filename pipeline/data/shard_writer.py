"""Writing a shard set: a source encoded once as tar files of ``(PNG, label)`` samples.

A shard directory is written atomically (a hidden sibling renamed into place) and is
byte-for-byte reproducible (fixed tar mtimes, lossless PNG), so DVC sees the same output for the
same input. The format it writes is read by :mod:`pipeline.data.shards`.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, Dataset

from pipeline.core.errors import ConfigError, DatasetError
from pipeline.data.base import LabeledDataset
from pipeline.data.loaders import mix_seed
from pipeline.data.shards import FORMAT, IMAGE_KEY, LABEL_KEY, META_FILE, image_mode, index_shard


class _Encoded(Dataset):
    """Decode + PNG-encode in DataLoader workers: the slow part of sharding parallelizes."""

    def __init__(self, dataset: LabeledDataset, order: list[int] | None = None):
        self.dataset, self.order = dataset, order
        self.mode = image_mode(dataset.channels)

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
    _check_replaceable(out_dir)
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


def _check_replaceable(out_dir: Path) -> None:
    """Replacing ``out_dir`` is only safe for an earlier shard set holding nothing else: a file
    a user put there (or any folder that is not a set) is never deleted by a rewrite."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ConfigError(f"shard output {out_dir} exists and is not a directory")
    present = {p.name for p in out_dir.iterdir()}
    if not present:
        return
    if META_FILE not in present:
        raise ConfigError(
            f"shard output {out_dir} exists and is not a shard set (no {META_FILE}); "
            "choose an empty or new directory"
        )
    try:
        listed = json.loads((out_dir / META_FILE).read_text()).get("shards")
    except (OSError, ValueError, AttributeError):
        listed = None
    if not isinstance(listed, list):
        raise ConfigError(f"{out_dir / META_FILE}: not a shard set's meta (no list of shards); "
                          "choose an empty or new directory")  # fmt: skip
    foreign = sorted(present - {META_FILE, *map(str, listed)})
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise ConfigError(
            f"shard output {out_dir} holds {foreign[0]}{more}, which is not part of its shard "
            "set; a rewrite would delete it: move it away or choose another directory"
        )


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
        "counts": [len(index_shard(tmp / s)) for s in shards],
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
