"""Every command in the README's ```bash blocks exists and takes the flags the README gives it.

The README is read when the tests are collected, so commands added to it later are checked too. Each
shell line is split as bash would split it (line continuations joined, comments dropped, ``&&``/``;``/``|``
separating commands, ``$(...)`` checked as a command of its own, ``NAME=value`` prefixes skipped,
``[...]`` around optional arguments dropped); then, per command:

* console scripts (``nnUNetv2_*``, ``nnunet_mt_*``, ...) must be installed (the virtual environment's
  ``bin`` or ``PATH``); ``python script.py`` needs the script in the repository, ``python -m module`` the
  module; ``pip`` is asked about its subcommand;
* every flag (``-x``, ``--xy``, ``--xy=value``) must appear as an option in the command's ``--help``
  (run once per distinct command);
* ``nnUNetv2_train`` and ``nnUNetv2_predict`` default to CUDA, so the README must give them ``-device``: the
  commands have to run as written on a CPU-only machine.

The quick start, the demo's validation step and the model sharing are run as written on a tiny dataset,
with only what the README says to substitute substituted; the trainer-search error the README quotes is
compared with the one nnU-Net raises.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
VENV_BIN = Path(sys.executable).parent

#: commands whose device defaults to CUDA: the README must pass -device (CPU-only machines)
NEEDS_DEVICE_FLAG = {"nnUNetv2_train": "-device", "nnUNetv2_predict": "-device"}
#: shell built-ins and keywords: nothing to check
SHELL_BUILTINS = {"cd", "export", "eval", "source", ".", "set", "unset", "echo", "true", "false", "exit", "wait",
                  "time", "sudo"}
#: ordinary system tools: they must exist, their flags are not this project's business
SYSTEM_TOOLS = {"ls", "cat", "mkdir", "rm", "cp", "mv", "du", "df", "head", "tail", "tar", "unzip", "wget", "curl",
                "git", "nvidia-smi", "find", "grep", "tee", "sort", "xargs", "touch", "ln", "chmod", "bash", "sh"}
SEPARATORS = {"&&", "||", "|", ";", "&", "(", ")", "\n"}
REDIRECTIONS = {">", ">>", "<", "2>", "2>>", "&>", ">&", "<<"}
SUBSTITUTION = "__SUBSTITUTED__"


@dataclass
class Invocation:
    line: int  # README line the command starts on
    text: str  # the logical shell line it comes from
    tokens: list[str]  # command name first, env prefixes and brackets removed
    flags: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.tokens[0]

    def __str__(self) -> str:
        return f"README.md line {self.line}: `{' '.join(self.tokens)}`"


# ---- parsing -------------------------------------------------------------------------------------------
def bash_blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, body) of every fenced block marked bash / sh / shell / console."""
    blocks, body, start = [], None, 0
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if body is None:
            if re.fullmatch(r"```\s*(bash|sh|shell|console)\s*", stripped):
                body, start = [], number + 1
        elif stripped.startswith("```"):
            blocks.append((start, "\n".join(body)))
            body = None
        else:
            body.append(line)
    return blocks


def logical_lines(start: int, block: str) -> list[tuple[int, str]]:
    """Join backslash-continued lines; (line number, text) of each logical line."""
    out, pending, first = [], "", start
    for offset, line in enumerate(block.split("\n")):
        if not pending:
            first = start + offset
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        pending += line
        if pending.strip():
            out.append((first, pending.strip()))
        pending = ""
    if pending.strip():
        out.append((first, pending.strip()))
    return out


def _flag(token: str) -> str | None:
    """The option name a token gives (``--a=1`` -> ``--a``), or None for values, numbers and ``-`` / ``--``."""
    if not token.startswith("-") or token in ("-", "--") or re.fullmatch(r"-\d+(\.\d*)?(e-?\d+)?", token):
        return None
    return token.split("=", 1)[0]


def _unbracket(token: str) -> str:
    """Drop the brackets of ``[--optional VALUE]`` from a token, keep balanced ones (``'.[test]'``)."""
    if token.startswith("[") and token.endswith("]") and token.count("[") == token.count("]") == 1:
        return token[1:-1]  # [--flag]
    while token.startswith("[") and token.count("[") > token.count("]"):
        token = token[1:]  # [--counts
    while token.endswith("]") and token.count("]") > token.count("["):
        token = token[:-1]  # 30]
    return token


