"""Atomic artifact writes, checked artifact reads and the provenance stamp every result carries.

Every stage reads and writes its artifacts through here: a model's weights (`load_weights`),
every figure with its PDF twin (`save_figure`), JSON, CSV and torch files."""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from reprozoo import gpus
from reprozoo.errors import DataError, DiskFull, UserError
from reprozoo.stages import ROOT

if TYPE_CHECKING:
    import torch


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it into place only on success.

    An interrupted stage leaves no half-written output behind, so a rerun starts clean.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "it is a folder", str(path))
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _write_error(path, e) from None
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
        os.replace(tmp, path)
    except OSError as e:
        raise _write_error(path, e) from None
    finally:
        tmp.unlink(missing_ok=True)


def _write_error(path: Path, e: OSError) -> UserError:
    """One line for an output that could not be written: full disk, file-size limit, read-only or
    missing folder, a folder where the file should be."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(f"{path}: no space left on device (or quota exceeded) while writing it; nothing was "
                        f"written: free space under {path.parent}/ and rerun")
    if e.errno == errno.EFBIG:
        return UserError(f"{path}: file too large for this process's file-size limit (ulimit -f) while writing it; "
                         "nothing was written: raise the limit and rerun")
    return UserError(f"{path}: cannot write it ({e.strerror or type(e).__name__}"
                     f"{': ' + e.filename if e.filename and str(e.filename) != str(path) else ''}); nothing was written")


def save_torch(path: str | Path, obj) -> None:
    """torch.save, atomically, through an open file: the zip's record names are then fixed
    ('archive/...') instead of taken from the random temp name, so the same tensors give the
    same bytes and DVC/Snakemake see no change where there is none."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        try:
            torch.save(obj, f)
        except RuntimeError as e:  # torch's zip writer wraps the OSError of a failed write
            cause = e.__cause__ or e.__context__
            while cause is not None and not isinstance(cause, OSError):
                cause = cause.__cause__ or cause.__context__
            if cause is None:
                raise
            raise cause from None  # atomic_path: one line, the temp file removed


def load_torch(path: str | Path, what: str, stage: str):
    """torch.load with weights_only=True (never unpickles code); a missing, truncated or
    crafted file is one line naming it and the stage that writes it."""
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: not found (run the {stage} stage first)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0]
        raise ArtifactError(f"{path}: refused to load {what}: it holds Python objects other than tensors "
                            f"({first[:160]}); rerun the {stage} stage to rewrite it") from None
    except Exception as e:  # weights_only: nothing ran; whatever the reader tripped on, the file is not ours
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ArtifactError(f"{path}: not a readable {what} file, truncated or corrupt ({first[:160]}); "
                            f"rerun the {stage} stage to rewrite it") from None


class ArtifactError(UserError):
    """A pipeline artifact is missing, truncated or not what it claims to be."""


def load_weights(model: torch.nn.Module, path, device) -> torch.nn.Module:
    state = load_torch(path, "weights", "train")  # weights_only: never unpickles code
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as e:
        first = str(e).strip().splitlines()[0]
        raise DataError(f"{path}: weights do not fit model ({first}); retrain after changing its config") from None
    import torch

    broken = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not v.isfinite().all()]
    if broken:
        raise DataError(f"{path}: weights hold NaN or infinite values ({broken[0]}, ...): no model to evaluate; "
                        "retrain")
    return model


def write_json(path: str | Path, data) -> None:
    """Strict JSON: a NaN or infinity anywhere is one line naming its key, and nothing is written."""
    if bad := _not_finite(data):
        key, value = bad
        raise UserError(f"{path}: '{key}' is {value}, not a finite number: the run produced no usable result "
                        "(diverged, or weights that are not finite); nothing was written")
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")


def _not_finite(value, key: str = "") -> tuple[str, float] | None:
    if isinstance(value, float) and not math.isfinite(value):
        return key or "(value)", value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for k, v in items:
        if found := _not_finite(v, f"{key}.{k}" if key else str(k)):
            return found
    return None


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(path: str | Path, frame, **kwargs) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **kwargs)


def fmt_duration(seconds: float | None) -> str:
    """'1m20s', '0m45s', '125m00s' (the comparison table's train time, the train log's ETA); '' for None."""
    if seconds is None:
        return ""
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def pdf_twin(path: str | Path) -> str:
    """Where a figure's PDF twin goes: beside its PNG, same name. `save_figure` writes it;
    rules/common.smk declares it (this module imports no torch, so the Snakefile can)."""
    return os.path.splitext(str(path))[0] + ".pdf"


