"""The table of malformed inputs that tests/test_bad_inputs.py runs through the real commands.

`harness.py` holds the case type, the shared tiny fixtures and the runner; `cases_*.py` hold the
rows, one module per kind of input (training configs and DeepSpeed JSONs; GGUF files and
checkpoints; adapters; data and command-line arguments).
"""
