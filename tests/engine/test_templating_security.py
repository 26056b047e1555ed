"""The sandbox: SSTI payloads, resource bombs, the streamed output cap and the time limit."""

from __future__ import annotations

import time

import pytest

from engine.channels import Channel
from engine.errors import RenderError
from engine.templating import PREVIEW_LIMITS, InMemorySource, Manifest, RenderLimits, TemplateCatalog, preview

MANIFEST = Manifest.from_dict("t", 1, {"channels": ["sms", "email"], "variables": [{"name": "x"}]})


def render(template: str, *, x: str = "abc", limits: RenderLimits | None = None, html: bool = False) -> str:
    source = InMemorySource()
    parts = {"subject.txt": "s", "body.html": template} if html else {"sms.txt": template}
    source.add(MANIFEST, {"en": parts})
    catalog = TemplateCatalog(source, limits=limits)
    channel = Channel.EMAIL if html else Channel.SMS
    resolved = catalog.resolve("t", locale="en", channel=channel)
    content = catalog.render(resolved, {"x": x}, channel)
    return (content.html if html else content.text) or ""


#: Classic server-side template injection payloads against Jinja2.
SSTI = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__.__base__.__subclasses__()[40]('/etc/passwd').read() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ joiner.__init__.__globals__.os.popen('id').read() }}",
    "{{ namespace.__init__.__globals__.os.popen('id').read() }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ self.__init__.__globals__.__builtins__ }}",
    "{{ self._TemplateReference__context.cycler }}",
    "{{ config.__class__.__init__.__globals__['os'] }}",
    "{{ request.application.__globals__.__builtins__ }}",
    "{{ ''|attr('__class__') }}",
    "{{ ''|attr('_'~'_class__')|attr('_'~'_mro__') }}",
    "{{ ''|attr('\\x5f\\x5fclass\\x5f\\x5f') }}",
    "{{ ''['__class__'] }}",
    "{{ ''['_' ~ '_class__'] }}",
    "{{ x|attr(x) }}",
    "{{ ''[x] }}",
    "{{ '{0.__class__.__mro__}'.format(x) }}",
    "{{ '{0.__class__}'.format_map({'0': x}) }}",
    "{{ ''|attr('format') }}",
    "{{ '%s'|format(x) }}",
    "{{ '%(a)s' % {'a': x} }}",
    "{{ x.__class__ is defined }}",
    "{% if x.__class__ %}leak{% endif %}",
    "{{ range.__globals__ }}",
    "{{ link.__globals__ }}",
    "{{ dict.mro() }}",
    "{{ (1).__class__.__base__ }}",
    "{{ x.__len__() }}",
    "{% set d = {} %}{{ d.update({'a': 1}) }}",
    "{% include '../../../etc/passwd' %}",
    "{% import '/etc/passwd' as p %}",
]


class TestSsti:
    @pytest.mark.parametrize("payload", SSTI)
    def test_payload_fails_with_a_clear_render_error(self, payload: str) -> None:
        x = "__class__" if "(x)" in payload or "[x]" in payload else "abc"
        with pytest.raises(RenderError) as caught:
            render(payload, x=x)
        assert caught.value.code in {"unsafe_template", "template_syntax"}
        assert "t:v1/en/sms.txt" in str(caught.value)

    def test_compile_time_refusal_names_the_line(self) -> None:
        with pytest.raises(RenderError, match=r"attribute '__class__' is not allowed in templates \(line 3\)"):
            render("a\nb\n{{ x.__class__ }}")

    def test_dynamic_attribute_refused_at_run_time(self) -> None:
        with pytest.raises(RenderError, match=r"access to str.__class__ is not allowed"):
            render("{{ x|attr(x) }}", x="__class__")

    def test_ordinary_templates_still_work(self) -> None:
        template = (
            "{% for w in x.split(',') %}{{ loop.index }}={{ w|upper }}{% if not loop.last %}; {% endif %}{% endfor %}"
            " {{ {'a': 1}.items()|list }} {{ [3, 1, 2]|sort|join('') }} {{ x|replace(',', '+') }} {{ 2 ** 10 }}"
        )
        assert render(template, x="a,b") == "1=A; 2=B [('a', 1)] 123 a+b 1024"


