"""The bulk loader's tag rules: which objects qualify for indexing, and the Properties file they point to.

Rules: image keys only; tag keys case-insensitive; UserId required; Indexed/Ignore=true skip; record <= 400 KB.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

#: object keys the gateway takes (case-insensitive), as a regex usable by pyarrow.compute too.
IMAGE_KEY_PATTERN = r"(?i)\.(png|jpe?g)$"
MAX_USER_ID_CHARS = 128
#: the whole user record (UserId + Properties) must fit a DynamoDB item.
MAX_RECORD_BYTES = 400 * 1024
INDEXED_TAG = "Indexed"

QUALIFIED = "qualified"
SKIPPED_INVALID = "skipped_invalid"
SKIPPED_NON_QUALIFIED = "skipped_non_qualified"


class PropertiesError(ValueError):
    """The object's Properties tag or file is unusable; the object fails with this reason."""


def is_image_key(key: str) -> bool:
    return re.search(IMAGE_KEY_PATTERN, key) is not None


@dataclass(frozen=True)
class TagDecision:
    verdict: str
    reason: str = ""
    user_id: str | None = None
    properties_uri: str | None = None


def tag_values(tag_set: list[dict[str, str]]) -> dict[str, str]:
    """Tag key (lower case) -> value; S3 tag keys are case-sensitive, the loader's rules are not."""
    return {str(tag["Key"]).lower(): str(tag.get("Value", "")) for tag in tag_set}


def evaluate_tags(key: str, tag_set: list[dict[str, str]]) -> TagDecision:
    """Decide from an object's key and tags whether it goes to the gateway."""
    if not is_image_key(key):
        return TagDecision(SKIPPED_INVALID, "not a .png/.jpg/.jpeg object")
    tags = tag_values(tag_set)
    if tags.get("indexed", "").strip().lower() == "true":
        return TagDecision(SKIPPED_NON_QUALIFIED, "tagged Indexed=true")
    if tags.get("ignore", "").strip().lower() == "true":
        return TagDecision(SKIPPED_NON_QUALIFIED, "tagged Ignore=true")
    user_id = tags.get("userid", "")
    if not user_id:
        return TagDecision(SKIPPED_INVALID, "no UserId tag")
    if len(user_id) > MAX_USER_ID_CHARS:
        return TagDecision(SKIPPED_INVALID, f"UserId is longer than {MAX_USER_ID_CHARS} characters")
    return TagDecision(QUALIFIED, user_id=user_id, properties_uri=tags.get("properties") or None)


def parse_properties_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/key.json` -> (bucket, key)."""
    match = re.fullmatch(r"s3://([^/]+)/(.+\.json)", uri.strip(), flags=re.IGNORECASE)
    if not match:
        raise PropertiesError(f"Properties tag {uri!r} is not an s3://bucket/key.json path")
    return match.group(1), match.group(2)


def parse_properties(data: bytes, uri: str) -> dict[str, str]:
    """The Properties file must be a JSON object of string -> string."""
    try:
        value: Any = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise PropertiesError(f"Properties file {uri} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise PropertiesError(f"Properties file {uri} must hold a JSON object, not {type(value).__name__}")
    for name, item in value.items():
        if not isinstance(item, str):
            raise PropertiesError(f"Properties file {uri}: value of {name!r} must be a string, not {type(item).__name__}")
    return value


def check_record_size(user_id: str, properties: dict[str, str]) -> None:
    size = len(orjson.dumps({"UserId": user_id, "Properties": properties}))
    if size > MAX_RECORD_BYTES:
        raise PropertiesError(f"user record is {size} bytes; the limit is {MAX_RECORD_BYTES} (400 KB)")


def tags_with_indexed(tag_set: list[dict[str, str]]) -> list[dict[str, str]]:
    """The object's tags plus Indexed=True; any other spelling of Indexed is replaced, the rest kept."""
    kept = [{"Key": tag["Key"], "Value": tag.get("Value", "")} for tag in tag_set if str(tag["Key"]).lower() != "indexed"]
    return [*kept, {"Key": INDEXED_TAG, "Value": "True"}]