def split_commands(line_number: int, line: str) -> list[Invocation]:
    """The commands of one logical shell line, as :class:`Invocation`\\ s."""
    result = []
    for inner in re.findall(r"\$\(([^()]*)\)", line):  # command substitutions are commands too
        result.extend(split_commands(line_number, inner))
    line = re.sub(r"\$\(([^()]*)\)", SUBSTITUTION, line)
    line = re.sub(r"(^|\s)\d?>&\d+(?=\s|$)", " ", line)  # 2>&1
    line = line.replace("<", " < ").replace(">", " > ") if re.search(r"\s[<>]", line) else line
    lexer = shlex.shlex(line, posix=True, punctuation_chars="&|;()")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    words, current = [], []
    for token in lexer:
        if token in SEPARATORS:
            words.append(current)
            current = []
        else:
            current.append(token)
    words.append(current)
    for tokens in words:
        cleaned, skip_next = [], False
        for token in tokens:
            if skip_next:
                skip_next = False
                continue
            if token in REDIRECTIONS:
                skip_next = True
                continue
            token = _unbracket(token)  # [--optional VALUE] in a usage line
            if token and token not in ("...", "…", "|"):
                cleaned.append(token)
        while cleaned and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", cleaned[0]):
            cleaned.pop(0)  # NAME=value cmd ...
        if not cleaned or cleaned[0] == SUBSTITUTION or cleaned[0] in SHELL_BUILTINS:
            continue  # eval "$(cmd)": cmd is checked above; cd, export ...: nothing to check
        result.append(Invocation(line_number, line, cleaned, [f for f in map(_flag, cleaned[1:]) if f]))
    return result


def readme_invocations(text: str) -> list[Invocation]:
    return [inv for start, block in bash_blocks(text) for number, line in logical_lines(start, block)
            for inv in split_commands(number, line)]


# ---- checking ------------------------------------------------------------------------------------------
def _help_env() -> dict:
    root = Path(tempfile.gettempdir()) / "nnunet_mt_readme_help"
    env = dict(os.environ, PYTHONUNBUFFERED="1", nnUNet_compile="false")
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        env.setdefault(name, str(root / name))
    from nnunet_mt.utils.ext_trainer import ext_trainer_value

    env["nnUNet_extTrainer"] = ext_trainer_value(os.environ.get("nnUNet_extTrainer"))
    return env


