"""Background augmentation workers that do not outlive their trainer (issue 11, item 6).

batchgenerators forks daemonic workers, which Python terminates only at a *normal* exit: after SIGTERM or
SIGKILL of ``nnUNetv2_train`` they were left under PID 1, looping on a full queue. Two remedies, both
reachable from a trainer subclass:

* every worker asks the kernel to kill it when its parent dies (``prctl(PR_SET_PDEATHSIG, SIGKILL)`` on
  Linux, a parent-pid watchdog thread elsewhere). It does so the moment it is forked
  (:func:`bind_forked_children`, an ``os.register_at_fork`` hook installed once the trainer builds its
  transforms), so no kill of the trainer falls between a worker's birth and its binding; and, for workers
  started without ``os.fork``, at its first sample, through the training / validation transform that
  every loader applies inside its workers, nnU-Net's own loaders included (:class:`ExitWithParent`,
  installed by :class:`WorkerLifetimeMixin`);
* the trainer shuts its loaders down (the unannotated one too) at the end of training and on SIGTERM.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

#: linux/prctl.h
PR_SET_PDEATHSIG = 1
#: attributes of a trainer that may hold a background loader
LOADER_ATTRIBUTES = ("dataloader_train", "dataloader_val", "dataloader_unlabeled")


def exit_with_parent(parent_pid: int) -> None:
    """Make the calling process die with ``parent_pid``, its parent; exit at once if it is already gone."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            _watch_parent(parent_pid)
    else:
        _watch_parent(parent_pid)
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


def _watch_parent(parent_pid: int, interval_s: float = 1.0) -> None:
    def watch():
        while os.getppid() == parent_pid:
            time.sleep(interval_s)
        os._exit(1)
    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


_fork_hook_installed = False
#: set in the parent just before each fork: (pid, whether the forking thread is the main thread)
_forking_parent: tuple[int, bool] | None = None


def _before_fork() -> None:
    global _forking_parent
    _forking_parent = (os.getpid(), threading.current_thread() is threading.main_thread())


def _after_fork_in_child() -> None:
    # The kernel's "parent" for PR_SET_PDEATHSIG is the forking *thread*: a child forked from a
    # short-lived thread would die with that thread, so only children of the main thread are bound.
    if _forking_parent is not None and _forking_parent[1]:
        exit_with_parent(_forking_parent[0])


def bind_forked_children() -> None:
    """From now on, every process this one forks from its main thread dies with it (idempotent).

    The child binds itself before ``os.fork`` returns in it, and exits at once if this process died in
    between, so a SIGKILL at any moment leaves no orphan."""
    global _fork_hook_installed
    if not _fork_hook_installed and hasattr(os, "register_at_fork"):
        os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
        _fork_hook_installed = True


class ExitWithParent:
    """A transform wrapper: the first call in a process other than the one that built it (a background
    worker) binds that process's life to the builder's; then it applies the wrapped transform."""

    def __init__(self, transform) -> None:
        bind_forked_children()  # built in the trainer before its loaders fork their workers
        self.transform = transform
        self.parent_pid = os.getpid()
        self._bound_pid = self.parent_pid

    def __call__(self, **data_dict):
        pid = os.getpid()
        if pid != self._bound_pid:
            exit_with_parent(self.parent_pid)
            self._bound_pid = pid
        return self.transform(**data_dict) if self.transform is not None else data_dict

    def __repr__(self) -> str:
        return f"ExitWithParent({self.transform!r})"


def shut_down(loader, timeout_s: float = 2.0) -> None:
    """Stop a batchgenerators augmenter's workers (no-op for in-process loaders and None)."""
    finish = getattr(loader, "_finish", None)
    if finish is None:
        return
    try:
        finish(timeout=timeout_s)
    except TypeError:  # an augmenter whose _finish takes no timeout
        finish()


class WorkerLifetimeMixin:
    """Loaders whose workers die with the trainer and stop at its end (put it before ``nnUNetTrainer``)."""

    def get_training_transforms(self, *args, **kwargs):
        return ExitWithParent(super().get_training_transforms(*args, **kwargs))

    def get_validation_transforms(self, *args, **kwargs):
        return ExitWithParent(super().get_validation_transforms(*args, **kwargs))

    def shut_down_loaders(self) -> None:
        """Stop the workers of every loader this trainer holds (nnU-Net's two and the unannotated one)."""
        for name in LOADER_ATTRIBUTES:
            shut_down(getattr(self, name, None))

    def shut_down_loaders_on_sigterm(self) -> None:
        """On SIGTERM: stop the loaders, then let the previous handler (default: die by SIGTERM) act."""
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        previous = signal.getsignal(signal.SIGTERM)

        def handler(signum, frame):
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
            self.shut_down_loaders()
            if callable(previous):
                previous(signum, frame)
            else:
                os.kill(os.getpid(), signum)

        signal.signal(signal.SIGTERM, handler)
        self._previous_sigterm_handler = previous

    def on_train_start(self):
        self.shut_down_loaders_on_sigterm()
        super().on_train_start()

    def on_train_end(self):
        try:
            super().on_train_end()  # nnU-Net stops its two loaders here
        finally:
            self.shut_down_loaders()
            previous = getattr(self, "_previous_sigterm_handler", None)
            if previous is not None and threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, previous)
