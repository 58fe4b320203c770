"""Training checkpoints: the file format (save, load, find, prune), RNG state and the resumable TrainState.

A checkpoint is a dict of tensors and plain values, so it loads with weights_only=True. Besides TrainState's
counters it holds the model, optimiser and grad-scaler states, the RNG states and the run's signature/settings.
"""

from __future__ import annotations

import os
import random
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from ..core.errors import ConfigError, ModelError, OutputError
from ..core.images import atomic_path, write_failure
from ..core.weights import load_weights

CHECKPOINT_FORMAT = "stylefusion-train-checkpoint-v1"
_CHECKPOINT_NAME = re.compile(r"^checkpoint_step_(\d+)\.pt$")


@dataclass
class TrainState:
    """Where a run stands: steps done, epoch, position in the epoch's order, images seen, unreadable files."""

    step: int = 0
    epoch: int = 0
    position: int = 0
    images_seen: int = 0
    skipped: set[int] = field(default_factory=set)  # dataset indices of unreadable files met so far

    def to_dict(self, skipped: set[int] | None = None) -> dict[str, Any]:
        """The checkpoint entries of this state (`skipped`: the set merged over processes, if given)."""
        return {"step": self.step, "epoch": self.epoch, "position": self.position, "images_seen": self.images_seen,
                "skipped": torch.tensor(sorted(self.skipped if skipped is None else skipped), dtype=torch.int64)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainState":
        """The state a checkpoint recorded (to_dict's inverse)."""
        return cls(step=int(data["step"]), epoch=int(data["epoch"]), position=int(data["position"]),
                   images_seen=int(data.get("images_seen", 0)), skipped={int(i) for i in data["skipped"].tolist()})


def checkpoint_file(directory: Path, step: int) -> Path:
    """Where the checkpoint of `step` goes."""
    return directory / f"checkpoint_step_{step:08d}.pt"


def find_latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The checkpoint with the highest step in `directory`, or None."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _CHECKPOINT_NAME.match(p.name))]
    return max(found)[1] if found else None


def rng_state(device: torch.device) -> dict[str, Any]:
    """Every RNG state as tensors and plain numbers, so the checkpoint loads with weights_only=True."""
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python_version": version, "python": torch.tensor(internal, dtype=torch.int64), "python_gauss": gauss,
        "numpy": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)), "numpy_pos": int(np_pos),
        "numpy_has_gauss": int(np_has_gauss), "numpy_cached": float(np_cached),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    """Put back every RNG state rng_state() recorded (exact resume)."""
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(int(v) for v in state["python"].tolist()),
                     state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_cached"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_checkpoint(path: Path, state: Mapping[str, Any]) -> Path:
    """Write a checkpoint atomically (temporary name, then rename); OutputError, in one line, when it fails."""
    try:
        with atomic_path(path) as tmp:
            torch.save(dict(state), tmp)
    except (OSError, RuntimeError) as exc:  # a full disk surfaces from torch.save as RuntimeError
        raise OutputError(f"cannot write checkpoint {path}: {write_failure(path, exc)}") from None
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a training checkpoint with weights_only=True; ModelError, saying what is wrong, when it is not one."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ModelError(f"cannot read checkpoint {path}: {exc.strerror or 'not accessible'}") from None
    if size == 0:
        raise ModelError(f"checkpoint {path} is empty (0 bytes): it was cut off while being written")
    try:
        state = load_weights(path, map_location)
    except Exception as exc:  # truncated zip, refused globals, ... (torch's own text is no help to a user)
        what = ("holds objects other than plain weights" if "Unsupported global" in str(exc)
                else "is truncated or damaged (not a readable PyTorch archive)")
        raise ModelError(f"checkpoint {path} {what}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{path} is not a StyleFusion training checkpoint")
    return state


def find_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """The checkpoints in `directory`, newest (highest step) first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _CHECKPOINT_NAME.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def load_latest_checkpoint(directory: str | os.PathLike, warn: Callable[[str], None] | None = None
                           ) -> tuple[Path, dict[str, Any]]:
    """The newest checkpoint that reads. Unreadable newer ones are passed over with a warning and, when there is
    `warn` to say so, renamed to `<name>.broken`: kept for the user, but out of the rotation and of later resumes."""
    unreadable: list[tuple[Path, ModelError]] = []
    for path in find_checkpoints(directory):
        try:
            state = load_checkpoint(path)
        except ModelError as exc:
            unreadable.append((path, exc))
            continue
        if unreadable and warn is not None:
            moved = [aside for broken, _ in unreadable if (aside := _move_aside(broken)) is not None]
            warn(_fallback_warning(path, int(state["step"]), unreadable, moved))
        return path, state
    if unreadable:
        raise ModelError(f"--resume: no readable checkpoint in {directory}; the newest {unreadable[0][1]}")
    raise ConfigError(f"--resume: no checkpoint found in {directory}; run without --resume to start")


def _move_aside(path: Path) -> Path | None:
    """Rename an unreadable checkpoint to a free `<name>.broken[N]` (out of the checkpoint names); None if it
    cannot be renamed. Never deleted: it may be all that is left of a long run."""
    for n in range(1, 100):
        target = path.with_name(f"{path.name}.broken{n if n > 1 else ''}")
        if target.exists():
            continue
        try:
            return path.rename(target)
        except OSError:
            return None
    return None


def _fallback_warning(path: Path, step: int, unreadable: list[tuple[Path, ModelError]], moved: list[Path]) -> str:
    """One line: which checkpoint a resume falls back to, why, and where the unreadable newer ones went."""
    one = len(unreadable) == 1
    newer = "the newer checkpoint is" if one else f"{len(unreadable)} newer checkpoints are"
    if len(moved) == len(unreadable):
        aside = f"renamed it to {moved[0].name}" if one else "renamed them to *.pt.broken"
    else:
        aside = (f"could not rename {'it' if one else f'{len(unreadable) - len(moved)} of them'} aside, so the "
                 "next --resume warns again")
    return f"resuming from {path.name} (step {step}) because {newer} unreadable: {unreadable[0][1]}; {aside}"


def _looks_intact(path: Path) -> bool:
    """Whether a checkpoint file passes a cheap check, without unpickling it: a zip archive (torch.save's format)
    whose index reads and lists a data.pkl. Catches files cut off or overwritten; damage inside the archive
    only shows when it is loaded (load_latest_checkpoint then moves it aside)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name == "data.pkl" or name.endswith("/data.pkl") for name in archive.namelist())
    except (OSError, EOFError, ValueError, zipfile.BadZipFile):
        return False


def prune_checkpoints(directory: Path, keep: int) -> None:
    """Delete all but the newest `keep` intact checkpoints in `directory`. A file that fails _looks_intact is
    neither counted as a kept one (it could not be resumed from) nor deleted (the user's to look at)."""
    kept = 0
    for path in find_checkpoints(directory):
        if not _looks_intact(path):
            continue
        if kept < keep:
            kept += 1
        else:
            path.unlink(missing_ok=True)
