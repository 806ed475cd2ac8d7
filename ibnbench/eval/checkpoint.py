"""Resume files of interrupted runs: saved per chunk, tied to the run's identity, checked before any work."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from ibnbench.errors import BadImageError, CheckpointError
from ibnbench.eval.state import EvalState
from ibnbench.io import write_atomic


class Checkpoint:
    """Resume file: the evaluation state after the last completed chunk, tied to the run's identity."""

    def __init__(self, path: Path | None, identity: dict):
        self.path = path
        self.identity = identity

    def exists(self) -> bool:
        return self.path is not None and self.path.exists()

    def load(self) -> dict | None:
        if not self.exists():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as exc:  # truncated or foreign file: say which, and what to do
            raise CheckpointError(f"{self.path}: unreadable checkpoint ({type(exc).__name__}); "
                             "start over with --restart") from None
        if not isinstance(saved, dict) or "state" not in saved:
            raise CheckpointError(f"{self.path}: not an ibnbench checkpoint; start over with --restart")
        if saved.get("identity") != self.identity:
            diff = sorted(k for k in set(saved.get("identity", {})) | set(self.identity)
                          if saved.get("identity", {}).get(k) != self.identity.get(k))
            raise CheckpointError(f"{self.path}: checkpoint belongs to a different run (differs in {', '.join(diff)}); "
                             "start over with --restart")
        return saved

    def save(self, state: EvalState, extra: dict) -> None:
        if self.path is None:
            return
        saved = {"identity": self.identity, "state": state.state_dict(), **extra}
        write_atomic(self.path, lambda f: torch.save(saved, f), what="checkpoint")

    @staticmethod
    def images_done(saved: dict) -> int:
        return int(saved["state"]["done"].sum())

    def remove(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def _checkpoint_paths(stem: Path) -> list[Path]:
    return sorted(stem.parent.glob(f".{stem.name}.rank*.resume.pt"))


def check_checkpoint(stem: Path, ckpt_path: Path, resume: bool, restart: bool, world_size: int) -> None:
    """Before any work: an interrupted run's checkpoint is continued (``resume``), deleted (``restart``) or,
    with neither, left alone and reported, so that no finished image is lost silently."""
    if restart:
        for path in _checkpoint_paths(stem):
            path.unlink(missing_ok=True)  # every rank does this: another may have been first
        return
    if resume:
        found = sorted(int(p.name.rsplit(".rank", 1)[1].split(".")[0]) for p in _checkpoint_paths(stem))
        if found and found != list(range(world_size)):
            raise CheckpointError(f"--resume: the interrupted run left checkpoints for {len(found)} process(es) "
                             f"(ranks {found}) but this run has {world_size}; resume with the same "
                             "world size, or start over with --restart")
        return
    found = _checkpoint_paths(stem)  # all ranks' files, so that every rank of a distributed run agrees
    if found:
        ckpt_path = ckpt_path if ckpt_path in found else found[0]
        try:
            saved = torch.load(ckpt_path, map_location="cpu", weights_only=False)
            done = f" ({Checkpoint.images_done(saved)} of {saved['state']['n_images']} images done)"
        except Exception:
            done = ""
        raise CheckpointError(f"{ckpt_path}: an interrupted run of this command left a checkpoint{done}; "
                         f"{RESUME_HINT}")


RESUME_HINT = "--resume continues it, --restart starts over"


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`ibnbench.run`; the message says what was saved and how to continue."""


@contextmanager
def telling_how_to_go_on(checkpoint: Checkpoint) -> Iterator[None]:
    """Around an evaluation: Ctrl-C becomes :class:`RunInterrupted` saying what was saved and how to continue; an
    unreadable image's error says that the images done before it are saved and how to go on."""
    try:
        yield
    except KeyboardInterrupt:
        saved = (f"progress saved in {checkpoint.path}; " if checkpoint.exists()
                 else "no chunk finished, nothing saved; ")
        raise RunInterrupted(saved + (RESUME_HINT if checkpoint.exists() else "run the command again")) from None
    except BadImageError as exc:
        if checkpoint.exists():
            exc.args = (f"{exc}; the images done before it are saved in {checkpoint.path}: --resume --on-bad-image "
                        "skip continues and skips unreadable images (--restart starts over)",)
        raise