def save_figure(fig, path: Path) -> None:
    """Every figure of the pipeline: the PNG at `path`, and its PDF twin for papers. Each is
    written atomically; the PDF without a creation date, so a rerun writes the same bytes."""
    import matplotlib.pyplot as plt  # the stage that drew `fig` chose the backend (Agg)

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=200)  # print quality
    with atomic_path(pdf_twin(path)) as tmp:
        fig.savefig(tmp, format="pdf", dpi=200, metadata={"CreationDate": None})  # dpi: raster parts (images)
    plt.close(fig)


def read_json(path: str | Path, stage: str | None = None):
    """Strict JSON (no NaN or Infinity, which write_json never writes); a missing, unreadable or
    malformed file is one line naming it and `stage`, the stage that rewrites it."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: not found (run {f'the {stage} stage' if stage else 'the stage that writes it'} "
                            "first)")
    rerun = f"the {stage} stage to rewrite it" if stage else "the stage that writes it"

    def refuse(constant: str):
        raise ValueError(f"{constant} is no JSON number")

    try:
        return json.loads(path.read_text(), parse_constant=refuse)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise ArtifactError(f"{path}: not valid JSON ({str(e)[:160]}); rerun {rerun}") from None
    except OSError as e:
        raise ArtifactError(f"{path}: cannot read it ({e.strerror or type(e).__name__})") from None


def read_json_object(path: str | Path, stage: str) -> dict:
    """read_json, for the artifacts that are one JSON object (every results file is)."""
    data = read_json(path, stage)
    if not isinstance(data, dict):
        kind = {list: "an array", str: "a string", type(None): "null", bool: "a boolean"}.get(type(data), "a number")
        raise ArtifactError(f"{path}: holds {kind}, not a JSON object; rerun {stage}")
    return data


def read_csv(path: str | Path, stage: str, columns=(), **kwargs):
    """pandas.read_csv; a missing, empty, unparsable or non-UTF-8 file, or one without `columns`,
    is one line naming it and `stage`, the stage that rewrites it."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: not found (run the {stage} stage first)")
    try:
        frame = pd.read_csv(path, **kwargs)
    except pd.errors.EmptyDataError:
        raise ArtifactError(f"{path}: empty; rerun the {stage} stage to rewrite it") from None
    except ValueError as e:  # pandas' ParserError, UnicodeDecodeError, a dtype that does not fit
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise ArtifactError(f"{path}: not a readable CSV file, truncated or corrupt ({first}); "
                            f"rerun the {stage} stage to rewrite it") from None
    except OSError as e:
        raise ArtifactError(f"{path}: cannot read it ({e.strerror or type(e).__name__})") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ArtifactError(f"{path}: no column {', '.join(map(repr, missing))} (it has "
                            f"{', '.join(map(repr, map(str, frame.columns)))[:200]}); rerun {stage}")
    return frame


def git_revision() -> str:
    """The checkout's commit (12 hex digits, `-dirty` when tracked files changed); read from .git
    itself where there is no git (the pipeline's image): then without the dirty check."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return _read_git_head(ROOT / ".git") or "unknown"


def _read_git_head(git: Path) -> str | None:
    """HEAD's commit from the files of a .git folder: a detached hash, a loose ref or packed-refs."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        if git.is_file():  # a worktree or submodule: `gitdir: <path>`
            git = (git.parent / git.read_text().split(":", 1)[1].strip()).resolve()
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head[:12]
        ref = head[5:]
        if (git / ref).is_file():
            return (git / ref).read_text().strip()[:12]
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0][:12]
    return None


def hardware(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"CPU ({cpu}, {torch.get_num_threads()} threads)"


def stamp(device, seed: int) -> dict:
    """Hardware, versions, git revision and seed: enough to say where a number came from."""
    from importlib.metadata import version

    import torch

    # torchvision's version from its installed metadata: importing it costs every training
    # job ~1.7 s on a CPU (it loads torch._dynamo), for one string
    return {
        "device": device.type,
        "hardware": hardware(device),
        "torch": str(torch.__version__),
        "torchvision": version("torchvision"),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "python": platform.python_version(),
        "git_revision": git_revision(),
        "seed": seed,
        **({"card": card} if (card := gpus.held()) else {}),  # which card, where a slot was taken (reprozoo/gpus.py)
    }


def log_to(path: str):
    """Send everything this process prints (Python, warnings, progress, C libraries: file
    descriptors 1 and 2) to the log at `path`, replaced; return the terminal's stderr, where
    only a failure's one-line reason goes."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    sys.stdout.flush()
    sys.stderr.flush()
    terminal = os.fdopen(os.dup(2), "w", buffering=1)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    return terminal
