"""The pipeline's image built and run by real engines, as the README tells a user to:
`make image` (podman, or docker where its daemon runs), the tiny pipeline inside it with the
checkout bind-mounted and `--user`, then `make sif` and `snakemake --use-singularity` with a
real Apptainer (container/apptainer.sh). Each run's comparison table must equal a host run's
in every column but the times.

Markers: `image` for the build and the podman/docker run, which `.ci/run` runs (it installs podman,
runc and mmdebstrap); `sif` for the Apptainer part, which takes longer than CI allows and runs with
`make test-sif`. Elsewhere they skip when no engine is installed. Everything it stores (image
layers, build cache, the Apptainer tree, the SIF) lives in one temporary folder, removed afterwards."""
import csv
import json
import os
import re
import resource
import shutil
import subprocess
import tempfile
import threading
import time
import warnings
from pathlib import Path

import pytest
import yaml

from conftest import BIN, ROOT, TINY_MLP, copy_workflow, run_snakemake

pytestmark = pytest.mark.slow

IMAGE = yaml.safe_load((ROOT / "config.yaml").read_text())["container"]["image"].removeprefix("docker://")
BASE = re.search(r"^FROM (\S+)", (ROOT / "Dockerfile").read_text(), re.M)[1]
# The checkout's owner in the container runs: neither root nor the image's own user (1000),
# which is what made `podman run -v $PWD:/work` fail before `--user` was in the README.
OWNER = 4321
DISK_LIMIT = 25e9
NPROC_MOST = 32768


def readme_command(engine: str) -> str:
    """The README's `<engine> run` line (the test runs it with $(id -u):$(id -g) as OWNER's)."""
    lines = [line.strip() for line in (ROOT / "README.md").read_text().splitlines()
             if line.strip().startswith(f"{engine} run ")]
    assert lines, f"README.md shows no `{engine} run` command"
    return lines[0].split("  #")[0]


def engine_config(folder: Path) -> dict[str, str]:
    """Environment for podman with its storage (and buildah's cache mounts) inside `folder`,
    plus what this kind of host needs: crun refuses hybrid cgroup hierarchies, so runc with
    cgroupfs there; and the container's limits at this process's own, because podman's
    rootful defaults (nofile 1048576) exceed what a sandbox without CAP_SYS_RESOURCE may set."""
    # CI's sandbox also refuses an nproc above 32768 to the container's first process, even
    # where its own is higher: runc fails with "error setting rlimit type 6".
    storage, containers = folder / "storage.conf", folder / "containers.conf"
    storage.write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{folder}/storage"\n'
                       f'runroot = "{folder}/run"\n')
    limits = [f'"{name}={value}:{value}"' for name, which, most in (("nofile", resource.RLIMIT_NOFILE, 1 << 20),
                                                                   ("nproc", resource.RLIMIT_NPROC, NPROC_MOST))
              for value in [min(resource.getrlimit(which)[0], most)]]
    engine = ['events_logger = "file"']
    if Path("/sys/fs/cgroup/unified").is_dir() and shutil.which("runc"):
        engine += ['runtime = "runc"', 'cgroup_manager = "cgroupfs"']
    containers.write_text(f"[containers]\ndefault_ulimits = [{', '.join(limits)}]\n[engine]\n" + "\n".join(engine) + "\n")
    (folder / "tmp").mkdir()
    return {"CONTAINERS_STORAGE_CONF": str(storage), "CONTAINERS_CONF": str(containers),
            "TMPDIR": str(folder / "tmp")}


