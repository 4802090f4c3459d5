"""Test-set evaluation of the reproduction: per-case metrics, paired tests and the report
(Tables 2-3, Figs. 2-3 of Cui et al., IPMI 2019)."""
