"""The workflow files follow Snakemake's formatter (snakefmt, pinned; settings in pyproject.toml)."""
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
