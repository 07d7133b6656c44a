"""The methods, each registered by its own module (methods/registry.py): `method_spec(name)`.

Importing this package registers every built-in method.
"""

from __future__ import annotations

from synth_ray.methods import (  # noqa: F401  (each registers itself on import)
    evol_instruct,
    generate,
    judge,
    magpie,
    metamath,
    oss_instruct,
    preference,
    rephrase,
    self_improve,
    self_instruct,
    textbook,
    tinystories,
)
from synth_ray.methods.registry import MethodSpec, method_spec, register, registered

__all__ = ["MethodSpec", "method_spec", "register", "registered"]
