"""No background worker of the plugin outlives its trainer: killed with SIGTERM or SIGKILL, a process
holding a trainer's loaders takes their workers with it, and the end of training stops every loader, the
unannotated one included. The fork hook binds children only while a trainer holds the binding."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loader_child import bare_trainer, start_loaders
from nnunet_mt.training import workers

HELPER = Path(__file__).with_name("loader_child.py")


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for a reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


#: how long a worker may take to exit: generous, as a loaded machine may not schedule it for seconds (a worker
#: that is not stopped never exits, so a passing run waits only as long as the exit takes)
EXIT_LIMIT_S = 120.0


def wait_until_gone(pids, limit_s: float = EXIT_LIMIT_S) -> list[int]:
    """The pids still alive after up to ``limit_s`` seconds (polled until all are gone)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.2)
    return [p for p in pids if alive(p)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_with_a_trainer_killed_by_sigterm_or_sigkill():
    env = dict(os.environ, nnUNet_n_proc_DA="2", PYTHONPATH=str(HELPER.parent) + os.pathsep
               + os.environ.get("PYTHONPATH", ""))
    signals = (signal.SIGTERM, signal.SIGKILL)
    # both at once: their start (imports) is most of the time
    procs = [subprocess.Popen([sys.executable, str(HELPER)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in signals]
    survivors = {}
    try:
        for sig, proc in zip(signals, procs):
            line = proc.stdout.readline()
            assert line.startswith("workers"), line + proc.stderr.read()
            workers = [int(p) for p in line.split()[1:]]
            assert len(workers) == 4 and all(alive(p) for p in workers)
            proc.send_signal(sig)
            try:
                code = proc.wait(timeout=EXIT_LIMIT_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the trainer process was still running {EXIT_LIMIT_S:.0f} s after {sig.name}")
            assert code == -sig  # it dies of the signal, as without the plugin
            survivors[sig.name] = wait_until_gone(workers)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for pids in survivors.values():  # leave nothing behind, then fail
        for p in pids:
            os.kill(p, signal.SIGKILL)
    assert survivors == {"SIGTERM": [], "SIGKILL": []}, \
        f"workers still running {EXIT_LIMIT_S:.0f} s after their trainer was killed"


def test_end_of_training_stops_every_loader(tmp_path, monkeypatch):
    """nnU-Net's on_train_end stops its two loaders; the trainer's also stops the unannotated one."""
    monkeypatch.setenv("nnUNet_n_proc_DA", "2")
    t = bare_trainer()
    pids = start_loaders(t)
    # what nnU-Net's on_train_end touches besides the loaders
    t.current_epoch, t.local_rank, t.output_folder = 1, 0, str(tmp_path)
    t.save_checkpoint = lambda filename: None
    t.print_to_log_file = lambda *args, **kwargs: None
    assert t in workers._binding_owners  # from building its transforms on
    try:
        type(t).on_train_end(t)
        survivors = wait_until_gone(pids)
        assert t not in workers._binding_owners  # its loaders are stopped: later forks are not its workers'
    finally:
        for loader in (t.dataloader_train, t.dataloader_unlabeled):
            loader._finish()
    assert not survivors, f"loader workers {survivors} still running {EXIT_LIMIT_S:.0f} s after on_train_end"


FORK_PROBE = """
import ctypes, gc, os
from nnunet_mt.training import workers

def child_pdeathsig():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the signal the kernel sends this child when its parent dies (PR_GET_PDEATHSIG)
        value = ctypes.c_int(-1)
        ctypes.CDLL(None).prctl(2, ctypes.byref(value), 0, 0, 0)
        os.write(w, str(value.value).encode())
        os._exit(0)
    os.close(w)
    value = int(os.read(r, 16))
    os.waitpid(pid, 0)
    return value

class Trainer:
    pass

first, second = Trainer(), Trainer()
seen = [child_pdeathsig()]
workers.bind_forked_children(first)
workers.bind_forked_children(second)
seen.append(child_pdeathsig())
workers.release_forked_children(first)
seen.append(child_pdeathsig())  # the second still holds it
del second
gc.collect()
seen.append(child_pdeathsig())  # garbage-collected: nobody holds it
print(*seen)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_GET_PDEATHSIG")
def test_forks_are_bound_only_while_a_trainer_holds_the_binding():
    proc = subprocess.run([sys.executable, "-c", FORK_PROBE], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    kill = int(signal.SIGKILL)
    assert proc.stdout.split() == ["0", str(kill), str(kill), "0"]
