"""`Config`: every setting, the validated config file as a whole, and the
models it serves."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from pydantic import Field, model_validator

from .._core import Topology
from ..errors import ConfigError
from ..models import DEFAULT_MODEL_FILE, served_model_name
from .model_sections import EngineSection, ModelSection, PagedAttentionSection, ServedModelSection, TopologyRangeSection, build_topology
from .sections import HistorySection, SamplingSection, Section, ServerSection

# The sections that configure the one model of a config without `models`.
SINGLE_MODEL_SECTIONS = ("model", "topology", "paged_attention", "engine")


def name_taken_twice(models: Sequence[ServedModelSection]) -> tuple[str, int, int] | None:
    """The first name (or alias) two of ``models`` share, with their indices."""
    seen: dict[str, int] = {}
    for index, entry in enumerate(models):
        for name in entry.names:
            if name in seen:
                return name, seen[name], index
            seen[name] = index
    return None


class Config(Section):
    """Everything `mistralvllm chat` and `mistralvllm serve` need."""

    model: ModelSection = ModelSection()
    topology: list[TopologyRangeSection] = Field(default_factory=list)
    paged_attention: PagedAttentionSection = PagedAttentionSection()
    engine: EngineSection = EngineSection()
    models: list[ServedModelSection] = Field(
        default_factory=list, description="Several named models for one service (the first loads at start-up); empty: the one model above"
    )
    sampling: SamplingSection = SamplingSection()
    system_prompt: str | None = None
    history: HistorySection = HistorySection()
    server: ServerSection = ServerSection()

    @model_validator(mode="after")
    def _models_are_consistent(self) -> Config:
        build_topology(self.topology)
        given = [name for name in SINGLE_MODEL_SECTIONS if name in self.model_fields_set]
        if self.models and given:
            raise ValueError(f"models: give each model's options in its entry, and leave out {', '.join(given)}")
        if (taken := name_taken_twice(self.models)) is not None:
            name, first, second = taken
            raise ValueError(f"models[{second}]: the name {name!r} is already taken by models[{first}]; names and aliases must be unique")
        return self

    def served_models(self) -> list[ServedModelSection]:
        """The configured models, first the one loaded at start-up: `models`,
        or the one model of the single-model sections (named after its file)."""
        if self.models:
            return list(self.models)
        name = served_model_name(self.model.path or DEFAULT_MODEL_FILE)
        return [
            ServedModelSection(name=name, **self.model.model_dump(), topology=self.topology, paged_attention=self.paged_attention, engine=self.engine)
        ]

    def find_model(self, name: str) -> ServedModelSection | None:
        """The configured model that ``name`` names (its name or an alias)."""
        return next((entry for entry in self.served_models() if name in entry.names), None)

    def model_entry(self, model: str) -> ServedModelSection:
        """The model that ``model`` names: a configured model's name or alias;
        else a model file, directory or name, as given (`resolve_model` finds
        it), served under that name with the first configured model's options."""
        found = self.find_model(model)
        if found is not None:
            return found
        return self.served_models()[0].model_copy(update={"path": model, "name": served_model_name(model), "aliases": []})

    def with_models(self, models: Sequence[ServedModelSection]) -> Config:
        """This config serving ``models`` (each name once) instead of its own."""
        if (taken := name_taken_twice(models)) is not None:
            name, first, second = taken
            raise ConfigError(f"models: {name!r} is given twice (model {first + 1} and model {second + 1}); name each model once")
        return self.model_copy(update={"models": list(models)})

    def build_topology(self) -> Topology | None:
        """The first model's `topology` as a `Topology` (None when empty)."""
        return build_topology(self.served_models()[0].topology)

    def session_options(self) -> dict[str, Any]:
        """Keyword arguments for the first model's `Session`."""
        return self.served_models()[0].session_options()

    def digest(self) -> str:
        """A short hash of the settings that shape answers, stored with each conversation."""
        shaping = self.model_dump(include={"model", "topology", "models", "sampling", "system_prompt"})
        return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:12]
