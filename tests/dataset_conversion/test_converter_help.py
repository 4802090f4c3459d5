"""Every converter's --help answers the first questions: one example command, the dataset folder it writes, the
exit statuses, and what a rerun does."""
from __future__ import annotations

import pytest

from nnunet_mt.dataset_conversion import convert_folder
from nnunet_mt.dataset_conversion.public import atlas2, brats, isles2022

COMMANDS = {
    "nnunet_mt_convert": (convert_folder.main, "nnunet_mt_convert -i scans/ -l masks/ -d 501 -n StrokeDWI -c DWI b0",
                          "$nnUNet_raw/Dataset501_StrokeDWI"),
    "nnunet_mt_convert_isles2022": (isles2022.main, "nnunet_mt_convert_isles2022 -i ISLES-2022/ -d 522",
                                    "$nnUNet_raw/Dataset522_ISLES2022"),
    "nnunet_mt_convert_atlas2": (atlas2.main, "nnunet_mt_convert_atlas2 -i ATLAS_2/ -d 531",
                                 "$nnUNet_raw/Dataset531_ATLAS2"),
    "nnunet_mt_convert_brats2021": (brats.main_brats2021, "nnunet_mt_convert_brats2021 -i "
                                    "RSNA_ASNR_MICCAI_BraTS2021_TrainingData_16July2021/ "
                                    "RSNA_ASNR_MICCAI_BraTS2021_ValidationData/ -d 537 --whole-tumour",
                                    "$nnUNet_raw/Dataset537_BraTS2021"),
    "nnunet_mt_convert_msd_brain": (brats.main_msd, "nnunet_mt_convert_msd_brain -i Task01_BrainTumour/ -d 501",
                                    "$nnUNet_raw/Dataset501_BrainTumour"),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_shows_an_example_the_dataset_written_the_exit_statuses_and_the_rerun(command, capsys):
    main, example, dataset = COMMANDS[command]
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    flat = " ".join(text.split())
    assert f"example:\n  {example}\n" in text
    assert f"writes {dataset}/" in flat and "(DatasetXXX_Name: XXX from -d, Name from -n" in flat
    assert "exit status: 0 written, or found up to date (nothing written) 2 refused" in flat
    assert "The same command run again finds the dataset up to date and writes nothing" in flat
    assert "--overwrite" in flat