class TestResourceLimits:
    @pytest.mark.parametrize(
        "payload",
        [
            "{{ 'x' * 1000000000 }}",
            "{{ [1] * 1000000000 }}",
            "{{ 10 ** (10 ** 10) }}",
            "{{ 'a'.ljust(999999999) }}",
            "{{ 'a'|center(999999999) }}",
            "{{ [1]|slice(1000000000)|list }}",
            "{{ x|replace('', 'y' * 100000) }}",
            "{{ range(10)|join('y' * 100000) }}",
            "{% macro f(s) %}{{ f(s ~ s) }}{% endmacro %}{{ f('x') }}",
            "{{ ([[1]] * 1000)|sum(start=[]) }}",
            # squared again and again: each step doubles the digits, and one multiplication is not
            # interruptible, so only a cap on the numbers themselves stops it
            "{% set a = 2 ** 2000 %}" + "{% set a = a * a %}" * 18 + "{{ a % 10 }}",
            "{% set a = 3 %}" + "{% set a = a * a %}" * 30 + "{{ a % 10 }}",
            "{{ ([2 ** 4000] * 100)|sum }}",
        ],
    )
    def test_bombs_are_refused_up_front(self, payload: str) -> None:
        started = time.monotonic()
        with pytest.raises(RenderError) as caught:
            render(payload)
        assert caught.value.code in {"unsafe_template", "render_budget"}
        assert time.monotonic() - started < 1

    def test_a_huge_number_given_as_a_variable_cannot_be_squared_up(self) -> None:
        source = InMemorySource()
        chain = "{% set a = x %}" + "{% set a = a * a %}" * 16 + "{{ a % 10 }}"
        manifest = Manifest.from_dict("t", 1, {"channels": ["sms"], "variables": [{"name": "x", "type": "int"}]})
        source.add(manifest, {"en": {"sms.txt": chain}})
        catalog = TemplateCatalog(source)
        resolved = catalog.resolve("t", locale="en", channel=Channel.SMS)
        started = time.monotonic()
        with pytest.raises(RenderError) as caught:
            catalog.render(resolved, {"x": int("9" * 4000)}, Channel.SMS)
        assert caught.value.code == "unsafe_template"
        assert time.monotonic() - started < 1
        assert catalog.render(resolved, {"x": 1}, Channel.SMS).text == "1"  # small numbers still compute

    def test_output_cap_stops_the_stream(self) -> None:
        limits = RenderLimits(max_output_chars=1000, time_limit_s=None, max_steps=None)
        assert len(render("{% for i in range(100) %}0123456789{% endfor %}", limits=limits)) == 1000
        started = time.monotonic()
        with pytest.raises(RenderError, match="passed its 1000 character cap") as caught:
            render("{% for i in range(10**9) %}0123456789{% endfor %}", limits=limits)
        assert caught.value.code == "output_too_large"
        assert time.monotonic() - started < 1  # stopped at the cap, not after producing 10 GB

    def test_time_limit_stops_a_runaway_loop(self) -> None:
        limits = RenderLimits(time_limit_s=0.2, max_steps=None)
        started = time.monotonic()
        with pytest.raises(RenderError, match=r"longer than its 0.2s time limit") as caught:
            render("{% for i in range(10**9) %}{% endfor %}", limits=limits)
        assert caught.value.code == "render_timeout"
        assert time.monotonic() - started < 1.5

    def test_time_limit_stops_recursion_without_loops(self) -> None:
        limits = RenderLimits(time_limit_s=0.2, max_steps=None)
        payload = "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}"
        started = time.monotonic()
        with pytest.raises(RenderError, match="time limit"):
            render(payload, limits=limits)
        assert time.monotonic() - started < 1.5

    def test_default_limits_stop_a_runaway_loop_quickly(self) -> None:
        started = time.monotonic()
        with pytest.raises(RenderError) as caught:
            render("{% for a in range(10**9) %}{% for b in range(10**9) %}{% endfor %}{% endfor %}")
        assert caught.value.code in {"render_budget", "render_timeout"}
        assert time.monotonic() - started < 2

    def test_step_budget(self) -> None:
        limits = RenderLimits(max_steps=1000, time_limit_s=None)
        assert render("{% for i in range(900) %}{% endfor %}ok", limits=limits) == "ok"
        with pytest.raises(RenderError, match="more than 1000 loop iterations and calls"):
            render("{% for i in range(1100) %}{% endfor %}", limits=limits)

    def test_deep_recursion_is_a_render_error(self) -> None:
        with pytest.raises(RenderError) as caught:
            render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}")
        assert caught.value.code == "render_budget"

    def test_cap_applies_to_html_too(self) -> None:
        limits = RenderLimits(max_output_chars=100)
        with pytest.raises(RenderError, match="character cap"):
            render("<p>{% for i in range(50) %}<b>{{ x }}</b>{% endfor %}</p>", limits=limits, html=True)


class TestPublishChecks:
    def test_compile_refuses_payloads_before_any_render(self) -> None:
        source = InMemorySource()
        source.add(MANIFEST, {"en": {"sms.txt": "{{ cycler.__init__.__globals__ }}"}})
        catalog = TemplateCatalog(source)
        resolved = catalog.resolve("t", locale="en", channel=Channel.SMS)
        with pytest.raises(RenderError, match="not allowed in templates") as caught:
            catalog.compile(resolved, Channel.SMS)
        assert caught.value.code == "unsafe_template"

    def test_preview_runs_under_preview_limits(self) -> None:
        source = InMemorySource()
        source.add(MANIFEST, {"en": {"sms.txt": "{% for i in range(10**9) %}{% endfor %}"}})
        started = time.monotonic()
        with pytest.raises(RenderError) as caught:
            preview(TemplateCatalog(source), "t", locale="en", channel=Channel.SMS, variables={})
        assert caught.value.code in {"render_budget", "render_timeout"}
        assert time.monotonic() - started < PREVIEW_LIMITS.time_limit_s + 1  # type: ignore[operator]
