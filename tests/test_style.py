"""The workflow files follow Snakemake's formatter (snakefmt, pinned; settings in pyproject.toml); the
package keeps its layers (import-linter)."""
import shutil
import subprocess

from conftest import BIN, ROOT


def test_workflow_files_pass_snakefmt_check():
    rules = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "rules").glob("*.smk"))
    files = ["Snakefile", "workflow/Snakefile", *rules]
    result = subprocess.run([str(BIN / "snakefmt"), "--check", *files], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + result.stdout
    assert f"All {len(files)} file(s) would be left unchanged" in result.stderr + result.stdout


def test_every_rule_has_a_docstring():
    from conftest import run_snakemake

    listed = run_snakemake("--list-rules", cwd=ROOT).stdout.splitlines()
    rules = {line.split(" (", 1)[0]: line for line in listed if line and not line.startswith(" ")}
    assert {"download", "prepare", "split", "cache_features", "tune", "train", "evaluate", "verify", "report",
            "attention", "samples", "all"} <= set(rules)
    undocumented = [name for name, line in rules.items() if " (" not in line]
    assert undocumented == [], undocumented


def test_the_heavy_rules_write_a_benchmark():
    from conftest import run_snakemake

    plan = run_snakemake("-n", "--forceall", "--configfile", "config/demo.yaml", cwd=ROOT).stdout
    for rule in ("cache_features", "tune", "train", "evaluate"):
        blocks = [b for b in plan.split("\n\n") if f"rule {rule}:" in b]
        assert blocks and all("benchmark: logs/digits/benchmarks/" in b for b in blocks), rule


def test_the_package_keeps_its_layers_and_has_no_import_cycle(tmp_path):
    """import-linter's contracts (pyproject.toml, [tool.importlinter]): a module imports only from the
    layers below it and no two modules import each other, imports inside functions included. A new
    upward import is refused, as is one that dodges a cycle inside a function (checked here too)."""
    result = subprocess.run([str(BIN / "lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "0 broken." in result.stdout
    shutil.copytree(ROOT / "reprozoo", tmp_path / "reprozoo")
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(tmp_path / "reprozoo/io.py", "a") as f:  # a helper that reaches up, inside a function
        f.write("\n\ndef _upward():\n    from reprozoo.report.build import report  # noqa\n")
    result = subprocess.run([str(BIN / "lint-imports"), "--no-cache"], cwd=tmp_path, capture_output=True, text=True,
                            env={"PYTHONPATH": str(tmp_path), "PATH": str(BIN)})
    assert result.returncode == 1 and "reprozoo.io is not allowed to import reprozoo.report" in result.stdout, \
        result.stdout[-3000:]
