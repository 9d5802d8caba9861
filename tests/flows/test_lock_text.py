"""The flow writes ``dvc.lock`` entries itself; the text must be what DVC would have written."""

from __future__ import annotations

from dvc.utils.serialize import dumps_yaml, parse_yaml_for_update

from flows.record import LOCK_FILE, DvcRecord

# Values whose YAML spelling differs between parsers (1.1 against 1.2 booleans, exponents,
# strings that look like numbers or dates), in the places a DVC lock holds them.
TRICKY = {
    "cmd": "python -m pipeline attack --kind finetune --target a-b --seed 0",
    "deps": [{"path": "artifacts/x/model.pt", "hash": "md5", "md5": "0e1", "size": 12}],
    "params": {
        "params.yaml": {
            "attack": {"gamma": 1e-05, "budgets": [500, 1000], "precision": "fp32"},
            "names": ["on", "yes", "no", "off", "null", "1.0", "0-4", "2026-11-30", "~"],
            "flags": [True, False, None],
            "lr": 0.05,
            "big": 1.5e20,
        }
    },
    "outs": [{"path": "metrics/a/samples.csv", "hash": "md5", "md5": "1e5", "size": 3}],
}


def test_lock_entries_are_written_as_dvc_writes_them(tmp_path):
    start = {"schema": "2.0", "stages": {"first@0": TRICKY}}
    (tmp_path / LOCK_FILE).write_text(dumps_yaml(start))
    DvcRecord(tmp_path).write_entries({"second@1": TRICKY})

    # What DVC itself does: a round-trip parse of the file, the entry added, dumped again.
    expected = parse_yaml_for_update(dumps_yaml(start), LOCK_FILE)
    expected["stages"]["second@1"] = TRICKY
    written = (tmp_path / LOCK_FILE).read_text()
    assert written == dumps_yaml(expected)
    assert DvcRecord(tmp_path).entry("second@1") == TRICKY
