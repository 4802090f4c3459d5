"""nnunet_mt: semi-supervised (mean-teacher) DeepMedic training as an nnU-Net v2 plugin."""

__version__ = "0.1.0"
