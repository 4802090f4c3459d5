from setuptools import find_packages, setup

setup(
    name="nnunet_mt",
    version="0.1.0",
    description="Semi-supervised mean-teacher DeepMedic (Cui et al., IPMI 2019) as an nnU-Net v2 plugin",
    packages=find_packages(include=["nnunet_mt", "nnunet_mt.*"]),
    python_requires=">=3.10",
    install_requires=[
        # the nnU-Net version the plugin is tested against; its trainer/predictor hooks are used directly
        "nnunetv2==2.8.1",
        "torch>=2.1",
        "batchgenerators>=0.25",
        "dynamic-network-architectures>=0.3",
        "SimpleITK>=2.2",
        "numpy>=1.24",
        "nibabel>=5.0",
        # the synthetic cohort's anatomy: MNI152 template and tissue maps bundled with nilearn
        "nilearn>=0.10",
        "scipy>=1.10",
        "matplotlib>=3.7",
        # test-set HD95 (evaluation.metrics): MONAI's surface distances, a maintained reference implementation
        "monai>=1.3",
    ],
    # pytest 7.3: tmp_path_retention_policy (pytest.ini); xdist: the README's -n 2, whose scheduler
    # (tests/conftest.py) subclasses xdist 3's LoadScopeScheduling
    extras_require={"test": ["pytest>=7.3", "pytest-xdist>=3.5,<4"]},
    entry_points={
        "console_scripts": [
            "nnunet_mt_env=nnunet_mt.commands.env:print_env",
            "nnunet_mt_synthetic=nnunet_mt.dataset_conversion.synthetic_stroke_dwi:main",
            "nnunet_mt_convert=nnunet_mt.dataset_conversion.convert_folder:main",
            "nnunet_mt_convert_isles2022=nnunet_mt.dataset_conversion.public.isles2022:main",
            "nnunet_mt_convert_atlas2=nnunet_mt.dataset_conversion.public.atlas2:main",
            "nnunet_mt_convert_brats2021=nnunet_mt.dataset_conversion.public.brats:main_brats2021",
            "nnunet_mt_convert_msd_brain=nnunet_mt.dataset_conversion.public.brats:main_msd",
            "nnunet_mt_demo=nnunet_mt.commands.demo:main",
            "nnunet_mt_reproduce=nnunet_mt.commands.reproduce:main",
            "nnunet_mt_schedule=nnunet_mt.commands.schedule:main",
            "nnunet_mt_score_models=nnunet_mt.commands.score_models:main",
            "nnunet_mt_preprocess_unlabeled=nnunet_mt.preprocessing.unlabeled:main",
        ]
    },
)
