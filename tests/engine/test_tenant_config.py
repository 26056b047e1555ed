"""The tenant config document: schema, merge patch semantics, older shapes, the tenant-editable allow-list."""

from __future__ import annotations

import copy
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest

from engine.channels import Channel
from engine.errors import ConfigurationError
from engine.settings import load_settings
from engine.tenant_config import (
    ConfigInvalid,
    EditPolicy,
    ProvidersConfig,
    TenantConfig,
    TenantConfigCache,
    changed_paths,
    check_paths,
    merge_patch,
    read_stored,
    unknown_providers,
    upgrade,
    validate_config,
)
from engine.tenant_config.schema import known_keys


def problems(doc: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigInvalid) as caught:
        validate_config(doc)
    return {p.dotted: p.msg for p in caught.value.problems}


# -- schema -------------------------------------------------------------------------------------------


def test_defaults_show_every_key() -> None:
    doc = TenantConfig().document()
    assert doc["region"] == "eu" and doc["default_locale"] is None and doc["unsubscribe"] is False
    assert doc["providers"] == {c.value: {"allow": None} for c in Channel}


def test_every_channel_has_a_providers_entry() -> None:
    assert set(ProvidersConfig.model_fields) == {c.value for c in Channel}


def test_allow_list_in_the_spec_shape() -> None:
    config = validate_config({"providers": {"email": {"allow": ["sendgrid", "ses"]}}})
    assert config.providers.allowed(Channel.EMAIL) == ("sendgrid", "ses")
    assert config.providers.allowed(Channel.SMS) is None


@pytest.mark.parametrize(
    ("doc", "path", "why"),
    [
        (
            {"colour": "blue"},
            "colour",
            "unknown key (known here: attachments, budgets, dedupe, default_locale, limits, preferences, providers, "
            "quotas, region, retries, routing, unsubscribe)",
        ),
        ({"providers": {"fax": {"allow": ["x"]}}}, "providers.fax", "unknown key (known here: email, inapp, push"),
        ({"providers": {"email": {"allow": ["ses"], "deny": []}}}, "providers.email.deny", "unknown key"),
        ({"providers": {"email": ["ses"]}}, "providers.email", 'old shape; send {"allow": [...]}'),
        ({"providers": {"email": "ses"}}, "providers.email", "should be an object"),
        ({"providers": {"email": {"allow": "ses"}}}, "providers.email.allow", "valid tuple"),
        ({"providers": {"email": {"allow": []}}}, "providers.email.allow", "at least 1 item"),
        ({"providers": {"email": {"allow": ["ses", "ses"]}}}, "providers.email.allow", "more than once"),
        ({"providers": {"email": {"allow": ["Bad Name"]}}}, "providers.email.allow.0", "should match pattern"),
        ({"default_locale": "xx-QQ"}, "default_locale", "not a known locale"),
        ({"unsubscribe": "yes"}, "unsubscribe", "valid boolean"),
        ({"region": "Europe/West"}, "region", "should match pattern"),
        ({"retries": {"delays_s": [0]}}, "retries.delays_s.0", "greater than 0"),
        ({"retries": {"delays_s": [1] * 11}}, "retries.delays_s", "at most 10 items"),
        ({"retries": {"fax": {}}}, "retries.fax", "unknown key (known here: delays_s, email, inapp, push"),
        ({"retries": {"sms": {"delays_s": [90000]}}}, "retries.sms.delays_s.0", "less than or equal to 86400"),
        ({"dedupe": {"Auth Codes": {"window_seconds": 30}}}, "dedupe.Auth Codes", "not a valid name here"),
        ({"dedupe": {"auth": {"window": 30}}}, "dedupe.auth.window", "unknown key (known here: window_seconds)"),
        ({"dedupe": {"auth": {"window_seconds": -1}}}, "dedupe.auth.window_seconds", "greater than or equal to 0"),
        ({"dedupe": {"auth": 30}}, "dedupe.auth", "should be an object"),
    ],
)
def test_bad_documents_name_the_dotted_path_and_why(doc: dict[str, Any], path: str, why: str) -> None:
    found = problems(doc)
    assert path in found, found
    assert why in found[path]


def test_retries_per_tenant_and_channel_default_to_the_platform() -> None:
    assert TenantConfig().retries.delays_for(Channel.EMAIL) is None  # HERALD_RETRY_DELAYS: 10, 60, 300
    config = validate_config({"retries": {"delays_s": [5, 30], "sms": {"delays_s": []}}})
    assert config.retries.delays_for(Channel.EMAIL) == (5.0, 30.0)
    assert config.retries.delays_for(Channel.SMS) == ()  # no retry: the first failure is the last
    assert config.stored() == {"retries": {"delays_s": [5.0, 30.0], "sms": {"delays_s": []}}}


