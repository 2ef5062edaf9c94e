"""Files and output directories: atomic writes, JSON reading with named errors, and the one rule for every verb
that writes a directory (no module imports the trainer to write a file).

- `atomic_path` / `atomic_write_text`: write beside the target, rename over it when complete; files get the
  permissions a plain `open()` would give (0666 minus the umask), not mkstemp's 0600.
- `prepare_output_dir`: an output directory is never silently clobbered. A non-empty directory is refused unless
  it is this verb's own run and `resume` is asked, or `overwrite` is: the new run is then built in a temporary
  sibling and swapped in only when it succeeds (the old one stays if it fails). An output equal to, inside, or
  containing an input is refused. The check writes nothing; the directory is created later (`OutputDir.create`,
  or entering it as a context), once the inputs have been read and validated.
- A run's directory holds `run.json` (`{"verb", "run_id"}`); the trainer writes the run id into every checkpoint
  and resumes, or prunes, only checkpoints carrying it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

RUN_FILE = "run.json"
STARTED = ("checkpoints", "metrics.jsonl", "model.safetensors")  # a run with any of these has started training
FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS)  # write errors that are the output's, not a bug


class OutputError(ValueError):
    """An output that cannot or must not be written; the message names the path and what to do."""


# ---- files -------------------------------------------------------------------------------------------------------
def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed onto `path` only if the block succeeds, so a crash or
    an error never leaves a half-written file over a good one. A path that is a directory, or a place that cannot
    be written, is an OutputError naming it (before any work is done)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; give a file name for the output")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise OutputError(f"{path}: cannot write here ({e.strerror or e})") from None
    try:
        yield Path(tmp)
        # mkstemp's 0600 (kept by writers that recreate the file, as safetensors does) would hide the output from
        # everyone else: what a plain open() gives instead
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        if e.errno not in FULL:
            raise
        raise OutputError(f"{path}: not written ({e.strerror}); the previous file, if any, is unchanged") from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_json(path: str | Path, what: str = "JSON") -> object:
    """The parsed file; a missing, unreadable or malformed file is a ValueError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: malformed {what} ({e})") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror or e})") from None


# ---- output directories ------------------------------------------------------------------------------------------
def check_not_input(out: str | Path, inputs: Iterable[str | Path | None], verb: str) -> None:
    """Refuse an output directory that is, lies inside, or contains one of the inputs."""
    o = Path(out).resolve()
    for given in inputs:
        if not given:
            continue
        i = Path(given).resolve()
        if o == i or i in o.parents or o in i.parents:
            relation = "is" if o == i else "is inside" if i in o.parents else "contains"
            raise OutputError(f"{verb}: --out {out} {relation} the input {given}; write to another directory")


def _alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (an --overwrite temporary it owns is still in use)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    return renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0


class OutputDir:
    """Where a verb writes: `path` (the output directory itself, or with `overwrite` a temporary sibling until the
    run succeeds), `run_id`, and `resuming` (an existing run of this verb is being continued)."""

    def __init__(self, final: Path, verb: str, run_id: str, resuming: bool, replace: bool, resumable: bool):
        self.final, self.verb, self.run_id = final, verb, run_id
        self.resuming, self.replace, self.resumable = resuming, replace, resumable
        self.path = final.parent / f".{final.name}.new-{os.getpid()}" if replace else final
        self.created, self.existed = False, self.path.exists()

    def create(self) -> Path:
        """Make the directory (and `run.json` for a new resumable run); call once the inputs are validated."""
        if self.created:
            return self.path
        if self.replace:  # temporaries of earlier --overwrite attempts that died (their process is gone)
            for old in self.final.parent.glob(f".{self.final.name}.new-*"):
                pid = old.name.rsplit("-", 1)[-1]
                if pid.isdigit() and not _alive(int(pid)):
                    shutil.rmtree(old, ignore_errors=True)
            shutil.rmtree(self.path, ignore_errors=True)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            if self.resumable and not self.resuming:
                atomic_write_text(self.path / RUN_FILE, json.dumps({"verb": self.verb, "run_id": self.run_id}) + "\n")
        except OSError as e:
            raise OutputError(f"{self.final}: cannot create the output directory ({e.strerror or e})") from None
        self.created = True
        return self.path

    def commit(self) -> None:
        """With `overwrite`: put the finished run in place of the old directory, then delete the old one."""
        if not self.replace:
            return
        if self.final.exists() and _exchange(self.path, self.final):
            shutil.rmtree(self.path)  # now holds the old run
            return
        old = self.final.parent / f".{self.final.name}.old-{os.getpid()}"
        if self.final.exists():
            os.replace(self.final, old)
        os.replace(self.path, self.final)
        shutil.rmtree(old, ignore_errors=True)

    def abandon(self) -> None:
        """With `overwrite`: the new run failed; drop it and leave the old directory as it was."""
        if self.replace:
            shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> Path:
        return self.create()

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.commit()
        elif self.replace:  # the old directory stays as it was
            self.abandon()
        elif self.created and not self.resuming and not any((self.path / n).exists() for n in STARTED):
            # a new run that failed before training started (bad data found while building shards): no trace
            if not self.existed:
                shutil.rmtree(self.path, ignore_errors=True)
                return
            for entry in self.path.iterdir():  # the user's own empty directory stays, empty
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        # else: a run that started stays; its checkpoints resume it


def prepare_output_dir(out: str | Path, *, verb: str, inputs: Iterable[str | Path | None] = (),
                       resume: bool = False, overwrite: bool = False, resumable: bool = True) -> OutputDir:
    """Check `out` for `verb` and say where to write; nothing is written here (see the module docstring)."""
    final = Path(out)
    check_not_input(final, inputs, verb)
    if resume and overwrite:
        raise OutputError(f"{verb}: --resume continues the run in {final}, --overwrite replaces it: choose one")
    if final.exists() and not final.is_dir():
        raise OutputError(f"{final}: exists and is not a directory; give a directory for --out")
    if not final.exists() or not any(final.iterdir()):  # a new run (--resume with nothing to resume starts one)
        return OutputDir(final, verb, uuid.uuid4().hex[:12], resuming=False, replace=False, resumable=resumable)
    if overwrite:
        return OutputDir(final, verb, uuid.uuid4().hex[:12], resuming=False, replace=True, resumable=resumable)
    if not resume or not resumable:
        hint = "--resume to continue it, " if resumable else ""
        raise OutputError(f"{final}: not empty; give {hint}--overwrite to replace it, or another --out")
    run = final / RUN_FILE
    try:
        info = json.loads(run.read_text(encoding="utf-8"))
        verb_before, run_id = info["verb"], info["run_id"]
    except (OSError, ValueError, KeyError, TypeError):
        raise OutputError(f"{final}: --resume: not a run bertkit can resume ({run} missing or unreadable); give "
                          f"--overwrite to replace it, or another --out") from None
    if verb_before != verb:
        raise OutputError(f"{final}: --resume: this directory holds a '{verb_before}' run, not '{verb}'; give "
                          f"--overwrite to replace it, or another --out")
    return OutputDir(final, verb, str(run_id), resuming=True, replace=False, resumable=resumable)
