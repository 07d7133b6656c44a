"""Config sections: the base every section derives from, the one fingerprint rule, and the
table of method sections that methods fill when they register.

    python -c "from synth_ray.sections import method_sections; print(sorted(method_sections()))"

A method's section (a pydantic model beside the method's code in methods/) reaches the config
through `register_section`, called by `methods.registry.register`; config.py never names a
method. `method_sections()` first loads the methods: the built-in package `synth_ray.methods`,
then every installed entry point of the group `synth_ray.methods` (a third-party plug-in
registers there). That import by name is this layer's one reach upwards, and it is on purpose:
it is plug-in discovery.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

# Marks on fields (json_schema_extra). VLLM: passed to vLLM's engine under the field's own
# name. RUNTIME: how fast or where, not what: left out of the job fingerprint.
VLLM = {"vllm": True}
RUNTIME = {"decisive": False}
# A field added after outputs existed, whose default keeps the old behaviour: it enters the
# fingerprint only when set to something else, so those outputs still resume.
ADDED = {"omit_default": True}
# A field whose file is read into the config when it is validated (a path becomes its
# content): `submit` writes the content into the job it sends, not the local path.
INLINED = {"inline_on_submit": True}
PLUGIN_GROUP = "synth_ray.methods"


class Section(BaseModel):
    """A config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    # True: the whole section says how fast or where (resources, scheduler): none of it decides
    runtime_only: ClassVar[bool] = False

    def decisive(self) -> dict[str, Any]:
        """What of this section decides the output rows, for the job fingerprint: every field
        not marked RUNTIME (a field marked ADDED only when not at its default), nested sections
        by their own rule. The one rule for every section;
        a section overrides it only where being switched off makes the rest moot (filters)."""
        out: dict[str, Any] = {}
        if self.runtime_only:
            return out
        for name, info in type(self).model_fields.items():
            marks = info.json_schema_extra or {}
            if marks.get("decisive") is False:  # type: ignore[union-attr]
                continue
            value = getattr(self, name)
            default = info.get_default(call_default_factory=True)
            if marks.get("omit_default") and value == default:  # type: ignore[union-attr]
                continue
            if isinstance(value, Section):
                inner = value.decisive()
                if inner:
                    out[name] = inner
            else:
                out[name] = self.model_dump(mode="python", include={name})[name]
        return out

    def check_in_job(self, job: Any) -> None:
        """A method section's checks that need the rest of the job (raise ValueError naming
        the key as `section.key: ...`); called only for the job's own method."""


def check_templates(templates: dict[str, str], required: dict[str, set[str]]) -> None:
    """Template overrides: known names only, each keeping the placeholders its stage fills."""
    for name, text in templates.items():
        if name not in required:
            raise ValueError(
                f"templates.{name}: unknown template (expected one of {sorted(required)})"
            )
        missing = [p for p in sorted(required[name]) if "{" + p + "}" not in text]
        if missing:
            raise ValueError(f"templates.{name}: must contain {{{missing[0]}}}")


@dataclass(frozen=True)
class MethodSection:
    """A method's config section. `reads_input`: the job needs an `input` section.
    `old_names`: earlier names of the section, accepted with a FutureWarning.
    `fingerprint_key`: the key the section enters the fingerprint under (an old name keeps
    earlier outputs resumable)."""

    model: type[Section]
    reads_input: bool = True
    old_names: tuple[str, ...] = ()
    fingerprint_key: str | None = None


_SECTIONS: dict[str, MethodSection] = {}
_loaded = False


def register_section(name: str, section: MethodSection) -> None:
    if name in _SECTIONS and _SECTIONS[name] != section:
        raise ValueError(f"method {name}: its config section is registered twice")
    _SECTIONS[name] = section


def load_methods() -> None:
    """Import the built-in methods and every installed plug-in, once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    importlib.import_module("synth_ray.methods")
    for plugin in entry_points(group=PLUGIN_GROUP):
        plugin.load()


def method_sections() -> dict[str, MethodSection]:
    """Method name -> its section, every method loaded first."""
    load_methods()
    return dict(_SECTIONS)
