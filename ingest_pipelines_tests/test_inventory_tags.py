"""The bulk loader's tag rules, Properties parsing and the Indexed tag update (pure functions)."""

from __future__ import annotations

import pytest

from ingest_pipelines.inventory.tags import (
    QUALIFIED,
    SKIPPED_INVALID,
    SKIPPED_NON_QUALIFIED,
    PropertiesError,
    check_record_size,
    evaluate_tags,
    is_image_key,
    parse_properties,
    parse_properties_uri,
    tags_with_indexed,
)


def tags(**values: str) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in values.items()]


@pytest.mark.parametrize(
    ("key", "image"),
    [("a.PNG", True), ("b.jpg", True), ("c.jpeg", True), ("D.JpEg", True), ("d.gif", False), ("png", False), ("x.png.txt", False)],
)
def test_only_png_jpg_jpeg_any_case(key: str, image: bool) -> None:
    assert is_image_key(key) is image


@pytest.mark.parametrize(
    ("tag_set", "verdict", "reason"),
    [
        (tags(UserId="fred"), QUALIFIED, ""),
        (tags(userid="fred"), QUALIFIED, ""),
        (tags(Other="x"), SKIPPED_INVALID, "no UserId tag"),
        (tags(UserId=""), SKIPPED_INVALID, "no UserId tag"),
        (tags(UserId="u" * 129), SKIPPED_INVALID, "longer than 128"),
        (tags(UserId="fred", indexed="TRUE"), SKIPPED_NON_QUALIFIED, "Indexed=true"),
        (tags(UserId="fred", IGNORE="True"), SKIPPED_NON_QUALIFIED, "Ignore=true"),
        (tags(UserId="fred", Indexed="false", Ignore="no"), QUALIFIED, ""),
    ],
)
def test_tag_rules(tag_set, verdict: str, reason: str) -> None:
    decision = evaluate_tags("face.jpg", tag_set)
    assert decision.verdict == verdict
    assert reason in decision.reason
    if verdict == QUALIFIED:
        assert decision.user_id == "fred"


def test_user_id_of_128_characters_is_valid() -> None:
    assert evaluate_tags("a.png", tags(UserId="u" * 128)).verdict == QUALIFIED


def test_properties_tag_is_passed_on() -> None:
    decision = evaluate_tags("a.png", tags(UserId="fred", PROPERTIES="s3://b/p.json"))
    assert decision.properties_uri == "s3://b/p.json"


@pytest.mark.parametrize("uri", ["b/p.json", "s3://b/p.txt", "s3:///p.json", "https://b/p.json", "s3://b"])
def test_properties_uri_must_be_s3_json(uri: str) -> None:
    with pytest.raises(PropertiesError, match="not an s3://bucket/key.json path"):
        parse_properties_uri(uri)


def test_properties_must_be_string_to_string() -> None:
    assert parse_properties(b'{"fname": "Fred"}', "s3://b/p.json") == {"fname": "Fred"}
    with pytest.raises(PropertiesError, match="not valid JSON"):
        parse_properties(b"{fname: Fred", "s3://b/p.json")
    with pytest.raises(PropertiesError, match="value of 'age' must be a string, not int"):
        parse_properties(b'{"age": 42}', "s3://b/p.json")
    with pytest.raises(PropertiesError, match="JSON object, not list"):
        parse_properties(b'["a"]', "s3://b/p.json")


def test_record_must_fit_400_kb() -> None:
    check_record_size("fred", {"a": "x" * 1000})
    with pytest.raises(PropertiesError, match="limit is 409600"):
        check_record_size("fred", {"a": "x" * 400 * 1024})


def test_indexed_tag_keeps_other_tags_and_replaces_old_spelling() -> None:
    updated = tags_with_indexed(tags(UserId="fred", team="blue", indexed="false"))
    assert updated == [{"Key": "UserId", "Value": "fred"}, {"Key": "team", "Value": "blue"}, {"Key": "Indexed", "Value": "True"}]