def test_dedupe_windows_auth_by_default_others_off_unless_set() -> None:
    default = TenantConfig()
    assert default.document()["dedupe"] == {"auth": {"window_seconds": 30}} and default.stored() == {}
    windows = [default.dedupe_window_s(c) for c in ("auth", "marketing", None)]
    assert windows == [30, 0, 0]
    config = validate_config(merge_patch(default.document(), {"dedupe": {"marketing": {"window_seconds": 600}}}))
    assert (config.dedupe_window_s("auth"), config.dedupe_window_s("marketing")) == (30, 600)
    off = validate_config(merge_patch(config.document(), {"dedupe": {"auth": {"window_seconds": 0}}}))
    assert off.dedupe_window_s("auth") == 0
    reset = validate_config(merge_patch(off.document(), {"dedupe": {"auth": None}}))
    assert reset.dedupe_window_s("auth") == 30  # null resets a key to its default


def test_retries_and_dedupe_are_paths_the_platform_can_hand_to_tenants() -> None:
    assert check_paths(("dedupe", "retries", "retries.sms", "retries.sms.delays_s", "dedupe.auth.window_seconds")) == []
    policy = EditPolicy(("dedupe",))
    before = TenantConfig().document()
    after = merge_patch(before, {"dedupe": {"otp": {"window_seconds": 10}}, "retries": {"delays_s": [1]}})
    assert policy.refused(changed_paths(before, after)) == ["retries.delays_s"]


def test_every_problem_is_reported_at_once() -> None:
    found = problems({"unsubscribe": 1.5, "providers": {"sms": {"allow": []}}, "x": 1})
    assert set(found) == {"unsubscribe", "providers.sms.allow", "x"}


def test_locale_is_normalized() -> None:
    assert validate_config({"default_locale": "en_gb"}).default_locale == "en-GB"


def test_credentials_are_never_serialized_but_stored() -> None:
    config = validate_config({"credentials": {"email:sendgrid": "gAAAA-sealed"}})
    assert "credentials" not in config.document()
    assert "gAAAA" not in config.model_dump_json() and "gAAAA" not in repr(config)
    assert config.stored() == {"credentials": {"email:sendgrid": "gAAAA-sealed"}}


def test_stored_form_keeps_what_differs_from_defaults_and_no_region() -> None:
    config = validate_config({"region": "us", "unsubscribe": True, "providers": {"sms": {"allow": ["twilio"]}}})
    assert config.stored() == {"unsubscribe": True, "providers": {"sms": {"allow": ["twilio"]}}}
    assert TenantConfig().stored() == {}


def test_unknown_providers_are_named_by_index() -> None:
    config = validate_config({"providers": {"email": {"allow": ["ses", "sendgird"]}}})
    found = unknown_providers(config, {Channel.EMAIL: {"ses", "sendgrid", "console"}})
    assert [(p.dotted, p.msg) for p in found] == [
        ("providers.email.allow.1", "no email provider 'sendgird' (known: console, sendgrid, ses)")
    ]


# -- merge patch (RFC 7396) ---------------------------------------------------------------------------

#: RFC 7396 appendix A, every example.
RFC_EXAMPLES: list[tuple[Any, Any, Any]] = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "result"), RFC_EXAMPLES)
def test_merge_patch_follows_the_rfc(target: Any, patch: Any, result: Any) -> None:
    before = copy.deepcopy((target, patch))
    assert merge_patch(target, patch) == result
    assert (target, patch) == before  # neither argument is modified


def test_merge_patch_on_the_document() -> None:
    before = validate_config(
        {"unsubscribe": True, "providers": {"email": {"allow": ["ses", "sendgrid"]}, "sms": {"allow": ["twilio"]}}}
    ).document()
    after = validate_config(merge_patch(before, {"unsubscribe": None, "providers": {"email": {"allow": ["sendgrid"]}}}))
    assert after.unsubscribe is False  # null resets to the default
    assert after.providers.allowed(Channel.EMAIL) == ("sendgrid",)  # arrays replace
    assert after.providers.allowed(Channel.SMS) == ("twilio",)  # siblings stay (nested merge)
    reset = validate_config(merge_patch(before, {"providers": {"sms": None}}))
    assert reset.providers.allowed(Channel.SMS) is None and reset.providers.allowed(Channel.EMAIL) == (
        "ses",
        "sendgrid",
    )