@functools.lru_cache(maxsize=None)
def help_text(command: tuple[str, ...]) -> str:
    """stdout + stderr of ``command`` (which ends in --help); fails the test when it does not succeed."""
    try:
        proc = subprocess.run(list(command), capture_output=True, text=True, timeout=300, cwd=REPO,
                              env=_help_env(), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`{' '.join(command)}` did not answer within 300 s")
    text = proc.stdout + proc.stderr
    if proc.returncode != 0 or not text.strip():
        pytest.fail(f"`{' '.join(command)}` failed with exit status {proc.returncode}:\n{text[-2000:]}")
    return text


def resolve(invocation: Invocation) -> tuple[tuple[str, ...] | None, list[str]]:
    """(the --help command to ask, or None when flags cannot be checked; the flags to check).

    Fails the test, naming the README line, when the command, script or module does not exist."""
    name, args = invocation.name, invocation.tokens[1:]
    if name in SHELL_BUILTINS:
        return None, []
    if name in ("python", "python3"):
        if args[:1] == ["-m"] and len(args) > 1:
            module = args[1]
            if importlib.util.find_spec(module) is None:
                pytest.fail(f"{invocation}: module `{module}` is not installed")
            return (sys.executable, "-m", module, "--help"), [f for f in map(_flag, args[2:]) if f]
        if args and args[0].endswith(".py"):
            script = REPO / args[0]
            if not script.is_file():
                pytest.fail(f"{invocation}: script {args[0]} does not exist in the repository")
            flags = [f for f in map(_flag, args[1:]) if f]
            if not re.search(r"\b(argparse|click|typer)\b", script.read_text(errors="ignore")):
                if flags:
                    pytest.fail(f"{invocation}: {args[0]} has no --help (no argparse) to check {flags} against")
                return None, []  # do not run a script just to ask it for help it does not have
            return (sys.executable, str(script), "--help"), flags
        return None, []  # python -c ... / an interactive interpreter
    if name in ("pip", "pip3"):
        sub = [a for a in args if not a.startswith("-")][:1]
        return (sys.executable, "-m", "pip", *sub, "--help"), [f for f in map(_flag, args) if f]
    exe = VENV_BIN / name if (VENV_BIN / name).exists() else shutil.which(name)
    if exe is None:
        pytest.fail(f"{invocation}: command `{name}` is not installed (neither in {VENV_BIN} nor on PATH). "
                    f"A typo, or a console script missing from setup.py's entry_points (after adding one, "
                    f"reinstall: pip install -e .)")
    if name in SYSTEM_TOOLS:
        return None, []
    return (str(exe), "--help"), invocation.flags


def unknown_flags(flags: list[str], help_output: str) -> list[str]:
    """The flags that do not appear as options in ``help_output``."""
    return [f for f in flags if not re.search(r"(?<![\w-])" + re.escape(f) + r"(?![\w-])", help_output)]


def check(invocation: Invocation) -> None:
    command, flags = resolve(invocation)
    if command is None:
        return
    missing = unknown_flags(flags, help_text(command))
    assert not missing, (f"{invocation}: {', '.join(missing)} not among the options of `{' '.join(command)}` "
                         f"(check its --help)")


INVOCATIONS = readme_invocations(README.read_text())


def test_the_readme_has_commands():
    names = {inv.name for inv in INVOCATIONS}
    assert {"nnUNetv2_train", "nnUNetv2_predict", "nnunet_mt_demo"} <= names, names


@pytest.mark.parametrize("invocation", INVOCATIONS, ids=[f"L{i.line}-{i.name}" for i in INVOCATIONS])
def test_readme_command_exists_and_takes_its_flags(invocation):
    check(invocation)


@pytest.mark.parametrize("invocation", [i for i in INVOCATIONS if i.name in NEEDS_DEVICE_FLAG],
                         ids=[f"L{i.line}-{i.name}" for i in INVOCATIONS if i.name in NEEDS_DEVICE_FLAG])
def test_readme_runs_on_a_cpu_only_machine(invocation):
    flag = NEEDS_DEVICE_FLAG[invocation.name]
    assert flag in invocation.flags, (f"{invocation}: {invocation.name} defaults to CUDA; give `{flag} cpu` (and say "
                                      f"to use {flag} cuda on a GPU) so the command runs as written on a CPU")


# ---- the parser and checker themselves, on made-up text -------------------------------------------------
SAMPLE = """intro
```bash
eval "$(nnunet_mt_env)"     # export nnUNet_extTrainer=<site>/trainers
nnUNet_n_proc_DA=1 nnunet_mt_reproduce -d 990 --workdir run [--counts 10 20 30] \\
    [--methods A B] --device cpu && python benchmarks/x.py run --flag=3
python -m pytest -q tests; pip install -e '.[test]'
```
```
not_bash --ignored
```
```bash
nnUNetv2_train DATASET 3d_fullres 0 -tr T -device cpu -pretrained_weights $nnUNet_results/D/f.pth > log.txt
```
"""


def test_parser_handles_continuations_eval_env_prefixes_brackets_and_separators():
    invocations = readme_invocations(SAMPLE)
    assert [(i.line, i.tokens) for i in invocations] == [
        (3, ["nnunet_mt_env"]),
        (4, ["nnunet_mt_reproduce", "-d", "990", "--workdir", "run", "--counts", "10", "20", "30", "--methods", "A",
             "B", "--device", "cpu"]),
        (4, ["python", "benchmarks/x.py", "run", "--flag=3"]),
        (6, ["python", "-m", "pytest", "-q", "tests"]),
        (6, ["pip", "install", "-e", ".[test]"]),
        (12, ["nnUNetv2_train", "DATASET", "3d_fullres", "0", "-tr", "T", "-device", "cpu", "-pretrained_weights",
              "$nnUNet_results/D/f.pth"]),
    ]
    assert invocations[1].flags == ["-d", "--workdir", "--counts", "--methods", "--device"]
    assert invocations[5].flags == ["-tr", "-device", "-pretrained_weights"]


def test_checker_rejects_unknown_flags_and_commands():
    help_output = "usage: x [-h] [-d D] [--counts COUNTS ...] [-device DEVICE]\n  --shared-test  use ...\n"
    assert unknown_flags(["-d", "--counts", "-device", "--shared-test"], help_output) == []
    # a prefix or a longer neighbour is not the option: -dev is not -device, --count is not --counts
    assert unknown_flags(["-dev", "--count", "--shared", "-c"], help_output) == ["-dev", "--count", "--shared", "-c"]
    with pytest.raises(pytest.fail.Exception, match="not installed"):
        resolve(Invocation(1, "", ["nnunet_mt_no_such_command_12", "-x"], ["-x"]))
    with pytest.raises(pytest.fail.Exception, match="does not exist"):
        resolve(Invocation(1, "", ["python", "benchmarks/no_such_script_12.py"]))
    with pytest.raises(AssertionError, match="--no-such-flag"):
        check(Invocation(1, "", ["nnunet_mt_env", "--no-such-flag"], ["--no-such-flag"]))


# ---- the quick start and the model sharing, run ------------------------------------------------------------
def section_blocks(text: str, heading: str) -> list[str]:
    """The bodies of the ```bash blocks under the ``## heading`` (up to the next ``## ``)."""
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end > 0 else None]
    return [body for _, body in bash_blocks(section)]


