"""ImageNet-P as released (Hendrycks & Dietterich, ICLR 2019): one H.264 video per validation image and
perturbation, ``<root>/<perturbation>/<wnid>/<image>.mp4``, the stronger noise of difficulty 2 and 3 in
``<perturbation>_2`` and ``<perturbation>_3`` (the other perturbations have one folder: their difficulty only sets
which frames are compared). Each video holds the 224x224 centre crops of one sequence (31 frames; translate 41), as
``ImageNet-P/create_p/make_imagenet_p.py`` encoded them (libx264, yuv420p).

Videos are decoded with PyAV (the ``video`` extra): torchvision 0.22 and later have no video reader. Frames come out
as uint8 RGB ``[T, 3, H, W]``; PyAV's and OpenCV's (which test.py uses) YUV-to-RGB conversions are both libswscale's
BT.601 and may differ by a grey level where chroma is interpolated. Labels come from the wnid folders, numbered as
every other dataset (:mod:`ibnbench.data.discovery`)."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from ibnbench.data.discovery import ValDataset, open_dataset
from ibnbench.errors import BadImageError, MissingFileError, UsageError

VIDEO_SUFFIXES = (".mp4",)
RELEASED_P_LAYOUT = "imagenet-p-released"
DIFFICULTIES = (1, 2, 3)
INSTALL_HINT = "reading the released ImageNet-P videos needs PyAV: pip install 'ibnbench[video]' (or pip install av)"


def released_folder(name: str, difficulty: int, noise: bool) -> str:
    """The folder of perturbation ``name`` at ``difficulty``: ``gaussian_noise_2`` for a noise perturbation
    (``noise``) at difficulty 2 or 3, the plain name otherwise."""
    if difficulty not in DIFFICULTIES:
        raise UsageError(f"ImageNet-P difficulty must be 1, 2 or 3, got {difficulty}")
    return f"{name}_{difficulty}" if noise and difficulty > 1 else name


def folder_names(names: Iterable[str], noise: Iterable[bool]) -> set[str]:
    """Every folder a released tree may hold for perturbations ``names`` (``noise``: which are noise ones)."""
    return {released_folder(n, d, z) for n, z in zip(names, noise) for d in DIFFICULTIES}


def is_released_p_tree(root: str | os.PathLike, folders: set[str]) -> bool:
    """True for the downloaded ImageNet-P: every subfolder of ``root`` one of ``folders`` (:func:`folder_names`),
    at least one holding wnid folders."""
    root = Path(root).expanduser()
    if not root.is_dir():
        return False
    found = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return bool(found) and all(p.name in folders for p in found) and any(
        q.is_dir() for p in found for q in p.iterdir())


def open_videos(root: str | os.PathLike, folder: str, frames: int, limit: int | None = None) -> ValDataset:
    """The labelled videos of one released folder ``<root>/<folder>/<wnid>/*.mp4`` (sorted; ``limit``: the first
    ``limit``), as a dataset of layout :data:`RELEASED_P_LAYOUT` whose files are videos of ``frames`` frames
    (the loader decodes them with :func:`read_video` and centre-crops every frame, without resizing)."""
    path = Path(root).expanduser() / folder
    if not path.is_dir():
        raise MissingFileError(f"{path}: no such folder in the released ImageNet-P tree {root}")
    videos = open_dataset(path, limit=limit, suffixes=VIDEO_SUFFIXES)
    return dataclasses.replace(videos, layout=RELEASED_P_LAYOUT, cropped=True, frames=frames)


def _av():
    try:
        import av
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    return av


def read_video(path: str | os.PathLike, frames: int | None = None) -> torch.Tensor:
    """Every frame of the video at ``path`` as uint8 RGB ``[T, 3, H, W]``; :class:`BadImageError` naming the file
    when it is missing, empty, not a video, corrupt, or (``frames`` given) holds another number of frames."""
    av = _av()
    if not os.path.isfile(path):
        raise BadImageError(path, "no such file")
    if os.path.getsize(path) == 0:
        raise BadImageError(path, "empty file (0 bytes)")
    try:
        with av.open(os.fspath(path)) as container:
            if not container.streams.video:
                raise BadImageError(path, "holds no video stream")
            declared = container.streams.video[0].frames  # 0 when the header does not say
            decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    except av.FFmpegError as exc:
        raise BadImageError(path, f"not a readable video ({exc.strerror or exc})") from None
    if not decoded:
        raise BadImageError(path, "holds no decodable frame")
    if len(decoded) < declared:
        raise BadImageError(path, f"truncated: {len(decoded)} of the {declared} frames its header declares decode")
    if frames is not None and len(decoded) != frames:
        raise BadImageError(path, f"{len(decoded)} frames, expected {frames}")
    if len({f.shape for f in decoded}) > 1:
        raise BadImageError(path, f"frames of different sizes {sorted({f.shape[:2] for f in decoded})}")
    return torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).contiguous()
