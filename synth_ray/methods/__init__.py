"""Methods by name: `build_method(config, renderer, model_name)` is the one entry point."""

from __future__ import annotations

from synth_ray.config import JobConfig
from synth_ray.engine.prompts import PromptRenderer
from synth_ray.methods.base import Method
from synth_ray.methods.generate import GenerateMethod
from synth_ray.methods.rephrase import RephraseMethod
from synth_ray.methods.self_improve import SelfImproveMethod


def build_method(config: JobConfig, renderer: PromptRenderer, model_name: str) -> Method:
    if config.method == "rephrase":
        return RephraseMethod(config.rephrase, renderer.count_tokens, model_name)
    if config.method == "generate":
        return GenerateMethod(config.generate, model_name)
    if config.method == "self_improve":
        return SelfImproveMethod(config.self_improve, model_name)
    raise AssertionError(f"unhandled method {config.method}")  # config validation rejects others
