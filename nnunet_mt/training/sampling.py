"""DeepMedic's patch sampling inside nnU-Net's data loader: half lesion-centred, half healthy-centred.

nnU-Net keeps a sample of foreground voxel locations per case (``properties['class_locations']``)
but none for background, and its loader keeps patches inside the image where it can. DeepMedic
instead centres each training segment on a voxel drawn from the lesion or from healthy tissue and
pads with zeros beyond the image border, so every *output* voxel of the valid network is a sample
of the intended class. :class:`HealthyTissueLocations` adds healthy-tissue locations to each case;
:class:`DeepMedicDataLoader` centres every patch on a drawn voxel.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter

from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

#: key under which healthy-tissue voxel locations are added to ``properties['class_locations']``
HEALTHY = "healthy_tissue"


class HealthyTissueLocations:
    """Wraps an nnU-Net dataset; adds locations of voxels labelled 0 inside the image's non-zero region.

    Label -1 marks voxels outside nnU-Net's non-zero mask (outside the head), so healthy tissue is
    ``seg == 0``. At most ``max_locations`` are kept per case (as nnU-Net does for foreground),
    drawn with a per-case seed so the cache is identical in every worker process.
    """

    def __init__(self, dataset, max_locations: int = 10000, seed: int = 1234) -> None:
        self.dataset = dataset
        self.max_locations = max_locations
        self.seed = seed
        self._cache: dict[str, np.ndarray] = {}

    @property
    def identifiers(self):
        return self.dataset.identifiers

    def __len__(self) -> int:
        return len(self.dataset.identifiers)

    def __getattr__(self, name):  # everything else is the wrapped dataset's
        return getattr(self.dataset, name)

    def healthy_locations(self, identifier: str, seg: np.ndarray) -> np.ndarray:
        """(N, 1 + ndim) array of [channel, *voxel] rows with ``seg[0] == 0``, as nnU-Net's locations."""
        if identifier not in self._cache:
            coords = np.argwhere(np.asarray(seg[0]) == 0)
            if len(coords) > self.max_locations:
                rng = np.random.default_rng([self.seed, sum(map(ord, identifier))])
                coords = coords[np.sort(rng.choice(len(coords), self.max_locations, replace=False))]
            self._cache[identifier] = np.concatenate([np.zeros((len(coords), 1), coords.dtype), coords], 1)
        return self._cache[identifier]

    def load_case(self, identifier: str):
        data, seg, seg_prev, properties = self.dataset.load_case(identifier)
        properties = dict(properties)
        locations = dict(properties.get("class_locations") or {})
        locations[HEALTHY] = self.healthy_locations(identifier, seg)
        properties["class_locations"] = locations
        return data, seg, seg_prev, properties


class DeepMedicDataLoader(nnUNetDataLoader):
    """nnU-Net loader whose patches are centred on a lesion voxel (forced samples) or a healthy one.

    With ``oversample_foreground_percent=0.5`` the last half of each batch is lesion-centred and
    the first half healthy-centred: DeepMedic's 50/50 sampling. The patch centre is never clipped
    towards the image, unlike nnU-Net's default, because the valid network's output is the centre
    of the patch and must contain the drawn voxel; the loader pads beyond the border (data 0,
    segmentation -1, which nnU-Net's transforms turn into background).
    """

    def _draw_voxel(self, locations: dict | None, keys: Sequence) -> np.ndarray | None:
        for key in keys:
            voxels = None if locations is None else locations.get(key)
            if voxels is not None and len(voxels):
                return voxels[np.random.choice(len(voxels))][1:]
        return None

    def get_bbox(self, data_shape: np.ndarray, force_fg: bool, class_locations: dict | None,
                 overwrite_class=None, verbose: bool = False):
        dim = len(data_shape)
        lesion_keys = [k for k in (class_locations or {}) if k != HEALTHY and k != self.annotated_classes_key]
        if force_fg:
            # a random foreground class that is present, as nnU-Net; healthy if the case has none
            present = [k for k in lesion_keys if len(class_locations[k])]
            order = ([present[np.random.choice(len(present))]] if present else []) + [HEALTHY]
        else:
            order = [HEALTHY]
        voxel = self._draw_voxel(class_locations, order)
        if voxel is None:  # nothing labelled at all: uniform centre inside the image
            voxel = [np.random.randint(0, data_shape[d]) for d in range(dim)]
        lbs = [int(voxel[d]) - self.patch_size[d] // 2 for d in range(dim)]
        return lbs, [lb + p for lb, p in zip(lbs, self.patch_size)]


def background_augmenter(loader, processes: int, cached: int, pin_memory: bool):
    """nnU-Net's background workers for a loader (in-process when ``nnUNet_n_proc_DA=0``)."""
    if get_allowed_n_proc_DA() == 0:
        return SingleThreadedAugmenter(loader, None)
    return NonDetMultiThreadedAugmenter(data_loader=loader, transform=None, num_processes=processes,
                                        num_cached=cached, seeds=None, pin_memory=pin_memory, wait_time=0.002)
