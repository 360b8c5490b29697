"""The README and the pages under docs/ match the code: the stages the CLI has (docs/cli.md),
the folders the rules write to (docs/pipeline.md; reprozoo/stages.py, where every artifact
path lives) and the files they cite. The README stays short, no page records a commit, and
the pages build with mkdocs --strict (every link between them resolves)."""
import argparse
import os
import re
import subprocess

from conftest import BIN, ROOT
from reprozoo.cli import build_parser
from reprozoo.stages import PATHS

README = (ROOT / "README.md").read_text()
DOCS = sorted((ROOT / "docs").glob("*.md"))
# As /work/shared/hooks/before-stop finds them: 7 to 12 hex digits, not inside a longer
# word, path or number, with at least one digit and one letter a-f.
HEX = re.compile(r"(?<![-_./0-9A-Za-z])[0-9a-f]{7,12}\b")


def page(name: str) -> str:
    return (ROOT / "docs" / name).read_text()


def outputs_table() -> str:
    text = page("pipeline.md")
    start = text.index("| stage | output |")
    return text[start:text.index("\n\n", start)]


def commit_hashes(text: str) -> list[str]:
    return [h for h in HEX.findall(text) if re.search(r"[0-9]", h) and re.search(r"[a-f]", h)]


def test_the_stage_list_names_every_cli_stage():
    stages = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    text = page("cli.md")
    sentence = text[text.index("Stages: "):text.index("Errors are one line")]
    assert set(re.findall(r"`([a-z-]+)`", sentence)) == set(stages)


def test_the_outputs_table_has_a_row_per_rule_and_every_artifact_folder():
    rules = {r for f in (ROOT / "rules").glob("*.smk") for r in re.findall(r"^rule (\w+):", f.read_text(), re.M)}
    table = outputs_table()
    # and `resolve`: the section files, which the Snakefile writes (DVC: its resolve stage)
    assert {row.split("|")[1].strip() for row in table.splitlines()[2:]} == rules | {"resolve"}
    paths = list(PATHS.values())
    assert len(paths) > 15
    missing = [p for p in paths if os.path.dirname(p) + "/" not in table]  # e.g. train/{model}/seed{seed}/
    assert missing == []


def test_files_the_readme_the_docs_and_the_tests_cite_exist():
    """Paths into the repository's own folders, and its *.md files (not temporary or example files)."""
    cited = set()
    for text in [README, *(f.read_text() for f in DOCS), *(f.read_text() for f in (ROOT / "tests").glob("*.py"))]:
        cited |= set(re.findall(r"(?<![\w./{-])((?:tests|reprozoo|rules|workflow|config|envs|profiles|benchmarks|docs)"
                                r"/[\w./-]*\w|[A-Z]+\.md)\b(?!\{)", text))
    assert sorted(p for p in cited if not (ROOT / p).exists()) == []


def test_the_readme_is_short():
    assert len(README.splitlines()) <= 300


def test_the_readme_and_the_docs_name_no_commit():
    """A page says how things are; when and on which commit something was measured belongs
    in benchmarks/measured/<run>/README.md, beside what that run produced."""
    found = {f.name: commit_hashes(f.read_text()) for f in [ROOT / "README.md", *DOCS]}
    assert {name: hashes for name, hashes in found.items() if hashes} == {}


def test_the_commit_check_finds_a_hash_and_spares_words_and_paths():
    assert commit_hashes("measured on f4ed860 (2026-12-04)") == ["f4ed860"]
    assert commit_hashes("see 1a54e5f.") == ["1a54e5f"]
    assert commit_hashes("resnet18-f37072fd.pth, 2536842 params, deadbeef, acc 95.56") == []


def test_the_docs_build_with_mkdocs_strict(tmp_path):
    result = subprocess.run([str(BIN / "mkdocs"), "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "pipeline" / "index.html").exists()
