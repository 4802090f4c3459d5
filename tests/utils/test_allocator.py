"""``reuse_freed_memory``: a large block freed by one step is reused by the next, without new page faults
(glibc only; ``nnUNet_mt_reuse_memory=0`` keeps its defaults). Run in fresh interpreters, because the
setting is process-wide."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

CHILD = """
import resource, sys, torch
from nnunet_mt.utils.allocator import reuse_freed_memory
applied = reuse_freed_memory()
def faults_of_a_block(mib):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(mib * 2 ** 18)  # allocated, written, freed
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_of_a_block(200)  # grows the heap
print(applied, faults_of_a_block(100))  # fits in the freed 200 MiB (an aligned request needs a little more)
"""
PAGES = 100 * 2 ** 20 // 4096


def _run(reuse: str) -> tuple[bool, int]:
    env = dict(os.environ, nnUNet_mt_reuse_memory=reuse)
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_second_block_reuses_the_first_ones_pages():
    applied, faults = _run("1")
    assert applied and faults < PAGES // 10
    applied, faults = _run("0")  # glibc's default: a fresh mmap, every page faulted in again
    assert not applied and faults >= PAGES * 0.9