class DiskPeak:
    """The most disk the engine used while running, sampled every few seconds: the size of the
    scratch folder where it keeps everything (podman), else the rise of the disk's use (docker
    keeps its storage in /var/lib/docker; other writers on the disk count too)."""

    def __init__(self, scratch: Path, whole_disk: bool):
        self.scratch, self.whole_disk, self.peak, self._stop = scratch, whole_disk, 0, threading.Event()
        self._start = shutil.disk_usage(scratch).used
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def used(self) -> int:
        if self.whole_disk:
            return shutil.disk_usage(self.scratch).used - self._start
        du = subprocess.run(["du", "-sxb", str(self.scratch)], capture_output=True, text=True)
        return int(du.stdout.split()[0]) if du.stdout else 0

    def _sample(self):
        while not self._stop.wait(5):
            self.peak = max(self.peak, self.used())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


# The image tests' own peak: the image (6.7 GB) and what building it leaves while it runs. The SIF
# (`make sif`, marker `sif`) comes on top: the saved archive, Apptainer's copy and unpacked tree.
IMAGE_PEAK = {}


def run(cmd, env, timeout=3600, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert result.returncode == 0, f"{cmd}: exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def table(work: Path) -> list[dict]:
    """The comparison table without its time columns (wall times differ between any two runs)."""
    with open(work / "results/digits/report/comparison.csv", newline="") as f:
        return [{k: v for k, v in row.items() if "time" not in k} for row in csv.DictReader(f)]


def unmount_under(folder: Path):
    """Unmount whatever is still mounted inside `folder`, deepest first."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted((p for p in points if p.startswith(f"{folder}/")), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], capture_output=True)


@pytest.fixture(scope="module")
def engine():
    """(name, environment, scratch folder, disk monitor) with the image built by `make image`."""
    name = "docker" if shutil.which("docker") and subprocess.run(
        ["docker", "info"], capture_output=True).returncode == 0 else "podman"
    if not shutil.which(name):
        if os.environ.get("CI"):
            pytest.fail("CI: no container engine (.ci/run installs podman)")
        pytest.skip("no docker daemon and no podman")
    scratch = Path(tempfile.mkdtemp(prefix="reprozoo-image-", dir=os.environ.get("REPROZOO_IMAGE_TMP")))
    disk = DiskPeak(scratch, whole_disk=name != "podman")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    if name == "podman":
        env.update(engine_config(scratch))
    try:
        pull = [name, "pull", "--quiet", f"docker.io/library/{BASE}"]
        if subprocess.run(pull, env=env, capture_output=True, timeout=600).returncode:
            made = run([str(ROOT / "container/standin-base.sh"), name], env)
            warnings.warn(f"{BASE} could not be pulled: built from a local stand-in ({made.stdout.strip()})")
        start = time.perf_counter()
        run(["make", "-C", str(ROOT), "image", f"ENGINE={name}"], env)
        print(f"make image ({name}): {time.perf_counter() - start:.0f} s")
        yield name, env, scratch, disk
    finally:
        if name == "podman":
            subprocess.run(["podman", "system", "reset", "--force"], env=env, capture_output=True)
            unmount_under(scratch)  # the overlay driver's own mount of its folder outlives the reset
        else:
            subprocess.run(["docker", "image", "rm", IMAGE], capture_output=True)
            if os.environ.get("CI"):  # a throwaway runner: its build cache holds the wheels
                subprocess.run(["docker", "builder", "prune", "--all", "--force"], capture_output=True)
        peak = disk.stop()
        shutil.rmtree(scratch, ignore_errors=True)
        image_peak = IMAGE_PEAK.get("peak", peak)
        print(f"peak disk use: {image_peak / 1e9:.1f} GB for the image, {peak / 1e9:.1f} GB in all")
        assert image_peak < DISK_LIMIT, f"building and running the image used {image_peak / 1e9:.1f} GB of disk"


@pytest.fixture(scope="module")
def host_table(tmp_path_factory):
    work = copy_workflow(tmp_path_factory.mktemp("host"))
    result = run_snakemake("--cores", "2", "--configfile", *TINY_MLP, cwd=work)
    assert result.returncode == 0, result.stderr[-5000:]
    return table(work)


@pytest.mark.image
def test_the_image_holds_the_pins_and_runs_as_its_own_user(engine):
    name, env, _, _ = engine
    out = run([name, "run", "--rm", IMAGE, "python", "-c",
               "import os, torch, torchvision, reprozoo; "
               "print(os.getuid(), torch.__version__, torchvision.__version__, reprozoo.__version__)"], env)
    pins = dict(re.findall(r"^(torch|torchvision)==(\S+)", (ROOT / "requirements.txt").read_text(), re.M))
    version = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M)[1]
    uid, torch_version, vision_version, package_version = out.stdout.split()
    assert uid == "1000" and package_version == version
    assert torch_version.split("+")[0] == pins["torch"] and vision_version.split("+")[0] == pins["torchvision"]


@pytest.mark.image
def test_tiny_pipeline_in_the_image_as_the_checkouts_owner(engine, host_table, tmp_path):
    """The README's `run` line on a checkout (a git clone) owned by neither root nor uid 1000."""
    name, env, _, _ = engine
    work = copy_workflow(tmp_path)
    git = ["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    for step in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "checkout"]):
        subprocess.run([*git, *step], check=True, capture_output=True)
    revision = subprocess.run([*git, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True).stdout.strip()
    subprocess.run(["chown", "-R", f"{OWNER}:{OWNER}", str(work)], check=True)
    command = readme_command(name).replace('"$(id -u):$(id -g)"', f"{OWNER}:{OWNER}").replace('"$PWD"', str(work))
    command = command.replace("config/demo.yaml", " ".join(TINY_MLP)).replace("--cores 4", "--cores 2")
    assert f"--user {OWNER}:{OWNER}" in command and f"-v {work}:/work" in command, command
    run(["bash", "-c", command], env, cwd=work)
    assert table(work) == host_table
    # The image has no git: the revision comes from .git itself.
    record = json.loads((work / "results/digits/train/mlp/seed3407/run.json").read_text())
    assert record["git_revision"] == revision
    assert {p.stat().st_uid for p in (work / "results").rglob("*")} == {OWNER}


@pytest.fixture(scope="module")
def sif(engine):
    """`make apptainer` (Debian unstable's Apptainer in a root tree) unless one is installed, then `make sif`."""
    name, env, scratch, disk = engine
    IMAGE_PEAK["peak"] = disk.peak
    if not shutil.which("apptainer"):
        if not shutil.which("mmdebstrap"):
            pytest.skip("neither apptainer nor mmdebstrap to provide it")
        tree = scratch / "apptainer"
        run(["make", "-C", str(ROOT), "apptainer", f"APPTAINER_DIR={tree}"], env)
        env = {**env, "PATH": f"{tree}/bin{os.pathsep}{env['PATH']}"}
    image = scratch / "reprozoo.sif"
    start = time.perf_counter()
    run(["make", "-C", str(ROOT), "sif", f"ENGINE={name}", f"SIF={image}"], env)
    print(f"make sif: {time.perf_counter() - start:.0f} s, {image.stat().st_size / 1e9:.1f} GB")
    return image, env


@pytest.mark.sif
def test_use_singularity_runs_every_job_in_the_sif(sif, host_table, tmp_path):
    image, env = sif
    work = copy_workflow(tmp_path)
    result = run([str(BIN / "snakemake"), "--cores", "2", "--use-singularity", "--configfile", *TINY_MLP,
                  "--config", f'container={{"image": "{image}"}}'], {**env, "TQDM_DISABLE": "1"}, cwd=work)
    output = result.stdout + result.stderr
    assert "will be pulled" not in output and f"Activating singularity image {image}" in output
    assert table(work) == host_table
    # The jobs ran in the image's Python, not the host's.
    image_python = run(["apptainer", "exec", str(image), "python", "-c",
                        "import platform; print(platform.python_version())"], env).stdout.strip()
    record = json.loads((work / "results/digits/train/mlp/seed3407/run.json").read_text())
    assert record["python"] == image_python
