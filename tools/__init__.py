"""Tools around the library, not part of it: the benchmarks (``benchmark``, ``benchmark_reference``
with the reference procedure written as plain loops in ``reference_loops``) and the synthetic
test bench (``compare``). The scripts in ``scripts/`` are their command lines; ``wsss`` never
imports them."""