def test_changed_paths() -> None:
    before = TenantConfig().document()
    after = merge_patch(before, {"region": "us", "providers": {"email": {"allow": ["ses"]}, "sms": {"allow": None}}})
    assert changed_paths(before, after) == ["providers.email.allow", "region"]
    assert changed_paths(before, merge_patch(before, {"providers": {"push": {"allow": None}}})) == []
    assert changed_paths({"a": {"b": 1}}, {"a": 2}) == ["a"]


# -- who may change what ------------------------------------------------------------------------------


def test_edit_policy_covers_keys_and_what_is_under_them() -> None:
    policy = EditPolicy()
    assert policy.refused(["default_locale", "unsubscribe", "providers.email.allow", "region"]) == ["region"]
    narrow = EditPolicy(("providers.email",))
    assert narrow.refused(["providers.email.allow", "providers.sms.allow", "providers"]) == [
        "providers.sms.allow",
        "providers",
    ]
    assert EditPolicy(()).refused(["unsubscribe"]) == ["unsubscribe"]


def test_editable_keys_setting_must_name_config_keys() -> None:
    assert load_settings({}).tenant_editable_keys == ("default_locale", "unsubscribe", "providers")
    chosen = load_settings({"HERALD_TENANT_EDITABLE_KEYS": "default_locale, providers.email"})
    assert chosen.tenant_editable_keys == ("default_locale", "providers.email")
    with pytest.raises(ConfigurationError, match=r"HERALD_TENANT_EDITABLE_KEYS.*credentials, providers\.fax"):
        load_settings({"HERALD_TENANT_EDITABLE_KEYS": "unsubscribe,credentials,providers.fax"})
    assert check_paths(("region", "providers.sms.allow", "providers..x", "")) == ["providers..x", ""]


# -- stored rows --------------------------------------------------------------------------------------


def test_bare_list_shape_is_upgraded() -> None:
    raw = {"providers": {"email": ["sendgrid", "ses"], "sms": [], "push": {"allow": ["fcm"]}}, "unsubscribe": True}
    assert upgrade(raw) == {
        "providers": {"email": {"allow": ["sendgrid", "ses"]}, "push": {"allow": ["fcm"]}},
        "unsubscribe": True,
    }
    assert raw["providers"]["email"] == ["sendgrid", "ses"]  # the row read is not modified
    config = read_stored("eu", raw)
    assert config.providers.allowed(Channel.EMAIL) == ("sendgrid", "ses")
    assert config.providers.allowed(Channel.SMS) is None and config.unsubscribe is True


def test_stored_keys_that_do_not_validate_are_dropped_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    raw = {
        "unsubscribe": True,
        "default_locale": "not a locale!",
        "legacy_flag": 1,
        "providers": {"email": {"allow": ["ses", 7]}, "sms": {"allow": ["twilio"]}},
        "credentials": {"email:ses": "sealed"},
    }
    with caplog.at_level(logging.WARNING):
        config = read_stored("us", raw, tenant="t_x")
    assert config.region == "us" and config.unsubscribe is True and config.default_locale is None
    assert config.providers.allowed(Channel.EMAIL) is None and config.providers.allowed(Channel.SMS) == ("twilio",)
    assert config.credentials == {"email:ses": "sealed"}
    warned = caplog.text
    assert "default_locale" in warned and "legacy_flag" in warned and "providers.email.allow" in warned
    assert "not a locale!" not in warned and "sealed" not in warned  # names only, never values
    assert read_stored("eu", None) == TenantConfig()


def test_readme_documents_every_key() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Tenant config", 1)[1].split("\n## ", 1)[0]
    documented = {line.split("`")[1].split(".")[0] for line in section.splitlines() if line.startswith("| `")}
    assert documented == set(known_keys(TenantConfig))


def test_cache_parses_a_row_only_when_its_version_moved() -> None:
    cache = TenantConfigCache(pool=None)  # type: ignore[arg-type]  # from_row never touches storage
    tenant = uuid.uuid4()
    first = cache.from_row(tenant, 3, "eu", {"unsubscribe": True})
    assert cache.from_row(tenant, 3, "eu", {"unsubscribe": False}) is first  # same version: kept
    assert cache.from_row(tenant, 2, "us", {}) is first  # an older row never replaces a newer one
    newer = cache.from_row(tenant, 4, "us", {"providers": {"sms": ["twilio"]}})
    assert newer.region == "us" and newer.providers.allowed(Channel.SMS) == ("twilio",) and cache.version(tenant) == 4
