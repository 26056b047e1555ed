"""Rendering: channels' content, shipped templates, Babel formatting, strictness, escaping, text, preview."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from engine.channels import Channel
from engine.delivery import Content
from engine.errors import RenderError
from engine.templating import (
    InMemorySource,
    Manifest,
    Money,
    RenderContext,
    ResolvedTemplate,
    TemplateCatalog,
    html_to_text,
    preview,
    sms_segments,
    verify_link,
    verify_unsubscribe,
)
from engine.templating.sources import FilesystemSource

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
SECRET = "s3cret-for-tests"


@pytest.fixture(scope="module")
def catalog() -> TemplateCatalog:
    return TemplateCatalog(TEMPLATES)


def adhoc(
    parts: dict[str, str],
    *,
    locales: tuple[str, ...] = ("en",),
    variables: list[dict[str, Any]] | None = None,
    channels: tuple[str, ...] = ("email", "sms", "push", "inapp"),
    category: str = "transactional",
    partials: dict[str, dict[str, str]] | None = None,
) -> tuple[TemplateCatalog, dict[str, ResolvedTemplate]]:
    """A catalog over one in-memory template ``t:v1``; returns it and the template resolved per locale."""
    doc = {"category": category, "channels": list(channels), "default_locale": locales[0], "variables": variables or []}
    source = InMemorySource(partials=partials or {})
    source.add(Manifest.from_dict("t", 1, doc), {loc: parts for loc in locales})
    cat = TemplateCatalog(source)
    channel = Channel.EMAIL if "subject.txt" in parts else Channel.SMS
    return cat, {loc: cat.resolve("t", locale=loc, channel=channel) for loc in locales}


def shipped_cases() -> list[tuple[str, int, str, Channel]]:
    """(id, version, locale, channel) for every shipped manifest, declared channel and locale folder."""
    source = FilesystemSource(TEMPLATES)
    cases = []
    for template_id in sorted(p.name for p in (TEMPLATES / "_manifests").iterdir() if p.is_dir()):
        for version in source.versions(template_id):
            locales = sorted(p.parent.parent.name for p in TEMPLATES.glob(f"*/{template_id}/v{version}"))
            for channel in source.manifest(template_id, version).channels:
                cases += [(template_id, version, locale, channel) for locale in locales]
    return cases


class TestShippedTemplates:
    @pytest.mark.parametrize(("template_id", "version", "locale", "channel"), shipped_cases())
    def test_every_declared_channel_and_locale_renders_its_examples(
        self, catalog: TemplateCatalog, template_id: str, version: int, locale: str, channel: Channel
    ) -> None:
        resolved = catalog.resolve(f"{template_id}:v{version}", locale=locale, channel=channel)
        assert resolved.locale_used == locale
        examples = resolved.manifest.examples()
        assert catalog.validate_variables(resolved, examples) == []
        context = RenderContext(tenant="t_001", message_id="msg_1", tracking=True, link_secret=SECRET)
        content = catalog.render(resolved, examples, channel, context=context)
        assert content.text
        for value in examples.values():
            if isinstance(value, str) and not value.endswith("Z"):
                assert value in (content.html or content.text)
        if channel is Channel.EMAIL:
            assert content.subject and "\n" not in content.subject
        if channel is Channel.SMS:
            info = sms_segments(content.text)
            assert (info.encoding, info.segments) == ("GSM-7", 1), content.text
        if channel is Channel.PUSH:
            assert content.title

    def test_inventory(self) -> None:
        cases = shipped_cases()
        for ref in ("otp_login:v1", "otp_login:v2", "otp_login:v3", "magic_link_login:v1", "magic_link_login:v2"):
            template_id, version = ref.split(":v")
            found = {(c[2], c[3]) for c in cases if (c[0], c[1]) == (template_id, int(version))}
            assert {locale for locale, _ in found} == {"en", "en-GB"}, ref
        assert ("otp_login", 3, "en-GB", Channel.PUSH) in cases
        assert not any(c[0] == "magic_link_login" and c[3] is not Channel.EMAIL for c in cases)

    def test_en_gb_differs_from_en(self, catalog: TemplateCatalog) -> None:
        for ref in ("otp_login:v1", "otp_login:v2", "otp_login:v3", "magic_link_login:v1", "magic_link_login:v2"):
            texts = []
            for locale in ("en", "en-GB"):
                resolved = catalog.resolve(ref, locale=locale, channel=Channel.EMAIL)
                texts.append(catalog.render(resolved, resolved.manifest.examples(), Channel.EMAIL).text)
            assert texts[0] != texts[1], ref

    def test_spelling_and_dates_per_locale(self, catalog: TemplateCatalog) -> None:
        def text(locale: str) -> str:
            resolved = catalog.resolve("magic_link_login:v2", locale=locale, channel=Channel.EMAIL)
            return catalog.render(resolved, resolved.manifest.examples(), Channel.EMAIL).text or ""

        assert "personalized" in text("en") and "October 29, 2025" in text("en")
        assert "personalised" in text("en-GB") and "29 October 2025" in text("en-GB")

    def test_versions_are_distinct_emails(self, catalog: TemplateCatalog) -> None:
        subjects = set()
        for version in (1, 2, 3):
            resolved = catalog.resolve(f"otp_login:v{version}", locale="en", channel=Channel.EMAIL)
            subjects.add(catalog.render(resolved, {"code": "384921"}, Channel.EMAIL).subject)
        assert subjects == {
            "Your Herald login code",
            "384921 is your Herald verification code",
            "Your Herald sign-in code",
        }

    def test_text_only_email_has_no_html(self, catalog: TemplateCatalog) -> None:
        resolved = catalog.resolve("otp_login:v1", locale="en", channel=Channel.EMAIL)
        content = catalog.render(resolved, {"code": "384921"}, Channel.EMAIL)
        assert content.html is None
        assert "Your Herald login code is: 384921" in (content.text or "")

    def test_partials_follow_the_locale(self, catalog: TemplateCatalog) -> None:
        for locale, word in (("en", "help center"), ("en-GB", "help centre")):
            resolved = catalog.resolve("otp_login:v2", locale=locale, channel=Channel.EMAIL)
            html = catalog.render(resolved, {"code": "1"}, Channel.EMAIL).html or ""
            assert html.startswith("<!DOCTYPE html>") and f'lang="{locale}"' in html and word in html

    def test_push_and_sms(self, catalog: TemplateCatalog) -> None:
        push = catalog.resolve("otp_login:v3", locale="en-GB", channel=Channel.PUSH)
        assert catalog.render(push, {"code": "384921"}, Channel.PUSH) == Content(
            title="Your Herald sign-in code", text="384921 authorises your sign-in. It stops working in 5 minutes."
        )
        sms = catalog.resolve("otp_login:v1", locale="en", channel=Channel.SMS)
        assert catalog.render(sms, {"code": "384921", "ttl": 10}, Channel.SMS).text == (
            "Your Herald login code is 384921. It expires in 10 minutes."
        )


class TestChannels:
    def test_whatsapp_uses_the_sms_text_and_inapp_markdown(self) -> None:
        cat, resolved = adhoc(
            {"sms.txt": "Hi {{ name }}", "inapp.md": "**Hi** {{ name }}"},
            channels=("sms", "whatsapp", "inapp"),
            variables=[{"name": "name", "required": True}],
        )
        r = resolved["en"]
        assert cat.render(r, {"name": "Ana"}, Channel.WHATSAPP).text == "Hi Ana"
        assert cat.render(r, {"name": "Ana"}, Channel.INAPP).text == "**Hi** Ana"

    def test_subject_is_one_line(self) -> None:
        cat, resolved = adhoc({"subject.txt": "Hello {{ name }}", "body.txt": "x"}, variables=[{"name": "name"}])
        content = cat.render(resolved["en"], {"name": "A\r\nBcc: evil@example.com"}, Channel.EMAIL)
        assert content.subject == "Hello A Bcc: evil@example.com"


class TestStrictness:
    def test_undefined_name_is_a_render_error_naming_it(self) -> None:
        cat, resolved = adhoc({"sms.txt": "Hello {{ nickname }}"}, channels=("sms",))
        with pytest.raises(RenderError, match="nickname") as caught:
            cat.render(resolved["en"], {}, Channel.SMS)
        assert caught.value.code == "undefined_variable"
        assert "t:v1/en/sms.txt" in str(caught.value)

    def test_undefined_attribute_and_loop(self) -> None:
        cat, resolved = adhoc(
            {"sms.txt": "{% for i in items %}{{ i.price }}{% endfor %}"},
            channels=("sms",),
            variables=[{"name": "items", "type": "list"}],
        )
        with pytest.raises(RenderError, match="price"):
            cat.render(resolved["en"], {"items": [{"name": "x"}]}, Channel.SMS)

    def test_optional_variables_need_is_defined(self) -> None:
        cat, resolved = adhoc(
            {"sms.txt": "{% if nick is defined %}Hi {{ nick }}{% else %}Hi{% endif %}"},
            channels=("sms",),
            variables=[{"name": "nick"}],
        )
        assert cat.render(resolved["en"], {}, Channel.SMS).text == "Hi"
        assert cat.render(resolved["en"], {"nick": "Bo"}, Channel.SMS).text == "Hi Bo"

    def test_syntax_error_names_part_and_line(self) -> None:
        cat, resolved = adhoc({"sms.txt": "line one\n{{ oops "}, channels=("sms",))
        with pytest.raises(RenderError, match=r"sms.txt: syntax error on line 2") as caught:
            cat.render(resolved["en"], {}, Channel.SMS)
        assert caught.value.code == "template_syntax"

    def test_error_messages_redact_sensitive_values(self) -> None:
        cat, resolved = adhoc(
            {"sms.txt": "{{ code|int }}{{ code|format_number }}"},
            channels=("sms",),
            variables=[{"name": "code", "required": True, "sensitive": True}],
        )
        with pytest.raises(RenderError) as caught:
            cat.render(resolved["en"], {"code": "99x-secret"}, Channel.SMS)
        assert "99x-secret" not in str(caught.value)

    def test_nothing_half_rendered(self) -> None:
        cat, resolved = adhoc({"subject.txt": "fine", "body.html": "<p>fine</p>", "body.txt": "{{ missing }}"})
        with pytest.raises(RenderError):
            cat.render(resolved["en"], {}, Channel.EMAIL)


class TestEscaping:
    def test_html_parts_autoescape_text_parts_do_not(self) -> None:
        cat, resolved = adhoc(
            {"subject.txt": "Hi {{ name }}", "body.html": "<p>Hi {{ name }}</p>", "body.txt": "Hi {{ name }}"},
            variables=[{"name": "name"}],
        )
        content = cat.render(resolved["en"], {"name": "<script>alert('x')</script> & Co"}, Channel.EMAIL)
        assert content.html == "<p>Hi &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; Co</p>"
        assert content.text == "Hi <script>alert('x')</script> & Co"
        assert content.subject == "Hi <script>alert('x')</script> & Co"

    def test_href_is_escaped(self) -> None:
        cat, resolved = adhoc(
            {"subject.txt": "s", "body.html": '<a href="{{ site }}">go</a>'},
            variables=[{"name": "site", "type": "url"}],
        )
        content = cat.render(resolved["en"], {"site": 'https://x.example/?a=1&b="2"'}, Channel.EMAIL)
        assert content.html == '<a href="https://x.example/?a=1&amp;b=&#34;2&#34;">go</a>'

    def test_bounded_filters_keep_markup(self) -> None:
        template = "{{ name|replace('a', '<b>') }} {{ [name, '<i>']|join(' & ') }} {{ name|indent(2) }}"
        cat, resolved = adhoc({"subject.txt": "s", "body.html": template}, variables=[{"name": "name"}])
        html = cat.render(resolved["en"], {"name": "a<"}, Channel.EMAIL).html
        assert html == "&lt;b&gt;&lt; a&lt; &amp; &lt;i&gt; a&lt;"

    def test_partials_escape_in_html(self) -> None:
        partials = {"en": {"greet.html": "<b>{{ name }}</b>"}}
        cat, resolved = adhoc(
            {"subject.txt": "s", "body.html": '{% include "greet.html" %}'},
            variables=[{"name": "name"}],
            partials=partials,
        )
        assert cat.render(resolved["en"], {"name": "<i>"}, Channel.EMAIL).html == "<b>&lt;i&gt;</b>"

    def test_partial_locale_fallback(self) -> None:
        partials = {"en": {"f.txt": "en footer"}, "en-GB": {"g.txt": "gb only"}}
        cat, resolved = adhoc(
            {"sms.txt": '{% include "f.txt" %} / {% include "g.txt" %}'},
            channels=("sms",),
            locales=("en", "en-GB"),
            partials=partials,
        )
        assert cat.render(resolved["en-GB"], {}, Channel.SMS).text == "en footer / gb only"
        with pytest.raises(RenderError, match=r"partial 'g\.txt' was not found"):
            cat.render(resolved["en"], {}, Channel.SMS)


class TestTextDerivation:
    def test_links_paragraphs_lists(self) -> None:
        html = (
            "<html><head><title>T</title><style>p{color:red}</style></head><body>"
            "<h1>Welcome</h1><p>Hello <b>Ana</b>,<br>read <a href='https://x.example/a?b=1&amp;c=2'>the guide</a>.</p>"
            "<ul><li>one</li><li>two</li></ul><p><a href='https://x.example/raw'>https://x.example/raw</a></p>"
            "<p><a href='mailto:a@b.c'>mail us</a> <img src='x.png' alt='Logo'></p></body></html>"
        )
        assert html_to_text(html) == (
            "Welcome\n\nHello Ana,\nread the guide (https://x.example/a?b=1&c=2).\n\n- one\n- two\n\n"
            "https://x.example/raw\n\nmail us Logo"
        )

    def test_email_without_body_txt_gets_derived_text(self) -> None:
        cat, resolved = adhoc(
            {"subject.txt": "s", "body.html": '<p>Hi</p><p><a href="{{ site }}">Open</a></p>'},
            variables=[{"name": "site", "type": "url"}],
        )
        content = cat.render(resolved["en"], {"site": "https://x.example/p"}, Channel.EMAIL)
        assert content.text == "Hi\n\nOpen (https://x.example/p)"


class TestBabel:
    PARTS = {
        "sms.txt": "{{ day|format_date }} | {{ at|format_datetime('short') }} | {{ n|format_number }} | "
        "{{ total|format_currency }} | {{ 1234.5|format_currency('EUR') }}"
    }
    VARIABLES = [
        {"name": "day", "type": "date"},
        {"name": "at", "type": "datetime"},
        {"name": "n", "type": "float"},
        {"name": "total", "type": "money"},
    ]
    VALUES = {
        "day": "2025-10-29",
        "at": "2025-10-29T20:45:00Z",
        "n": 1234567.891,
        "total": {"amount": "1234.50", "currency": "GBP"},
    }

    def render(self, locale: str, timezone: str = "UTC") -> str:
        cat, resolved = adhoc(self.PARTS, channels=("sms",), locales=(locale,), variables=self.VARIABLES)
        context = RenderContext(timezone=timezone)
        return cat.render(resolved[locale], self.VALUES, Channel.SMS, context=context).text or ""

    def test_en_gb(self) -> None:
        assert self.render("en-GB") == "29 Oct 2025 | 29/10/2025, 20:45 | 1,234,567.891 | £1,234.50 | €1,234.50"

    def test_en_us(self) -> None:
        assert self.render("en-US").replace("\u202f", " ") == (
            "Oct 29, 2025 | 10/29/25, 8:45 PM | 1,234,567.891 | £1,234.50 | €1,234.50"
        )

    def test_de_and_timezone(self) -> None:
        assert self.render("de-DE", timezone="Europe/Berlin") == (
            "29.10.2025 | 29.10.25, 21:45 | 1.234.567,891 | 1.234,50\xa0£ | 1.234,50\xa0€"
        )

    def test_currency_needs_a_currency(self) -> None:
        cat, resolved = adhoc({"sms.txt": "{{ 5|format_currency }}"}, channels=("sms",))
        with pytest.raises(RenderError, match="format_currency needs a currency"):
            cat.render(resolved["en"], {}, Channel.SMS)

    def test_python_values_work_too(self) -> None:
        cat, resolved = adhoc(self.PARTS, channels=("sms",), locales=("en-GB",), variables=self.VARIABLES)
        values = {
            "day": date(2025, 10, 29),
            "at": datetime(2025, 10, 29, 20, 45, tzinfo=UTC),
            "n": 2,
            "total": Money(Decimal("1.5"), "USD"),
        }
        assert cat.render(resolved["en-GB"], values, Channel.SMS).text == (
            "29 Oct 2025 | 29/10/2025, 20:45 | 2 | US$1.50 | €1,234.50"
        )


class TestLinks:
    PARTS = {
        "subject.txt": "s",
        "body.html": "<a href=\"{{ link('https://shop.example/a?x=1&y=2') }}\">A</a> "
        "<a href=\"{{ link('https://shop.example/b') }}\">B</a> "
        '<a href="{{ unsubscribe_url }}">U</a>',
        "body.txt": "{{ link('https://shop.example/b') }}",
    }

    def test_tracked_links_are_signed_tokens(self) -> None:
        cat, resolved = adhoc(self.PARTS, category="marketing")
        context = RenderContext(
            tenant="t_001",
            message_id="msg_9",
            tracking=True,
            link_secret=SECRET,
            base_url="http://127.0.0.1:8000",
            recipient="ana@example.com",
        )
        content = cat.render(resolved["en"], {}, Channel.EMAIL, context=context)
        html = content.html or ""
        tokens = [part.split('"')[0] for part in html.split('href="http://127.0.0.1:8000/l/')[1:]]
        targets = [verify_link(SECRET, t) for t in tokens]
        assert [(t.tenant, t.message_id, t.url, t.index) for t in targets if t] == [
            ("t_001", "msg_9", "https://shop.example/a?x=1&y=2", 0),
            ("t_001", "msg_9", "https://shop.example/b", 1),
        ]
        # The same URL keeps its index in the text part.
        assert verify_link(SECRET, (content.text or "").rsplit("/", 1)[1]).index == 1  # type: ignore[union-attr]
        unsubscribe = html.split('href="http://127.0.0.1:8000/u/')[1].split('"')[0]
        assert verify_unsubscribe(SECRET, unsubscribe) is not None

    def test_untracked_when_tracking_is_off(self) -> None:
        cat, resolved = adhoc(self.PARTS)
        context = RenderContext(tenant="t_001", message_id="msg_9", link_secret=SECRET, recipient="a@b.co")
        html = cat.render(resolved["en"], {}, Channel.EMAIL, context=context).html or ""
        assert 'href="https://shop.example/a?x=1&amp;y=2"' in html

    def test_link_needs_an_http_url(self) -> None:
        cat, resolved = adhoc({"sms.txt": "{{ link('javascript:alert(1)') }}"}, channels=("sms",))
        with pytest.raises(RenderError, match=r"link\(\) needs an absolute http\(s\) URL"):
            cat.render(resolved["en"], {}, Channel.SMS)

    def test_unsubscribe_url_needs_a_recipient(self) -> None:
        cat, resolved = adhoc({"sms.txt": "Stop: {{ unsubscribe_url }}"}, channels=("sms",))
        with pytest.raises(RenderError, match="unsubscribe_url needs the link secret"):
            cat.render(resolved["en"], {}, Channel.SMS, context=RenderContext(tenant="t_001"))


class TestPreview:
    def test_email_preview_of_shipped_template(self, catalog: TemplateCatalog) -> None:
        result = preview(
            catalog,
            "otp_login:v2",
            locale="en-GB",
            channel=Channel.EMAIL,
            variables={"code": "384921", "nickname": "x"},
        )
        assert (result.template_id, result.version, result.locale_used) == ("otp_login", 2, "en-GB")
        assert set(result.parts) == {"subject.txt", "body.html", "body.txt"}
        assert result.text_derived and "384921" in result.parts["body.txt"]
        assert result.variables_used == ("code", "ttl") and result.variables_missing == ()
        assert any("nickname" in w for w in result.warnings)
        assert result.sms is None

    def test_sms_preview_reports_segments_and_missing(self, catalog: TemplateCatalog) -> None:
        result = preview(catalog, "otp_login", locale="en", channel=Channel.SMS, variables={})
        assert result.variables_missing == ("code",)
        assert "384921" in result.parts["sms.txt"]  # the manifest example stands in
        assert result.sms is not None and (result.sms.encoding, result.sms.segments) == ("GSM-7", 1)

    def test_preview_warns_about_untracked_links_and_unused_variables(self) -> None:
        cat, _ = adhoc(
            {
                "subject.txt": "s",
                "body.html": '<a href="https://x.example/raw">r</a> '
                "<a href=\"{{ link('https://x.example/ok') }}\">ok</a>",
            },
            variables=[{"name": "unused", "type": "str"}],
            category="marketing",
        )
        result = preview(cat, "t", locale="en", channel=Channel.EMAIL, variables={"unused": "u"})
        joined = "\n".join(result.warnings)
        assert "https://x.example/raw is not made with link()" in joined
        assert "https://x.example/ok" not in joined
        assert "'unused' is declared but" in joined
        assert "unsubscribe_url" in joined

    def test_preview_flags_undeclared_names(self) -> None:
        cat, _ = adhoc({"sms.txt": "{{ who|default('you') }}"}, channels=("sms",))
        result = preview(cat, "t", locale="en", channel=Channel.SMS, variables={})
        assert result.parts["sms.txt"] == "you"
        assert any("'who', which its manifest does not declare" in w for w in result.warnings)
