"""The flow writes ``dvc.lock`` entries itself; the text must be what DVC would have written."""

from __future__ import annotations

import copy

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


def test_a_file_of_many_entries_is_dvcs_text_after_each_write(tmp_path):
    record = DvcRecord(tmp_path)
    expected = {"schema": "2.0", "stages": {}}
    for i in range(5):  # new entries, and an earlier one replaced in place
        name = f"stage@{i % 3}"
        entry = {**copy.deepcopy(TRICKY), "cmd": f"{TRICKY['cmd']} --n {i}"}  # no shared parts
        record.write_entries({name: entry})
        expected["stages"][name] = entry
        assert (tmp_path / LOCK_FILE).read_text() == dumps_yaml(expected)
        assert DvcRecord(tmp_path).entry(name) == entry


def test_an_edit_by_another_program_is_read_not_the_cached_text(tmp_path):
    record = DvcRecord(tmp_path)
    record.write_entries({"a@0": TRICKY})
    other = {"schema": "2.0", "stages": {"b@0": {**TRICKY, "cmd": "edited elsewhere"}}}
    (tmp_path / LOCK_FILE).write_text(dumps_yaml(other))  # e.g. a dvc commit meanwhile
    record.write_entries({"c@0": TRICKY})
    assert set(parse_yaml_for_update((tmp_path / LOCK_FILE).read_text(), LOCK_FILE)["stages"]) == {
        "b@0",
        "c@0",
    }


def test_a_same_size_rewrite_by_another_program_is_read(tmp_path):
    record = DvcRecord(tmp_path)
    record.write_entries({"a@0": TRICKY})
    path = tmp_path / LOCK_FILE
    text = path.read_text()
    edited = text.replace("md5: '1e5'", "md5: '9e9'")  # an output re-hashed: same size
    assert len(edited) == len(text) and edited != text
    path.write_text(edited)
    assert DvcRecord(tmp_path).entry("a@0")["outs"][0]["md5"] == "9e9"
    record.write_entries({"b@0": TRICKY})
    assert "md5: '9e9'" in path.read_text()


def test_equal_values_of_another_type_are_written_as_dvc_writes_them(tmp_path):
    record = DvcRecord(tmp_path)
    first = {**copy.deepcopy(TRICKY), "params": {"params.yaml": {"lr": 1, "flag": True}}}
    second = {**copy.deepcopy(TRICKY), "params": {"params.yaml": {"lr": 1.0, "flag": 1}}}
    assert first == second  # to Python; not to YAML
    record.write_entries({"a@0": first})
    record.write_entries({"a@0": second})
    expected = {"schema": "2.0", "stages": {"a@0": second}}
    assert (tmp_path / LOCK_FILE).read_text() == dumps_yaml(expected)
