"""Measurements of aociauth, not tests: ``python -m benchmarks [--quick] [SCENARIO ...]``.

Each scenario module has ``NAME``, ``TITLE`` and ``run(quick) -> Report``; it
runs its variants side by side in one process, on 127.0.0.1 only, and stops
by itself. Tables are printed; plots and ``summary.md`` go to
``benchmarks/results/``. See ``benchmarks/README.md``.
"""
