"""dubflow's helpers: what the stage scripts in ``workflow/scripts/`` share.

The stage scripts (one per rule, run by Snakemake's ``script:``) sit one folder up; Snakemake
puts their folder on ``sys.path`` in every job, so this package imports without being
installed, on a cluster node or in a conda env as well as here. Nothing in it imports a
stage script.
"""
