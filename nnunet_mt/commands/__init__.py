"""The console commands nnunet_mt_reproduce, _schedule, _demo and _env: the top layer, imported by nothing."""
