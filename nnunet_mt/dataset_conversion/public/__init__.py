"""Converters for public brain-lesion datasets (ISLES 2022, ATLAS v2.0, BraTS 2021, MSD Task01) into nnU-Net
raw datasets with ``imagesUnlabeled/``; see ``convert`` for what they share (the case model in ``cases``,
``validation``, the rerun record in ``rerun``, ``writing``, ``summary`` and ``command_line``)."""
