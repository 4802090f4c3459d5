"""The reproduction runner behind ``nnunet_mt_reproduce`` (:mod:`nnunet_mt.commands.reproduce` is its command line),
one module per stage of the protocol, each readable alone:

* :mod:`.methods` — the method names and the trainers behind them;
* :mod:`.splits` — the checks of counts against the pool, the seeded split, the manifest a rerun must match;
* :mod:`.layout` — the work folder: dataset IDs, model folders, plans names, atomic writes, the lock;
* :mod:`.base` — what every stage shares (options, source, splits, environment, timings, names);
* :mod:`.data` — derived raw datasets and nnU-Net / unannotated preprocessing;
* :mod:`.training` — the supervised start and every method's ``nnUNetv2_train``;
* :mod:`.diagnostics` — snapshot curves, volume, pseudo-label quality, the screening table;
* :mod:`.prediction` — test predictions, nnU-Net's evaluation, per-case metrics;
* :mod:`.results` — the result files kept beside the code;
* :mod:`.reproduction` — the stages combined, count by count;
* :mod:`.arguments` — command-line pieces shared with ``nnunet_mt_schedule``.
"""
