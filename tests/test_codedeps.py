"""Code dependencies derived from the source: what is followed, what is left out, folders.

Each case is a small package named ``pipeline`` written into a temporary folder, so the answer
is known by construction.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core import codedeps


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_follows_module_level_function_local_relative_and_from_imports(tmp_path):
    root = _package(
        tmp_path,
        {
            "pipeline/__init__.py": "",
            "pipeline/stage.py": (
                "from pipeline.a import helper\n"
                "from pipeline import b\n"
                "def run():\n"
                "    import pipeline.lazy.deep\n"
            ),
            "pipeline/a.py": "from .c import x\ndef helper(): pass\n",
            "pipeline/b.py": "",
            "pipeline/c.py": "x = 1\n",
            "pipeline/lazy/__init__.py": "",
            "pipeline/lazy/deep.py": "import json\n",
            "pipeline/unused.py": "",
        },
    )
    assert codedeps.module_files(["pipeline.stage"], root) == [
        "pipeline/__init__.py",
        "pipeline/a.py",
        "pipeline/b.py",
        "pipeline/c.py",
        "pipeline/lazy/__init__.py",
        "pipeline/lazy/deep.py",
        "pipeline/stage.py",
    ]


def test_type_checking_imports_and_exempt_modules_are_left_out(tmp_path):
    root = _package(
        tmp_path,
        {
            "pipeline/__init__.py": "",
            "pipeline/stage.py": (
                "from typing import TYPE_CHECKING\n"
                "import pipeline.runner\n"
                "if TYPE_CHECKING:\n"
                "    import pipeline.typed\n"
                "else:\n"
                "    import pipeline.real\n"
            ),
            "pipeline/runner.py": 'import pipeline.only_runner\nNOT_A_STAGE_DEPENDENCY = "why"\n',
            "pipeline/only_runner.py": "",
            "pipeline/typed.py": "",
            "pipeline/real.py": "",
        },
    )
    files = codedeps.module_files(["pipeline.stage"], root)
    assert files == ["pipeline/__init__.py", "pipeline/real.py", "pipeline/stage.py"]
    assert codedeps.is_exempt(root / "pipeline/runner.py", root)
    assert not codedeps.is_exempt(root / "pipeline/real.py", root)


def test_a_mark_inside_a_function_does_not_exempt(tmp_path):
    root = _package(
        tmp_path,
        {
            "pipeline/__init__.py": "",
            "pipeline/stage.py": "def f():\n    NOT_A_STAGE_DEPENDENCY = 'no'\n",
        },
    )
    assert codedeps.module_files(["pipeline.stage"], root) == [
        "pipeline/__init__.py",
        "pipeline/stage.py",
    ]


def test_import_by_computed_name_is_an_error_literal_names_are_followed(tmp_path):
    root = _package(
        tmp_path,
        {
            "pipeline/__init__.py": "",
            "pipeline/stage.py": (
                "import importlib\n"
                "importlib.import_module('pipeline.named')\n"
                "importlib.import_module(f'torchvision.{1}')\n"  # not ours
            ),
            "pipeline/named.py": "",
            "pipeline/computed.py": "import importlib\nimportlib.import_module(f'pipeline.{1}')\n",
        },
    )
    assert "pipeline/named.py" in codedeps.module_files(["pipeline.stage"], root)
    with pytest.raises(codedeps.DynamicImportError, match=r"pipeline/computed.py:2"):
        codedeps.module_files(["pipeline.computed"], root)


def test_a_folder_replaces_its_files_only_when_every_file_is_imported(tmp_path):
    root = _package(
        tmp_path,
        {
            "pipeline/__init__.py": "",
            "pipeline/all/__init__.py": "from pipeline.all import one, two\n",
            "pipeline/all/one.py": "",
            "pipeline/all/two.py": "from pipeline.all.sub import leaf\n",
            "pipeline/all/sub/__init__.py": "",
            "pipeline/all/sub/leaf.py": "",
            "pipeline/some/__init__.py": "",
            "pipeline/some/used.py": "",
            "pipeline/some/other.py": "",
            "pipeline/stage.py": "import pipeline.all\nimport pipeline.some.used\n",
        },
    )
    # Byte-code is never read by a stage (and .dvcignore'd): it does not stop a folder.
    (root / "pipeline/all/__pycache__").mkdir()
    (root / "pipeline/all/__pycache__/one.cpython-311.pyc").write_bytes(b"\0")
    expected = [
        "pipeline/__init__.py",
        "pipeline/all",
        "pipeline/some/__init__.py",
        "pipeline/some/used.py",
        "pipeline/stage.py",
    ]
    assert codedeps.code_deps(["pipeline.stage"], root) == expected
    # Any other file in the folder (a data file, a new module) lists the files instead.
    (root / "pipeline/all/notes.txt").write_text("x")
    assert "pipeline/all" not in codedeps.code_deps(["pipeline.stage"], root)
    assert "pipeline/all/sub" in codedeps.code_deps(["pipeline.stage"], root)
    (root / "pipeline/all/notes.txt").unlink()
    assert codedeps.code_deps(["pipeline.stage"], root) == expected


def test_the_answer_follows_an_edit(tmp_path):
    root = _package(
        tmp_path,
        {
            "pipeline/__init__.py": "",
            "pipeline/stage.py": "",
            "pipeline/new.py": "",
            "pipeline/other.py": "",
        },
    )
    assert "pipeline/new.py" not in codedeps.code_deps(["pipeline.stage"], root)
    (root / "pipeline/stage.py").write_text("import pipeline.new  # now it does\n")
    assert "pipeline/new.py" in codedeps.code_deps(["pipeline.stage"], root)


def test_deriving_imports_nothing_heavy():
    code = (
        "import sys; from pipeline.stages.spec import StageSpec;"
        "StageSpec(name='x', command='pretrain').code_deps;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'dvc')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
