"""An output that cannot be written, or an old dataset that an overwrite cannot delete, ends in one line on stderr
and exit status 2, saying what was written and what was left, for the plain-folder and the release converters.

Tests run as root, where a read-only folder does not stop writes: the refusal is simulated in-process, by the
function that would meet it raising the PermissionError the operating system would."""
from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest

from nnunet_mt.dataset_conversion import convert_folder
from nnunet_mt.dataset_conversion.public import atlas2
from public_layouts import atlas_case, cli_error, image, lesion, write

DATASET = "Dataset550_Unwritable"


def plain_folder(tmp_path: Path) -> list[str]:
    for seed, case in enumerate(("pat01", "pat02")):
        write(tmp_path / "images" / f"{case}_T1.nii.gz", image(seed, lesion(seed)))
        write(tmp_path / "labels" / f"{case}.nii.gz", lesion(seed))
    return ["-i", str(tmp_path / "images"), "-l", str(tmp_path / "labels"), "-d", "550", "-n", "Unwritable",
            "-c", "T1"]


def atlas_release(tmp_path: Path) -> list[str]:
    for subject in ("r001s001", "r001s002"):
        atlas_case(tmp_path / "ATLAS_2", "Training", "R001", subject)
    return ["-i", str(tmp_path / "ATLAS_2"), "-d", "550", "-n", "Unwritable"]


COMMANDS = {"nnunet_mt_convert": (convert_folder.main, plain_folder),
            "nnunet_mt_convert_atlas2": (atlas2.main, atlas_release)}


def denied(path: Path) -> PermissionError:
    return PermissionError(errno.EACCES, "Permission denied", str(path))


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_read_only_raw_folder_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, command):
    main, source = COMMANDS[command]
    raw = (tmp_path / "raw").resolve()
    raw.mkdir()
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self.parent == raw:
            raise denied(self)
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    err = cli_error(main, [*source(tmp_path), "--raw-root", str(raw)], capsys)
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{command}: error: cannot write {raw / DATASET}: Permission denied ({raw}/.{DATASET}.partial-" in err
    assert "nothing was written" in err
    assert list(raw.iterdir()) == []


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_old_dataset_that_cannot_be_deleted_says_what_was_written_and_left(tmp_path, monkeypatch, capsys, command):
    main, source = COMMANDS[command]
    raw = (tmp_path / "raw").resolve()
    argv = [*source(tmp_path), "--raw-root", str(raw)]
    main(argv)
    capsys.readouterr()
    real_rmtree = shutil.rmtree

    def rmtree(path, *args, **kwargs):
        if ".replaced-" in Path(path).name:
            raise denied(path)
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", rmtree)
    err = cli_error(main, [*argv, "--overwrite"], capsys)
    left = [p for p in raw.iterdir() if ".replaced-" in p.name]
    assert len(left) == 1 and (left[0] / "dataset.json").is_file()
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{command}: error: wrote {raw / DATASET}, but could not delete the dataset it replaces (Permission " \
           f"denied): it is left in {left[0]}; delete it by hand" in err
    assert (raw / DATASET / "dataset.json").is_file()


def test_a_stale_staging_folder_that_cannot_be_removed_is_noted_and_the_conversion_goes_on(tmp_path, monkeypatch,
                                                                                            capsys):
    import subprocess

    from nnunet_mt.dataset_conversion.staging import HOST_TAG
    gone = subprocess.Popen(["true"])
    gone.wait()
    raw = (tmp_path / "raw").resolve()
    stale = raw / f".{DATASET}.partial-{gone.pid}@{HOST_TAG}-0123abcd"
    (stale / "imagesTr").mkdir(parents=True)
    real_rmtree = shutil.rmtree

    def rmtree(path, *args, **kwargs):
        if Path(path) == stale:
            raise denied(path)
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", rmtree)
    atlas2.main([*atlas_release(tmp_path), "--raw-root", str(raw)])
    out = capsys.readouterr().out
    assert f"note: could not remove {stale}, a temporary folder left by an interrupted run (process {gone.pid} no " \
           f"longer runs): Permission denied; delete it by hand" in out
    assert f"wrote: {raw / DATASET}" in out and stale.is_dir()


def test_an_unwritable_hidden_labels_file_says_the_dataset_is_written_and_a_rerun_lists_them(tmp_path, monkeypatch,
                                                                                              capsys):
    raw = (tmp_path / "raw").resolve()
    argv = [*atlas_release(tmp_path), "--raw-root", str(raw), "--annotated", "1"]
    hidden = raw / f"{DATASET}.hidden_labels.json"
    real_write_text = Path.write_text

    def write_text(self, *args, **kwargs):
        if self.name.startswith(f".{hidden.name}.partial-"):
            raise denied(self)
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    err = cli_error(atlas2.main, argv, capsys)
    assert err.count("\n") == 1 and f"wrote {raw / DATASET}, but cannot write its hidden-labels file {hidden}: " \
                                    f"Permission denied; rerun the same command once it can be written" in err
    monkeypatch.setattr(Path, "write_text", real_write_text)
    atlas2.main(argv)
    assert "up to date, nothing written" in capsys.readouterr().out and hidden.is_file()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_source_folder_that_cannot_be_read_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, command):
    main, source = COMMANDS[command]
    argv = source(tmp_path)
    unreadable = Path(argv[1]).resolve()
    real_iterdir = Path.iterdir

    def iterdir(self):
        if self.resolve() == unreadable:
            raise denied(self)
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    err = cli_error(main, [*argv, "--raw-root", str(tmp_path / "raw")], capsys)
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{command}: error: " in err and f"{Path(argv[1]).name}: Permission denied" in err
