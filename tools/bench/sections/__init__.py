"""The figure sections, one module each, numbered as in the table:
``rpc`` (6), ``clone`` (1), ``download`` (2), ``sparse`` (3), ``qcow2`` (4),
``dedup`` (5) and ``memory`` (7).

Each has ``measure(bench)``, which adds its figures to a
``tools.bench.harness.Bench``.
"""


def alternate(rep, *runs):
    """Call ``runs`` in turn, in reverse order on odd repetitions."""
    for run in (runs if rep % 2 == 0 else runs[::-1]):
        run()
