"""Every key a user can write in ingest.yaml (the fields of every workflow kind's, store type's and nested
pydantic model) is documented in docs/: a key added without docs fails here, naming the model and the key."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pydantic

from ingest_pipelines.config import SOURCE_TYPES, WORKFLOW_KINDS, ExecutorConfig, load_kind_modules
from ingest_pipelines.config import DESTINATION_TYPES  # noqa: I001 (one registry per line reads better)
from ingest_pipelines_tests.conftest import REPO_ROOT

DOCS = REPO_ROOT / "docs"
#: internal fields of the models (filled by the loader, never written in ingest.yaml)
INTERNAL = {"dropped", "path"}


def _models() -> dict[str, type[pydantic.BaseModel]]:
    load_kind_modules()
    models: dict[str, type[pydantic.BaseModel]] = {"executor": ExecutorConfig}
    for kind, model in WORKFLOW_KINDS.items():
        models[f"workflow kind {kind!r}"] = model
    for registry, role in ((SOURCE_TYPES, "source"), (DESTINATION_TYPES, "destination")):
        for name in registry:
            models[f"{role} type {name!r}"] = registry[name]
    # nested models (policy, gateway, tag rules, ...), found through the fields' annotations
    todo = list(models.items())
    while todo:
        where, model = todo.pop()
        for field_name, field in model.model_fields.items():
            for nested in _nested_models(field.annotation):
                label = f"{where}.{field_name}"
                if nested not in models.values():
                    models[label] = nested
                    todo.append((label, nested))
    return models


def _nested_models(annotation: object) -> list[type[pydantic.BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _nested_models(arg)]


def _documented() -> str:
    return "\n".join(page.read_text() for page in sorted(DOCS.glob("*.md")))


def test_every_config_key_is_documented() -> None:
    text = _documented()
    missing = []
    for where, model in sorted(_models().items()):
        for field_name, field in model.model_fields.items():
            key = field.alias or field_name
            if key in INTERNAL:
                continue
            # as `key` (or `parent.key`) in prose or a table, or as `key:` in a YAML example
            if not re.search(rf"`(?:[\w-]+\.)*{re.escape(key)}[`:]|^\s*-?\s*{re.escape(key)}:|[{{,]\s*{re.escape(key)}:", text, re.M):
                missing.append(f"{where}: {key}")
    assert not missing, "config keys not documented in docs/:\n" + "\n".join(missing)


def test_the_check_finds_a_missing_key(tmp_path: Path) -> None:
    # the search above would not pass a key that appears nowhere
    assert not re.search(r"`surelyNotAKey`|^\s*-?\s*surelyNotAKey:", _documented(), re.M)
