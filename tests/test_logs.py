"""Each rule's log holds everything its job printed, and a rerun replaces it."""
import pytest
import yaml

from conftest import TINY_MLP, copy_workflow, run_snakemake

TUNE_LOG = "logs/digits/tune/mlp.log"
TARGET = "results/digits/tune/mlp/best.json"


@pytest.mark.slow
def test_a_failing_job_leaves_its_error_warnings_and_progress_in_its_log(tmp_path):
    work = copy_workflow(tmp_path)
    diverge = tmp_path / "diverge.yaml"   # lr e^4 ~ 55: every trial of mlp diverges, the tune job fails
    diverge.write_text(yaml.safe_dump({"run": {"datasets": ["digits"], "models": ["mlp"], "ablations": []},
                                       "protocol": {"tune": {"max_evals": 2, "max_epochs": 2, "patience": 1,
                                                             "lr_log_range": [4, 5]}}}))
    first = run_snakemake(TARGET, "--cores", "1", "--configfile", diverge, cwd=work)
    assert first.returncode != 0
    log = (work / TUNE_LOG).read_text()
    error = "reprozoo tune: error: model 'mlp': all 2 trials"
    assert error in log                                   # the one-line error (stderr)
    assert error in first.stderr and "reprozoo.tune" not in first.stderr  # on the terminal: the reason alone
    assert log.count("WARNING") == 2                       # one warning per failed trial (the logger)
    assert "tune.lr_log_range" in log                      # ... with what to change
    for stage in ("download", "prepare", "split/seed3407"):  # the jobs that worked logged too
        assert (work / f"logs/digits/{stage}.log").stat().st_size > 0, stage

    second = run_snakemake(TARGET, "--cores", "1", "--configfile", diverge, cwd=work)
    assert second.returncode != 0
    assert (work / TUNE_LOG).read_text().count(error) == 1   # replaced, not appended


@pytest.mark.slow
def test_a_crash_leaves_its_traceback_in_its_log(tmp_path):
    """Not a user error: a bug's traceback must reach the log too (here: a stage
    module that raises on import, as a broken edit would)."""
    work = copy_workflow(tmp_path)
    (work / "reprozoo" / "verify.py").write_text("raise RuntimeError('broken edit')\n")
    result = run_snakemake("results/digits/verify/mlp.json", "--cores", "1", "--configfile", *TINY_MLP, cwd=work)
    assert result.returncode != 0
    log = (work / "logs/digits/verify/mlp.log").read_text()
    assert "Traceback (most recent call last)" in log and "RuntimeError: broken edit" in log
