"""`python -m synth_ray ...` is the same as the `synth-ray` command."""

from synth_ray.cli import main

main()
