"""The README matches the code: the stages the CLI has, the folders the rules write to
(reprozoo/stages.py, where every artifact path lives), and the files it cites."""
import argparse
import os
import re

from conftest import ROOT
from reprozoo.cli import build_parser
from reprozoo.stages import PATHS

README = (ROOT / "README.md").read_text()


def outputs_table() -> str:
    start = README.index("| stage | output |")
    return README[start:README.index("\n\n", start)]


def test_the_stage_list_names_every_cli_stage():
    stages = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    sentence = README[README.index("Stages: "):README.index("Errors are one line")]
    assert set(re.findall(r"`([a-z-]+)`", sentence)) == set(stages)


def test_the_outputs_table_has_a_row_per_rule_and_every_artifact_folder():
    rules = {r for f in (ROOT / "rules").glob("*.smk") for r in re.findall(r"^rule (\w+):", f.read_text(), re.M)}
    table = outputs_table()
    assert {row.split("|")[1].strip() for row in table.splitlines()[2:]} == rules
    paths = list(PATHS.values())
    assert len(paths) > 15
    missing = [p for p in paths if os.path.dirname(p) + "/" not in table]  # e.g. train/{model}/seed{seed}/
    assert missing == []


def test_files_the_readme_and_the_tests_cite_exist():
    """Paths into the repository's own folders, and its *.md files (not temporary or example files)."""
    cited = set()
    for text in [README, *(f.read_text() for f in (ROOT / "tests").glob("*.py"))]:
        cited |= set(re.findall(r"(?<![\w./{-])((?:tests|reprozoo|rules|workflow|config|envs|profiles|benchmarks)"
                                r"/[\w./-]*\w|[A-Z]+\.md)\b(?!\{)", text))
    assert sorted(p for p in cited if not (ROOT / p).exists()) == []
