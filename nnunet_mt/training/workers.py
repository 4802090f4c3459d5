"""Background augmentation workers that do not outlive their trainer.

batchgenerators forks daemonic workers, which Python terminates only at a *normal* exit: after SIGTERM or
SIGKILL of ``nnUNetv2_train`` they were left under PID 1, looping on a full queue. Two remedies, both
reachable from a trainer subclass (:class:`~nnunet_mt.trainers.plugin_trainer.PluginTrainer` uses them):

* every worker asks the kernel to kill it when its parent dies (``prctl(PR_SET_PDEATHSIG, SIGKILL)`` on
  Linux, a parent-pid watchdog thread elsewhere). It does so the moment it is forked, so no kill of the
  trainer falls between a worker's birth and its binding (:func:`bind_forked_children`); and, for workers
  started without ``os.fork``, at its first sample, through the training / validation transform that
  every loader applies inside its workers, nnU-Net's own loaders included (:class:`ExitWithParent`);
* the trainer shuts its loaders down (the unannotated one too) at the end of training and on SIGTERM.

**Why the fork hook is process-wide, and how it is scoped.** Binding at the fork needs
``os.register_at_fork``: nothing else runs in the child before it returns from ``os.fork``. That hook
is process-wide and cannot be removed, and there is no call of the trainer's own around each fork to
narrow it to: the workers are forked by batchgenerators inside ``multiprocessing`` (``Process.start``,
from the augmenter's first ``next``), reached from nnU-Net's ``get_dataloaders`` and, for the unannotated
loader, from the first training step. So the hook is installed once, and is inert except while a trainer
holds the binding: from the moment it builds its transforms (before any of its loaders can fork) until
its ``on_train_end`` has stopped its loaders (:func:`release_forked_children`), or until the trainer is
garbage-collected. In that window every child forked from the main thread dies with this process: the
trainer's workers, and any other fork-started child (nnU-Net's own pools spawn rather than fork;
``subprocess`` runs no fork hooks). Outside it, forks are left alone. Children forked from other threads
are never bound (see :func:`_after_fork_in_child`).
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
import weakref

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
#: the trainers (or other owners) that hold the binding now; the hook binds children only while one does
_binding_owners: "weakref.WeakSet" = weakref.WeakSet()
#: set in the parent just before each fork: (pid, whether the forking thread is the main thread, whether
#: an owner holds the binding)
_forking_parent: tuple[int, bool, bool] | None = None


def _before_fork() -> None:
    global _forking_parent
    _forking_parent = (os.getpid(), threading.current_thread() is threading.main_thread(), len(_binding_owners) > 0)


def _after_fork_in_child() -> None:
    # The kernel's "parent" for PR_SET_PDEATHSIG is the forking *thread*: a child forked from a
    # short-lived thread would die with that thread, so only children of the main thread are bound.
    if _forking_parent is not None and _forking_parent[1] and _forking_parent[2]:
        exit_with_parent(_forking_parent[0])


def bind_forked_children(owner) -> None:
    """While ``owner`` holds the binding, every process this one forks from its main thread dies with it.

    The child binds itself before ``os.fork`` returns in it, and exits at once if this process died in
    between, so a SIGKILL at any moment leaves no orphan. Idempotent; ``owner`` (a trainer) is held weakly,
    and the binding ends with :func:`release_forked_children` or when ``owner`` is garbage-collected."""
    global _fork_hook_installed
    if not hasattr(os, "register_at_fork"):
        return
    if not _fork_hook_installed:
        os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
        _fork_hook_installed = True
    _binding_owners.add(owner)


def release_forked_children(owner) -> None:
    """``owner`` no longer holds the binding; once no owner does, forked children are left alone."""
    _binding_owners.discard(owner)


def binds_forked_children() -> bool:
    """Whether a child forked now from the main thread would be bound to this process."""
    return _fork_hook_installed and len(_binding_owners) > 0


class ExitWithParent:
    """A transform wrapper: the first call in a process other than the one that built it (a background
    worker) binds that process's life to the builder's; then it applies the wrapped transform."""

    def __init__(self, transform) -> None:
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


def stop_loaders(trainer) -> None:
    """Stop the workers of every loader ``trainer`` holds (nnU-Net's two and the unannotated one)."""
    for name in LOADER_ATTRIBUTES:
        shut_down(getattr(trainer, name, None))


def stop_loaders_on_sigterm(trainer):
    """On SIGTERM: stop ``trainer``'s loaders, then let the previous handler (default: die by SIGTERM) act.
    Returns the previous handler, for :func:`restore_sigterm` (None off the main thread, where signal
    handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        stop_loaders(trainer)
        if callable(previous):
            previous(signum, frame)
        else:
            os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, handler)
    return previous


def restore_sigterm(previous) -> None:
    """Put back the SIGTERM handler :func:`stop_loaders_on_sigterm` replaced."""
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)
