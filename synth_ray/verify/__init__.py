"""Checks that run generated code: the sandbox (verify/sandbox.py) and its confinement
(verify/confine.py)."""
