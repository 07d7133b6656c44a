"""The methods, each registered by its own module (methods/registry.py): `method_spec(name)`.

Importing this package registers every built-in method.
"""

from __future__ import annotations

from synth_ray.methods import (  # noqa: F401  (each registers itself on import)
    conversation,
    evol_instruct_rounds,  # evol_instruct's driver: it registers the method
    generate,
    judge,
    label,
    magpie,
    metamath,
    oss_instruct,
    preference,
    rephrase,
    self_improve_star,  # self_improve's driver (every mode): it registers the method
    self_instruct_rounds,  # self_instruct's driver: it registers the method
    textbook,
    tinystories,
)
from synth_ray.methods.registry import MethodSpec, method_spec, register, registered

__all__ = ["MethodSpec", "method_spec", "register", "registered"]
