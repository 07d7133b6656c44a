"""`python -m synth_ray.cli ...` is the same as the `synth-ray` command."""

from synth_ray.cli import main

main()
