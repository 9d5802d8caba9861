"""``dvc.lock`` read and written by the flow, as DVC writes it, without re-dumping every entry.

Why this exists: the flow records each finished instance in ``dvc.lock`` itself (DVC has no API
for "write this one stage's entry"). DVC's serialiser (ruamel's round-trip dumper) is pure
Python; dumping the whole file after every stage made each record cost O(entries): 0.8 s for
the default DAG's 63 entries (400 kB, most of it the code dependencies), and the flow records
every instance, so the file was dumped 63 times. Here each entry is dumped once, at the
indentation it has in the file, and the file is the concatenation; a test checks the bytes are
DVC's (``tests/flows/test_lock_text.py``). The parsed file is kept with the text it was parsed
from (or written as), and reused while the file still holds exactly that text: reading 400 kB
is cheap, parsing it is not, and a comparison of contents misses no edit by another program.
"""

from __future__ import annotations

import copy
import json
import threading
from pathlib import Path

from pipeline.core.io import atomic_write_text

HEADER = {"schema": "2.0"}


class LockText:
    """One workspace's ``dvc.lock``: the parsed data and each entry's text, cached by content."""

    def __init__(self, path: Path):
        self.path = path
        self._source: str | None = None  # the text the cached data was parsed from
        self._data: dict = {}
        self._texts: dict[str, tuple[str, str]] = {}  # name: (its exact key, its text)
        self._guard = threading.Lock()  # readers outside the record's lock share the cache

    def read(self) -> dict:
        """The file as plain data ({} when absent); a copy the caller may change."""
        with self._guard:
            if not self._refresh():
                return {}
            return copy.deepcopy(self._data)

    def excerpt(self, name: str) -> bytes | None:
        """A ``dvc.lock`` holding only ``name``'s entry (None when there is no file): what DVC
        needs to judge or record that one stage, read in a fraction of the whole file's time."""
        with self._guard:
            if not self._refresh():
                return None
            entry = (self._data.get("stages") or {}).get(name)
            data = {**HEADER, "stages": {name: entry} if entry is not None else {}}
            return self.text(data).encode()

    def update(self, entries: dict[str, dict]) -> None:
        """Add or replace ``entries`` and rewrite the file (atomically) in DVC's text."""
        with self._guard:
            data = copy.deepcopy(self._data) if self._refresh() else {}
            data = data or {**HEADER, "stages": {}}
            data.setdefault("stages", {}).update(copy.deepcopy(entries))
            text = self.text(data)
            atomic_write_text(self.path, text)
            self._data, self._source = data, text

    def text(self, data: dict) -> str:
        """DVC's text of ``data``: its header, then each entry's (cached) text in order."""
        from dvc.utils.serialize import dumps_yaml

        stages = data.get("stages")
        if set(data) != {"schema", "stages"} or data["schema"] != HEADER["schema"] or not stages:
            return dumps_yaml(data)  # not the shape this splices: DVC's dumper does it all
        return dumps_yaml({**HEADER, "stages": {}}).replace("stages: {}\n", "stages:\n") + "".join(
            self._entry_text(name, entry) for name, entry in stages.items()
        )

    def _entry_text(self, name: str, entry: dict) -> str:
        from dvc.utils.serialize import dumps_yaml

        # Exact, not ==: 1, 1.0 and True are equal in Python but not in YAML.
        key = json.dumps(entry, default=repr)
        cached = self._texts.get(name)
        if cached is not None and cached[0] == key:
            return cached[1]
        whole = dumps_yaml({**HEADER, "stages": {name: entry}})
        head = "stages:\n"
        text = whole[whole.index(head) + len(head) :]
        self._texts[name] = (key, text)
        return text

    def _refresh(self) -> bool:
        """Parse the file unless it holds the text last parsed or written; False when absent."""
        try:
            source = self.path.read_text()
        except FileNotFoundError:
            return False
        if source != self._source:
            from dvc.utils.serialize import parse_yaml

            # DVC's safe parser: six times faster than the round-trip one, same values.
            self._data = parse_yaml(source, str(self.path)) or {}
            self._source = source
        return True
