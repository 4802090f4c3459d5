"""The synthetic stroke-DWI cohort by concept; the entry point (and its documentation) is
:mod:`nnunet_mt.dataset_conversion.synthetic_stroke_dwi`, which re-exports these modules' names.

- ``params``: the dataset's identity and the random parameters of one subject;
- ``anatomy``: the MNI152 tissue template, head pose, subject/MNI geometry and healthy tissue contrast;
- ``lesions``: acute lesions (labelled) and T2 shine-through confounders (never labelled);
- ``acquisition``: what the scanner adds (susceptibility, ghost, bias, texture, noise) and skull stripping;
- ``subject``: drawing a subject's parameters and rendering it from the three above;
- ``writer``: one case's files, the dataset's folders and the montage.

Imports point one way: params <- anatomy <- lesions, acquisition <- subject <- writer <- the entry point.
"""
