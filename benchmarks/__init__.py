"""Benchmarks: scripts that measure and write their figures into docs/benchmarks.md.

Each benchmark runs every configuration in a fresh subprocess (`python -m
benchmarks.probe ...`) so peak memory is that configuration's alone, then replaces its own
section of docs/benchmarks.md (between `<!-- bench:NAME -->` markers) and writes a PNG where a plot
says more than a table.
"""
