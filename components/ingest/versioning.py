"""Data versioning with DVC: stage a source (a file, or a folder of images) under data/, `dvc add`
it, push it to the remote.

DVC is driven through its CLI (`python -m dvc`), the interface DVC keeps stable.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from components.core.dataset import data_md5
from components.core.errors import FmpipeError
from components.tasks import get_task
from components.tasks.base import Task
from components.tasks.text_data import READABLE


@dataclass
class DataVersion:
    path: Path       # the DVC-tracked file (or folder) inside the repo
    md5: str         # its MD5 (a folder's: core/dataset.py data_md5)
    dvc_file: Path   # the .dvc pointer file git tracks
    changed: bool    # False when the content was already tracked (a no-op re-ingest)


def _dvc(repo_root: Path, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo_root,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        errors = [line for line in lines if line.startswith("ERROR")]  # DVC's own reason
        raise FmpipeError(f"dvc {' '.join(args)} failed: {(errors or lines[-1:] or ['(no output)'])[0]}")
    return proc.stdout


def tracked_md5(dvc_file: Path) -> str | None:
    if not dvc_file.exists():
        return None
    outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs") or [{}]
    return outs[0].get("md5")


def version_data(source: str, name: str, repo_root: Path, push: bool = True,
                 task: Task | None = None) -> DataVersion:
    """Copy `source` to data/<name><ext> (a folder to data/<name>/), track it with DVC and push it;
    idempotent. The task resolves built-in names (text corpora, image sets)."""
    src = (task or get_task()).resolve_source(source)
    if src.is_dir():
        return _version_folder(src, name, repo_root, push)
    suffix = src.suffix.lower() or ".csv"
    target = repo_root / "data" / f"{name}{suffix}"
    dvc_file = target.with_name(target.name + ".dvc")
    others = [f for f in _tracked_files(name, repo_root) if f != target]
    if others:
        # One name, one data set: else `--data NAME` could not tell which file it means.
        raise FmpipeError(f"the name '{name}' already tracks {others[0].relative_to(repo_root)}; ingest "
                          f"{src.name} under another name (--name), or untrack that file first "
                          f"(dvc remove {others[0].relative_to(repo_root)}.dvc)")
    md5 = data_md5(src)
    if tracked_md5(dvc_file) == md5 and target.exists() and data_md5(target) == md5:
        return DataVersion(target, md5, dvc_file, changed=False)
    target.parent.mkdir(parents=True, exist_ok=True)
    if src.resolve() != target.resolve():
        shutil.copyfile(src, target)
    _dvc(repo_root, "add", str(target.relative_to(repo_root)))
    if push:
        _dvc(repo_root, "push", str(dvc_file.relative_to(repo_root)))
    return DataVersion(target, md5, dvc_file, changed=True)


def _version_folder(src: Path, name: str, repo_root: Path, push: bool) -> DataVersion:
    """data/<name>/ as a copy of the folder `src`, tracked by DVC as one directory output."""
    target = repo_root / "data" / name
    dvc_file = target.with_name(name + ".dvc")
    files = _tracked_files(name, repo_root)
    if files:
        raise FmpipeError(f"the name '{name}' already tracks {files[0].relative_to(repo_root)}; ingest "
                          f"{src.name} under another name (--name)")
    md5 = data_md5(src)
    if dvc_file.exists() and target.is_dir() and data_md5(target) == md5:
        return DataVersion(target, md5, dvc_file, changed=False)
    if src.resolve() != target.resolve():
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(src, target)
    _dvc(repo_root, "add", str(target.relative_to(repo_root)))
    if push:
        _dvc(repo_root, "push", str(dvc_file.relative_to(repo_root)))
    return DataVersion(target, md5, dvc_file, changed=True)


def is_data_set_name(text: str) -> bool:
    """A name under data/ (`reviews`), not a path (`reviews.csv` may be either; `/x/y.csv` is not)."""
    return bool(text) and "/" not in text and "\\" not in text and not text.startswith(("~", "."))


def _tracked_files(name: str, repo_root: Path) -> list[Path]:
    """data/<name>.<ext> tracked by DVC, for the readable extensions only: `reviews` is not
    `reviews.v2`. A path is no name: nothing is tracked under it."""
    if not is_data_set_name(name):
        return []
    return [f.with_suffix("") for f in sorted((repo_root / "data").glob(f"{name}.*.dvc"))
            if f.with_suffix("").name[len(name):].lower() in READABLE]


def find_tracked(name: str, repo_root: Path) -> Path | None:
    """data/<name>.<ext> (or the folder data/<name>/) when a data set of that name is tracked by DVC."""
    folder_dvc = repo_root / "data" / f"{name}.dvc"
    if is_data_set_name(name) and (tracked_md5(folder_dvc) or "").endswith(".dir"):  # DVC's folder hash
        return repo_root / "data" / name
    files = _tracked_files(name, repo_root)
    if len(files) > 1:
        raise FmpipeError(f"the name '{name}' tracks {len(files)} files ("
                          + ", ".join(str(f.relative_to(repo_root)) for f in files)
                          + "): pass the file's path with --data, or untrack all but one (dvc remove)")
    return files[0] if files else None


def checkout_revision(tracked: Path, rev: str, repo_root: Path, out_dir: Path) -> Path:
    """The content `tracked` had at git revision `rev`, fetched through DVC (cache or remote)."""
    import dvc.api

    rel = tracked.relative_to(repo_root)
    if tracked.is_dir():
        raise FmpipeError(f"--data-rev reads single-file data sets; {rel} is a folder: check out that "
                          f"revision (git checkout REV -- {rel}.dvc && dvc checkout {rel}) and run on it")
    target = out_dir / f"{tracked.stem}@{rev.replace('/', '_')}{tracked.suffix}"
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with dvc.api.open(str(rel), repo=str(repo_root), rev=rev, mode="rb") as src:
            target.write_bytes(src.read())
    except Exception as exc:  # DVC's own message says what is missing (rev, file, remote)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FmpipeError(f"cannot read {rel} at revision '{rev}': {first}") from None
    return target


def dvc_file_commit(dvc_file: Path, repo_root: Path, rev: str = "HEAD") -> str:
    """The git commit that recorded this version of the .dvc file ('uncommitted' if it isn't)."""
    rel = str(dvc_file.relative_to(repo_root))
    if rev == "HEAD":
        dirty = subprocess.run(["git", "status", "--porcelain", "--", rel], cwd=repo_root,
                               capture_output=True, text=True)
        if dirty.returncode != 0:
            return "unknown"
        if dirty.stdout.strip():
            return "uncommitted"
    proc = subprocess.run(["git", "log", "-1", "--format=%H", rev, "--", rel], cwd=repo_root,
                          capture_output=True, text=True)
    return proc.stdout.strip() or "unknown"
