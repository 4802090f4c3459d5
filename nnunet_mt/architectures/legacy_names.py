"""The network class names in nnU-Net plans that earlier versions of the plugin wrote, and where those classes
live now.

nnU-Net builds a model's network from the dotted name in its ``plans.json`` (``network_class_name``), through
the trainer class's ``build_network_architecture``, in training and in ``nnUNetv2_predict``. The DeepMedic
trainers map an old name there (:func:`current_configuration`), so a model folder trained before a class moved
still predicts as it is, and the module the class left need not import it back (an import circle).
"""
from __future__ import annotations

#: plans name written by earlier versions -> the same class's name now
LEGACY_CLASS_NAMES = {
    # DenseDeepMedic moved from deepmedic.py to dense_inference.py, which builds on deepmedic.py
    "nnunet_mt.architectures.deepmedic.DenseDeepMedic": "nnunet_mt.architectures.dense_inference.DenseDeepMedic",
}


def current_class_name(name: str) -> str:
    """``name`` as plans written now hold it: a legacy name mapped, any other unchanged."""
    return LEGACY_CLASS_NAMES.get(name, name)


def current_configuration(configuration_manager):
    """nnU-Net's ``ConfigurationManager`` with a current network class name: the same object when its name is
    current, else a copy naming the class where it lives now (the plans on disk are left as they are)."""
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

    name = configuration_manager.network_arch_class_name
    if current_class_name(name) == name:
        return configuration_manager
    configuration = configuration_manager.configuration
    return ConfigurationManager({**configuration, "architecture": {**configuration["architecture"],
                                                                   "network_class_name": current_class_name(name)}})