def substituted(block: str, replacements: dict[str, str]) -> str:
    """``block`` with each key replaced by its value; fails when the README no longer has the key."""
    for old, new in replacements.items():
        assert old in block, f"the README's block no longer has {old!r}:\n{block}"
        block = block.replace(old, new)
    return block


def tiny_trainers(block: str) -> str:
    """The block with the tests' narrow variants of the trainers (same code, a fraction of the CPU time)."""
    return re.sub(r"nnUNetTrainer(DeepMedic|MeanTeacher)(?![A-Za-z])", r"nnUNetTrainer\1_tiny", block)


def test_quick_start_validation_step_and_model_sharing_run_as_written(tmp_path):
    """A user's route after the demo: the quick start on a dataset of their own (the tiny one, with the
    budget cut to 2 steps), the demo's --val step for a model trained without nnU-Net's validation (as the
    demo's and the runner's are), export, install into another folder, predict from the installed model.
    Besides what the README says to substitute, only the trainers are swapped for their narrow variants."""
    from conftest import TINY_ID, TINY_NAME, VENV_BIN as BIN, write_tiny_raw

    text = README.read_text()
    quick_start = section_blocks(text, "Quick start: your own dataset")
    assert len(quick_start) == 1
    quick_start = substituted(quick_start[0], {
        "ID=501 NAME=Dataset501_MyStroke": f"ID={TINY_ID} NAME={TINY_NAME}",
        "nnUNet_mt_epochs=10 nnUNet_mt_iterations_per_epoch=50 nnUNet_mt_val_iterations=5":
            "nnUNet_mt_epochs=1 nnUNet_mt_iterations_per_epoch=2 nnUNet_mt_val_iterations=1"})
    validation_step = next(body for body in section_blocks(text, "Demo") if "--val" in body)
    validation_step = substituted(validation_step, {"990": "$ID",
                                                    "nnUNetTrainerMeanTeacher_demo": "nnUNetTrainerMeanTeacher"})
    export, receive = section_blocks(text, "Share a trained model")
    write_tiny_raw(tmp_path / "nnUNet_raw")
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    env.update(PATH=os.pathsep.join([str(BIN), env.get("PATH", "")]), PYTHONUNBUFFERED="1",
               nnUNet_def_n_proc="1", nnUNet_n_proc_DA="1", nnUNet_compile="false")
    quick_start, validation_step, export, receive = map(tiny_trainers, (quick_start, validation_step, export,
                                                                        receive))
    script = "\n".join([
        "set -e",
        "export nnUNet_mt_final_validation=0",  # the trainings skip nnU-Net's validation, as the demo's do
        quick_start,
        f"if ( {export} ) > export_before_validation.log 2>&1; then exit 3; fi",  # nnU-Net's export needs it
        "unset nnUNet_mt_final_validation",  # the user's shell, where the demo's printed lines are run
        validation_step, export, receive])
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-4000:]
    assert "validation/summary.json" in (tmp_path / "export_before_validation.log").read_text()
    assert (tmp_path / "pred" / "summary.json").is_file()  # where the README says evaluate_folder writes
    installed = tmp_path / "installed_models" / TINY_NAME / "nnUNetTrainerMeanTeacher_tiny__nnUNetPlans__3d_fullres"
    assert (installed / "fold_0" / "checkpoint_final.pth").is_file()
    import SimpleITK as sitk

    cases = sorted(p.name for p in (tmp_path / "pred").glob("*.nii.gz"))
    assert cases and cases == sorted(p.name for p in (tmp_path / "pred_installed").glob("*.nii.gz"))
    for case in cases:
        original, copy = (sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / folder / case)))
                          for folder in ("pred", "pred_installed"))
        assert (original == copy).all(), case


def test_the_quoted_trainer_search_error_is_nnunets():
    """The README quotes the error nnU-Net raises when nnUNet_extTrainer does not hold the trainer."""
    quoted = re.search(r"```text\n(RuntimeError: Could not find requested nnunet trainer [^\n]*)\n```",
                       README.read_text())
    assert quoted, "the README no longer quotes nnU-Net's trainer-search error in a ```text block"
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}
    proc = subprocess.run([sys.executable, "-c", "from nnunetv2.utilities.find_objects import "
                           "recursive_find_trainer_class_by_name as find; find('nnUNetTrainerMeanTeacher')"],
                          env=env, capture_output=True, text=True)
    raised = proc.stderr.strip().splitlines()[-1]
    assert raised.startswith("RuntimeError: Could not find requested nnunet trainer"), proc.stderr[-2000:]
    # the README's "…" stand for the machine's paths; every other character is nnU-Net's
    pattern = ".*".join(re.escape(part) for part in quoted.group(1).split("…"))
    assert re.fullmatch(pattern + ".*", raised), (quoted.group(1), raised)
