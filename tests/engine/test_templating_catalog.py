"""Template references, version and locale resolution, tenant overrides, variables and the compile cache."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from engine.channels import Channel
from engine.errors import RenderError
from engine.templating import (
    ChannelNotSupported,
    InMemorySource,
    InvalidLocale,
    InvalidManifest,
    InvalidTemplateRef,
    Manifest,
    Money,
    RenderContext,
    TemplateCatalog,
    TemplateError,
    TemplateRef,
    UnknownLocale,
    UnknownTemplate,
    UnknownVersion,
    locale_chain,
    normalize_locale,
)

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


@pytest.fixture(scope="module")
def catalog() -> TemplateCatalog:
    return TemplateCatalog(TEMPLATES)


def manifest(template_id: str = "welcome", version: int = 1, **doc: Any) -> Manifest:
    base: dict[str, Any] = {"category": "transactional", "channels": ["email", "sms"], "default_locale": "en"}
    return Manifest.from_dict(template_id, version, {**base, **doc})


class TestTemplateRef:
    @pytest.mark.parametrize(
        ("ref", "expected"),
        [
            ("otp_login", TemplateRef("otp_login")),
            ("otp_login:v3", TemplateRef("otp_login", 3)),
            ("magic-link2:v12", TemplateRef("magic-link2", 12)),
        ],
    )
    def test_parse(self, ref: str, expected: TemplateRef) -> None:
        assert TemplateRef.parse(ref) == expected
        assert str(TemplateRef.parse(ref)) == ref

    @pytest.mark.parametrize(
        ("ref", "says"),
        [
            ("", "template id"),
            ("otp login", "template id"),
            ("../etc:v1", "template id"),
            ("OTP", "template id"),
            ("otp_login:3", "version must look like 'v3'"),
            ("otp_login:v0", "version"),
            ("otp_login:v", "version"),
            ("otp_login:v1:v2", "version"),
        ],
    )
    def test_invalid_refs_are_value_errors_that_say_why(self, ref: str, says: str) -> None:
        with pytest.raises(ValueError, match=says) as caught:
            TemplateRef.parse(ref)
        assert isinstance(caught.value, InvalidTemplateRef)
        assert caught.value.field == "template_id"


class TestVersions:
    def test_no_version_means_newest(self, catalog: TemplateCatalog) -> None:
        assert catalog.resolve("otp_login", locale="en", channel=Channel.SMS).version == 4
        assert catalog.resolve("magic_link_login", locale="en", channel=Channel.EMAIL).version == 2

    def test_pinned_version(self, catalog: TemplateCatalog) -> None:
        resolved = catalog.resolve("otp_login:v1", locale="en", channel=Channel.EMAIL)
        assert (resolved.id, resolved.version, resolved.ref) == ("otp_login", 1, "otp_login:v1")

    def test_versions_render_differently(self, catalog: TemplateCatalog) -> None:
        texts = set()
        for version in (1, 2, 3):
            resolved = catalog.resolve(f"otp_login:v{version}", locale="en", channel=Channel.SMS)
            texts.add(catalog.render(resolved, {"code": "111222"}, Channel.SMS).text)
        assert len(texts) == 3

    def test_unknown_template(self, catalog: TemplateCatalog) -> None:
        with pytest.raises(UnknownTemplate, match="no template 'nope'") as caught:
            catalog.resolve("nope", locale="en", channel=Channel.EMAIL)
        assert caught.value.field == "template_id"

    def test_unknown_version_lists_existing(self, catalog: TemplateCatalog) -> None:
        with pytest.raises(UnknownVersion, match="v1, v2, v3") as caught:
            catalog.resolve("otp_login:v9", locale="en", channel=Channel.EMAIL)
        assert caught.value.field == "template_id"

    def test_channel_not_served(self, catalog: TemplateCatalog) -> None:
        with pytest.raises(ChannelNotSupported, match="serves email, sms") as caught:
            catalog.resolve("otp_login:v2", locale="en", channel=Channel.PUSH)
        assert caught.value.field == "channel"
        assert catalog.resolve("otp_login:v3", locale="en", channel=Channel.PUSH).version == 3

    def test_errors_are_template_errors_for_the_api(self, catalog: TemplateCatalog) -> None:
        for ref, channel in (("bad ref", Channel.EMAIL), ("nope", Channel.EMAIL), ("magic_link_login", Channel.SMS)):
            with pytest.raises(TemplateError):
                catalog.resolve(ref, locale="en", channel=channel)


class TestLocales:
    @pytest.mark.parametrize(
        ("tag", "norm"),
        [("en", "en"), ("en_gb", "en-GB"), ("EN-gb", "en-GB"), ("zh-hant-tw", "zh-Hant-TW"), ("es-419", "es-419")],
    )
    def test_normalize(self, tag: str, norm: str) -> None:
        assert normalize_locale(tag) == norm

    @pytest.mark.parametrize("tag", ["e", "en/GB", "../en", "en-GB-" + "x" * 20])
    def test_invalid_locale(self, tag: str, catalog: TemplateCatalog) -> None:
        with pytest.raises(InvalidLocale) as caught:
            catalog.resolve("otp_login", locale=tag, channel=Channel.SMS)
        assert caught.value.field == "locale"

    def test_no_locale_means_the_defaults(self, catalog: TemplateCatalog) -> None:
        gb = catalog.resolve("otp_login", locale="", channel=Channel.SMS, tenant_default_locale="en-GB")
        assert gb.locale_used == "en-GB"
        assert catalog.resolve("otp_login", locale="", channel=Channel.SMS).locale_used == "en"

    def test_chain(self) -> None:
        assert locale_chain("en-GB", "fr-CA", "de") == ("en-GB", "en", "fr-CA", "fr", "de")
        assert locale_chain("en", None, "en") == ("en",)

    def test_exact(self, catalog: TemplateCatalog) -> None:
        assert catalog.resolve("otp_login", locale="en-GB", channel=Channel.SMS).locale_used == "en-GB"
        assert catalog.resolve("otp_login", locale="en_gb", channel=Channel.SMS).locale_used == "en-GB"

    def test_language(self, catalog: TemplateCatalog) -> None:
        assert catalog.resolve("otp_login", locale="en-AU", channel=Channel.SMS).locale_used == "en"

    def test_manifest_default(self, catalog: TemplateCatalog) -> None:
        assert catalog.resolve("otp_login", locale="fr-FR", channel=Channel.SMS).locale_used == "en"

    def test_tenant_default_before_manifest_default(self) -> None:
        source = InMemorySource()
        texts = {loc: {"sms.txt": f"hello from {loc}"} for loc in ("en", "de", "en-GB")}
        source.add(manifest(channels=["sms"], default_locale="en"), texts)
        cat = TemplateCatalog(source)
        for tenant_default, used in (("de-AT", "de"), ("en-GB", "en-GB"), ("it", "en")):
            resolved = cat.resolve("welcome", locale="fr-FR", channel=Channel.SMS, tenant_default_locale=tenant_default)
            assert resolved.locale_used == used

    def test_locale_needs_the_channels_parts(self) -> None:
        source = InMemorySource()
        # en-GB has only the SMS text: an email in en-GB falls back to en, an SMS does not.
        email = {"sms.txt": "en", "subject.txt": "s", "body.txt": "b"}
        source.add(manifest(), {"en-GB": {"sms.txt": "gb"}, "en": email})
        cat = TemplateCatalog(source)
        assert cat.resolve("welcome", locale="en-GB", channel=Channel.SMS).locale_used == "en-GB"
        assert cat.resolve("welcome", locale="en-GB", channel=Channel.EMAIL).locale_used == "en"

    def test_no_locale_in_chain(self) -> None:
        source = InMemorySource()
        source.add(manifest(default_locale="de"), {"fr": {"sms.txt": "salut"}})
        with pytest.raises(UnknownLocale) as caught:
            TemplateCatalog(source).resolve("welcome", locale="en-GB", channel=Channel.SMS)
        assert caught.value.field == "locale"


class TestTenantOverrides:
    @pytest.fixture
    def cat(self) -> TemplateCatalog:
        own = InMemorySource()
        variables = [{"name": "code", "type": "str", "required": True}]
        texts = {"en": {"sms.txt": "ACME code {{ code }}"}}
        own.add(manifest("otp_login", 7, channels=["sms"], variables=variables), texts)
        return TemplateCatalog(TEMPLATES, tenants={"t_acme": own})

    def test_tenant_with_the_id_resolves_among_its_own_versions_only(self, cat: TemplateCatalog) -> None:
        resolved = cat.resolve("otp_login", locale="en", channel=Channel.SMS, tenant="t_acme")
        assert (resolved.version, resolved.owner) == (7, "t_acme")
        assert cat.render(resolved, {"code": "1"}, Channel.SMS).text == "ACME code 1"
        with pytest.raises(UnknownVersion):
            cat.resolve("otp_login:v3", locale="en", channel=Channel.SMS, tenant="t_acme")

    def test_other_ids_and_tenants_use_shipped(self, cat: TemplateCatalog) -> None:
        assert cat.resolve("magic_link_login", locale="en", channel=Channel.EMAIL, tenant="t_acme").owner is None
        other = cat.resolve("otp_login", locale="en", channel=Channel.SMS, tenant="t_other")
        assert (other.version, other.owner) == (4, None)

    def test_invalidate_picks_up_a_tenants_new_partials(self) -> None:
        own = InMemorySource(partials={"en": {"sig.txt": "old"}})
        own.add(manifest("note", 1, channels=["sms"]), {"en": {"sms.txt": '{% include "sig.txt" %}'}})
        cat = TemplateCatalog(TEMPLATES, tenants={"t_acme": own})
        resolved = cat.resolve("note", locale="en", channel=Channel.SMS, tenant="t_acme")
        assert cat.render(resolved, {}, Channel.SMS).text == "old"
        own.partials["en"]["sig.txt"] = "new"
        assert cat.render(resolved, {}, Channel.SMS).text == "old"  # compiled and cached
        cat.invalidate("t_acme")
        assert cat.render(resolved, {}, Channel.SMS).text == "new"

    def test_tenant_templates_fall_back_to_shipped_partials(self) -> None:
        own = InMemorySource()
        own.add(manifest("note", 1, channels=["sms"]), {"en-GB": {"sms.txt": '{% include "footer.txt" %}'}})
        cat = TemplateCatalog(TEMPLATES, tenants={"t_acme": own})
        resolved = cat.resolve("note", locale="en-GB", channel=Channel.SMS, tenant="t_acme")
        assert "help centre" in (cat.render(resolved, {}, Channel.SMS).text or "")

    def test_cache_keeps_owners_apart(self, cat: TemplateCatalog) -> None:
        mine = cat.resolve("otp_login", locale="en", channel=Channel.SMS, tenant="t_acme")
        shipped = cat.resolve("otp_login", locale="en", channel=Channel.SMS)
        assert cat.render(mine, {"code": "1"}, Channel.SMS).text != cat.render(shipped, {"code": "1"}, Channel.SMS).text


class TestManifests:
    @pytest.mark.parametrize(
        ("doc", "says"),
        [
            ({"category": "promo"}, "category"),
            ({"channels": ["fax"]}, "channels"),
            ({"channels": []}, "channels"),
            ({"colour": "red"}, "unknown key"),
            ({"default_locale": "../x"}, "default_locale"),
            ({"variables": [{"name": "code", "type": "string"}]}, "unknown type"),
            ({"variables": [{"name": "code", "required": True, "default": "1"}]}, "required and has a default"),
            ({"variables": [{"name": "ttl", "type": "int", "example": "five"}]}, "example"),
            ({"variables": [{"name": "unsubscribe_url"}]}, "not allowed"),
            ({"variables": [{"name": "a"}, {"name": "a"}]}, "twice"),
            ({"variables": [{"name": "a", "requierd": True}]}, "unknown key"),
        ],
    )
    def test_invalid(self, doc: dict[str, Any], says: str) -> None:
        with pytest.raises(InvalidManifest, match=says):
            manifest(**doc)

    def test_shipped_manifests(self, catalog: TemplateCatalog) -> None:
        v3 = catalog.resolve("otp_login:v3", locale="en", channel=Channel.SMS).manifest
        for version in (1, 2, 3, 4):  # one-time codes are required messages, never opted out of
            resolved = catalog.resolve(f"otp_login:v{version}", locale="en", channel=Channel.SMS)
            assert resolved.manifest.category == "auth"
        assert v3.channels == (Channel.EMAIL, Channel.SMS, Channel.PUSH)
        assert v3.sensitive == frozenset({"code"})
        assert v3.variable("ttl") is not None and v3.variable("ttl").default == 5  # type: ignore[union-attr]
        link = catalog.resolve("magic_link_login:v1", locale="en", channel=Channel.EMAIL).manifest.variable("link")
        assert link is not None and (link.type, link.required, link.sensitive) == ("url", True, True)


class TestVariables:
    @pytest.fixture
    def cat(self) -> TemplateCatalog:
        source = InMemorySource()
        source.add(
            manifest(
                variables=[
                    {"name": "code", "type": "str", "required": True, "sensitive": True},
                    {"name": "ttl", "type": "int", "default": 5},
                    {"name": "ratio", "type": "float"},
                    {"name": "vip", "type": "bool"},
                    {"name": "site", "type": "url"},
                    {"name": "email", "type": "email"},
                    {"name": "day", "type": "date"},
                    {"name": "at", "type": "datetime"},
                    {"name": "total", "type": "money"},
                    {"name": "items", "type": "list"},
                ]
            ),
            {"en": {"sms.txt": "{{ code }} {{ ttl }}"}},
        )
        return TemplateCatalog(source)

    def problems(self, cat: TemplateCatalog, variables: dict[str, Any]) -> dict[str, str]:
        resolved = cat.resolve("welcome", locale="en", channel=Channel.SMS)
        return {p.name: p.message for p in cat.validate_variables(resolved, variables)}

    def test_missing_required(self, cat: TemplateCatalog) -> None:
        assert self.problems(cat, {}) == {"code": "code is required (str)"}
        assert "code" in self.problems(cat, {"code": None})

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("code", 384921),
            ("ttl", True),
            ("ttl", 5.5),
            ("ttl", "five"),
            ("ttl", "5.0"),
            ("ratio", "x"),
            ("ratio", float("nan")),
            ("vip", "true"),
            ("vip", 1),
            ("site", "javascript:alert(1)"),
            ("site", "/relative"),
            ("email", "nobody"),
            ("day", "29/10/2025"),
            ("at", "2025-10-29T20:45:00"),
            ("total", 12.5),
            ("total", {"amount": "1", "currency": "XXY"}),
            ("items", "a,b"),
        ],
    )
    def test_wrong_types_are_errors_naming_the_variable(self, cat: TemplateCatalog, name: str, value: Any) -> None:
        found = self.problems(cat, {"code": "1", name: value})
        assert list(found) == [name]
        assert found[name].startswith(name)

    def test_lossless_conversions_accepted(self, cat: TemplateCatalog) -> None:
        resolved = cat.resolve("welcome", locale="en", channel=Channel.SMS)
        check = cat.check_variables(
            resolved,
            {
                "code": "012345",
                "ttl": "7",
                "ratio": "2.5",
                "site": "https://x.example/a?b=1",
                "day": "2025-10-29",
                "at": "2025-10-29T20:45:00Z",
                "total": {"amount": "12.50", "currency": "GBP"},
            },
        )
        assert check.errors == ()
        assert check.values["ttl"] == 7 and check.values["ratio"] == 2.5
        assert check.values["day"] == date(2025, 10, 29)
        assert check.values["at"] == datetime(2025, 10, 29, 20, 45, tzinfo=UTC)
        assert check.values["total"] == Money(Decimal("12.50"), "GBP")

    def test_defaults_applied(self, cat: TemplateCatalog) -> None:
        resolved = cat.resolve("welcome", locale="en", channel=Channel.SMS)
        assert cat.check_variables(resolved, {"code": "1"}).values["ttl"] == 5
        assert cat.render(resolved, {"code": "1"}, Channel.SMS).text == "1 5"

    def test_unknown_variables_are_warnings(self, cat: TemplateCatalog) -> None:
        resolved = cat.resolve("welcome", locale="en", channel=Channel.SMS)
        assert cat.validate_variables(resolved, {"code": "1", "nickname": "x"}) == []
        problems = cat.validate_variables(resolved, {"code": "1", "nickname": "x"}, include_warnings=True)
        assert [(p.name, p.warning) for p in problems] == [("nickname", True)]
        assert "nickname is not a variable of welcome:v1; it is ignored" in problems[0].message
        assert cat.render(resolved, {"code": "1", "nickname": "x"}, Channel.SMS).text == "1 5"

    def test_render_refuses_invalid_variables(self, cat: TemplateCatalog) -> None:
        resolved = cat.resolve("welcome", locale="en", channel=Channel.SMS)
        with pytest.raises(RenderError, match="ttl must be a whole number") as caught:
            cat.render(resolved, {"code": "1", "ttl": "x"}, Channel.SMS)
        assert caught.value.code == "invalid_variables"


class TestCache:
    def test_warm_render_reads_no_files(self, tmp_path: Path) -> None:
        root = tmp_path / "templates"
        shutil.copytree(TEMPLATES, root)
        cat = TemplateCatalog(root)
        context = RenderContext(tenant="t_001", message_id="msg_1")
        jobs = [
            ("otp_login:v3", Channel.EMAIL),
            ("otp_login:v3", Channel.SMS),
            ("otp_login:v3", Channel.PUSH),
            ("magic_link_login:v2", Channel.EMAIL),
        ]
        first = []
        for ref, channel in jobs:
            resolved = cat.resolve(ref, locale="en-GB", channel=channel)
            first.append(cat.render(resolved, resolved.manifest.examples(), channel, context=context))

        shutil.rmtree(root)  # every template, manifest and partial is gone from disk

        again = []
        for ref, channel in jobs:
            resolved = cat.resolve(ref, locale="en-GB", channel=channel)
            again.append(cat.render(resolved, resolved.manifest.examples(), channel, context=context))
        assert again == first

    def test_cold_catalog_does_read(self, tmp_path: Path) -> None:
        root = tmp_path / "templates"
        shutil.copytree(TEMPLATES, root)
        cat = TemplateCatalog(root)
        resolved = cat.resolve("otp_login:v3", locale="en", channel=Channel.SMS)
        (root / "en" / "otp_login" / "v3" / "sms.txt").unlink()
        with pytest.raises(FileNotFoundError):
            cat.render(resolved, {"code": "1"}, Channel.SMS)
