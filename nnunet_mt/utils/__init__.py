"""Small utilities at the bottom of the package (files, memory, subprocesses); they import no other layer."""
