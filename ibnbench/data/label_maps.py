"""Label tables of the segmentation datasets: each turns a dataset's raw label values into the 19 Cityscapes train
ids (uint8; :data:`IGNORE` for pixels not scored).

* Cityscapes ``*_gtFine_labelIds.png`` (and GTA5's palette indices): the official cityscapesScripts table
  (``helpers/labels.py``): ids 0..33, 19 of them evaluated.
* GTA5 labels saved as colours: each id's colour from that table, as RobustNet's ``color2trainId`` reads them
  (with its two edits: polegroup is (153,153,154) and the license plate (0,0,143), so that (153,153,153) is pole and
  (0,0,142) car).
* BDD100K ``*_train_id.png`` / ``sem_seg/masks`` and ACDC ``*_gt_labelTrainIds.png``: already train ids (0..18, 255).
* Mapillary Vistas v1.2 (66 classes, ids 0..65): RobustNet's ``mapillary.gen_id_to_ignore``.
* SYNTHIA RAND-CITYSCAPES: the class id in the first channel of the 16-bit label PNG, RobustNet's
  ``synthia.trainid_to_trainid`` (ids 0..22).

A value that is not in its table is an error naming the file: a wrong file or a wrong dataset name, not a pixel
to guess about.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

import torch

from ibnbench.errors import BadLabelError

IGNORE = 255
"""The train id of pixels that are not scored."""
NUM_CLASSES = 19
TRAIN_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                 "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
                 "bicycle")
"""The 19 evaluated Cityscapes classes, in train-id order."""

# cityscapesScripts helpers/labels.py: (name, id, trainId, colour); trainId 255 = not evaluated. The license plate
# (id -1) never appears in a labelIds image.
CITYSCAPES_LABELS = (
    ("unlabeled", 0, 255, (0, 0, 0)), ("ego vehicle", 1, 255, (0, 0, 0)),
    ("rectification border", 2, 255, (0, 0, 0)), ("out of roi", 3, 255, (0, 0, 0)), ("static", 4, 255, (0, 0, 0)),
    ("dynamic", 5, 255, (111, 74, 0)), ("ground", 6, 255, (81, 0, 81)), ("road", 7, 0, (128, 64, 128)),
    ("sidewalk", 8, 1, (244, 35, 232)), ("parking", 9, 255, (250, 170, 160)), ("rail track", 10, 255, (230, 150, 140)),
    ("building", 11, 2, (70, 70, 70)), ("wall", 12, 3, (102, 102, 156)), ("fence", 13, 4, (190, 153, 153)),
    ("guard rail", 14, 255, (180, 165, 180)), ("bridge", 15, 255, (150, 100, 100)),
    ("tunnel", 16, 255, (150, 120, 90)), ("pole", 17, 5, (153, 153, 153)), ("polegroup", 18, 255, (153, 153, 153)),
    ("traffic light", 19, 6, (250, 170, 30)), ("traffic sign", 20, 7, (220, 220, 0)),
    ("vegetation", 21, 8, (107, 142, 35)), ("terrain", 22, 9, (152, 251, 152)), ("sky", 23, 10, (70, 130, 180)),
    ("person", 24, 11, (220, 20, 60)), ("rider", 25, 12, (255, 0, 0)), ("car", 26, 13, (0, 0, 142)),
    ("truck", 27, 14, (0, 0, 70)), ("bus", 28, 15, (0, 60, 100)), ("caravan", 29, 255, (0, 0, 90)),
    ("trailer", 30, 255, (0, 0, 110)), ("train", 31, 16, (0, 80, 100)), ("motorcycle", 32, 17, (0, 0, 230)),
    ("bicycle", 33, 18, (119, 11, 32)), ("license plate", -1, -1, (0, 0, 142)),
)
_ROBUSTNET_COLOUR_EDITS = {"polegroup": (153, 153, 154), "license plate": (0, 0, 143)}

# Mapillary Vistas v1.2 id -> train id (RobustNet's gen_id_to_ignore); the other ids of 0..65 are ignored.
_MAPILLARY_TRAIN = {
    13: 0, 24: 0, 41: 0,  # road, lane marking (general), manhole -> road
    2: 1, 15: 1,  # curb, sidewalk -> sidewalk
    17: 2, 6: 3, 3: 4,  # building, wall, fence
    45: 5, 47: 5,  # pole, utility pole -> pole
    48: 6, 50: 7, 30: 8, 29: 9, 27: 10, 19: 11,  # traffic light, traffic sign (front), vegetation, terrain, sky, person
    20: 12, 21: 12, 22: 12,  # bicyclist, motorcyclist, other rider -> rider
    55: 13, 61: 14, 54: 15, 58: 16, 57: 17, 52: 18,  # car, truck, bus, on rails, motorcycle, bicycle
}
# SYNTHIA RAND-CITYSCAPES class id -> train id (RobustNet's synthia.trainid_to_trainid).
_SYNTHIA_TRAIN = {0: 255, 1: 10, 2: 2, 3: 0, 4: 1, 5: 4, 6: 8, 7: 5, 8: 13, 9: 7, 10: 11, 11: 18, 12: 17, 13: 255,
                  14: 255, 15: 6, 16: 9, 17: 12, 18: 14, 19: 15, 20: 16, 21: 3, 22: 255}


def _pack(rgb: tuple[int, int, int]) -> int:
    return rgb[0] << 16 | rgb[1] << 8 | rgb[2]


@dataclass(frozen=True)
class LabelMap:
    """Raw label values -> train ids. ``channels``: the channel counts of the label images it reads; with
    ``colours`` a raw value is the pixel's RGB packed as ``r << 16 | g << 8 | b``, else the first channel."""

    name: str
    table: Mapping[int, int]
    channels: tuple[int, ...] = (1,)
    colours: bool = False
    _lookup: tuple[torch.Tensor, torch.Tensor] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        keys = sorted(self.table)
        object.__setattr__(self, "_lookup", (torch.tensor(keys, dtype=torch.int64),
                                             torch.tensor([self.table[k] for k in keys], dtype=torch.uint8)))

    def raw_values(self, decoded: torch.Tensor) -> torch.Tensor:
        """The raw values (int64 ``[H, W]``) of a decoded label image ``[C, H, W]`` (one of ``channels``)."""
        planes = decoded.to(torch.int64)
        if self.colours:
            return planes[0] << 16 | planes[1] << 8 | planes[2]
        return planes[0].contiguous()

    def decode(self, decoded: torch.Tensor, path: str | os.PathLike) -> torch.Tensor:
        """Train ids (uint8 ``[H, W]``) of a decoded label image; :class:`BadLabelError` naming ``path`` for values
        the table does not define."""
        raw = self.raw_values(decoded)
        keys, values = self._lookup
        position = torch.searchsorted(keys, raw).clamp_(max=len(keys) - 1)
        known = keys[position] == raw
        if not bool(known.all()):
            unknown = torch.unique(raw[~known])
            shown = [self._format(int(v)) for v in unknown[:5]]
            raise BadLabelError(path, f"holds {len(unknown)} label value(s) that the {self.name} table does not "
                                      f"define ({', '.join(shown)}{', ...' if len(unknown) > 5 else ''})")
        return values[position]

    def _format(self, value: int) -> str:
        return f"rgb({value >> 16}, {value >> 8 & 255}, {value & 255})" if self.colours else str(value)


CITYSCAPES_IDS = LabelMap("Cityscapes labelIds", {i: t for _, i, t, _ in CITYSCAPES_LABELS if i >= 0})
GTA5_COLOURS = LabelMap(
    "GTA5 colour (RobustNet's color2trainId)",
    {_pack(_ROBUSTNET_COLOUR_EDITS.get(name, colour)): t if t >= 0 else IGNORE
     for name, _, t, colour in CITYSCAPES_LABELS},
    channels=(3, 4), colours=True)
TRAIN_IDS = LabelMap("train ids", {**{i: i for i in range(NUM_CLASSES)}, IGNORE: IGNORE})
MAPILLARY_V12 = LabelMap("Mapillary Vistas v1.2 (66 classes)", {i: _MAPILLARY_TRAIN.get(i, IGNORE) for i in range(66)})
SYNTHIA = LabelMap("SYNTHIA RAND-CITYSCAPES", _SYNTHIA_TRAIN, channels=(1, 2, 3, 4))
