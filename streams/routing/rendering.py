"""Template rendering: Jinja2 in a sandbox with StrictUndefined, one template set per channel and locale.

Layout: `<templates_dir>/<template>/<channel>/<part>[.<locale>].j2`, e.g. `order_shipped/email/subject.fr.j2`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2.runtime import new_context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from kernel.control_chars import strip_controls
from kernel.errors import TemplateFailure
from schemas.channels import Channel
from schemas.rules import Rule
from streams.routing.formatting import context_filters

# Which parts each channel's template set holds; the optional ones may be absent.
REQUIRED_PARTS: dict[Channel, tuple[str, ...]] = {
    Channel.INAPP: ("title", "body"),
    Channel.EMAIL: ("subject", "text"),
    Channel.PUSH: ("title", "body"),
    Channel.SMS: ("text",),
}
OPTIONAL_PARTS: dict[Channel, tuple[str, ...]] = {
    Channel.INAPP: ("action_url",),
    Channel.EMAIL: ("html",),
    Channel.PUSH: (),
    Channel.SMS: (),
}
# Every rendered part loses control and bidi-override characters (event data could carry escape sequences
# or reorder the text). Bodies keep newlines and tabs; an SMS keeps newlines only (a tab is not GSM-7, and
# would double the segments); a one-line part (title, subject, URL) keeps neither.
KEPT_CONTROLS: dict[str, str] = {"body": "\n\t", "text": "\n\t", "html": "\n\t"}
SMS_KEPT_CONTROLS = "\n"


def locale_chain(locale: str) -> list[str]:
    """`fr-CA` → [`fr-CA`, `fr`, ``]: the most specific template first, the default last."""
    normalized = locale.replace("_", "-")
    chain: list[str] = []
    parts = normalized.split("-")
    for i in range(len(parts), 0, -1):
        chain.append("-".join(parts[:i]))
    chain.append("")
    return chain


@dataclass(frozen=True)
class RenderedParts:
    parts: Mapping[str, str]

    def __getitem__(self, name: str) -> str:
        return self.parts[name]

    def get(self, name: str) -> str | None:
        return self.parts.get(name)


def _is_html_part(name: str) -> bool:
    # Only HTML parts are escaped: a subject or SMS text with "&amp;" in it would be wrong.
    return name.rsplit("/", 1)[-1].startswith("html")


class TemplateStore:
    """Loads and renders template sets. Data from events reaches templates only as values, never as
    template source, and the sandbox refuses attribute access to internals, so event data cannot run code."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._names: dict[tuple[str, Channel, str, str], str | None] = {}
        self._compiled: dict[str, tuple[jinja2.Template, dict[str, Any]]] = {}
        self._plans: dict[tuple[str, Channel, str], tuple[tuple[str, str, str], ...]] = {}
        # Two environments, each escaping or not, rather than one whose `autoescape` is a function of the
        # template name: Jinja calls that function on every render.
        self._plain = self._environment(root, autoescape=False)
        self._html = self._environment(root, autoescape=True)

    @staticmethod
    def _environment(root: Path, *, autoescape: bool) -> ImmutableSandboxedEnvironment:
        env = ImmutableSandboxedEnvironment(
            loader=jinja2.FileSystemLoader(str(root)),
            undefined=jinja2.StrictUndefined,
            autoescape=autoescape,
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
        )
        # Dates, numbers and currencies in the recipient's locale and timezone (read from the context).
        env.filters.update(context_filters())
        return env

    def _source_name(self, template: str, channel: Channel, part: str, locale: str) -> str | None:
        # Cached: the directory is read once per (template, channel, part, locale), not on every render.
        key = (template, channel, part, locale)
        if key not in self._names:
            self._names[key] = self._find(template, channel, part, locale)
        return self._names[key]

    def _find(self, template: str, channel: Channel, part: str, locale: str) -> str | None:
        for candidate in locale_chain(locale):
            suffix = f".{candidate}" if candidate else ""
            name = f"{template}/{channel.value}/{part}{suffix}.j2"
            if (self._root / name).is_file():
                return name
        return None

    def _render(self, name: str, context: Mapping[str, Any]) -> str:
        """`Template.render`, without its per-call cost: Jinja merges the environment's globals (a ChainMap,
        walked key by key) into every render's context and lists their names again for each context, about a
        fifth of a routed event's CPU. Here they are made a plain dict once per template, the context is laid
        over them, and the context object is built from that dict as it is (`shared=True`)."""
        compiled = self._compiled.get(name)
        if compiled is None:
            store = self._html if _is_html_part(name) else self._plain
            template = store.get_template(name)
            compiled = self._compiled[name] = (template, dict(template.globals))
        template, globals_ = compiled
        env, variables = template.environment, {**globals_, **context}
        ctx = new_context(env, name, template.blocks, variables, shared=True, globals=globals_)
        return str(env.concat(template.root_render_func(ctx)))

    def missing_parts(self, template: str, channel: Channel) -> list[str]:
        """Required parts with no default-locale file: checked at start-up so a typo fails early."""
        return [p for p in REQUIRED_PARTS[channel] if self._source_name(template, channel, p, "") is None]

    def _parts(self, template: str, channel: Channel, locale: str) -> tuple[tuple[str, str, str], ...]:
        """(part, template file, control characters kept) of each part there is: found once per template,
        channel and locale, not on every render."""
        key = (template, channel, locale)
        parts = self._plans.get(key)
        if parts is None:
            found = []
            for part in REQUIRED_PARTS[channel] + OPTIONAL_PARTS[channel]:
                name = self._source_name(template, channel, part, locale)
                if name is None:
                    if part in REQUIRED_PARTS[channel]:
                        raise TemplateFailure(f"template {template!r} has no {channel.value}/{part}.j2")
                    continue
                keep = SMS_KEPT_CONTROLS if channel is Channel.SMS else KEPT_CONTROLS.get(part, "")
                found.append((part, name, keep))
            parts = self._plans[key] = tuple(found)
        return parts

    def render(
        self, template: str, channel: Channel, locale: str, context: Mapping[str, Any]
    ) -> RenderedParts:
        rendered: dict[str, str] = {}
        for part, name, keep in self._parts(template, channel, locale):
            try:
                rendered[part] = strip_controls(self._render(name, context), keep=keep).strip()
            except jinja2.exceptions.SecurityError as exc:
                raise TemplateFailure(f"{name}: refused by the sandbox: {exc}") from exc
            except jinja2.UndefinedError as exc:
                raise TemplateFailure(f"{name}: {exc.message}") from exc
            except jinja2.TemplateError as exc:
                raise TemplateFailure(f"{name}: {exc}") from exc
        return RenderedParts(rendered)


def check_templates(rules: Iterable[Rule], templates: TemplateStore) -> None:
    """Every template a rule names exists for each of its channels; raises ValueError naming the first gap."""
    for rule in rules:
        for channel, route in rule.channels.items():
            missing = templates.missing_parts(route.template, channel)
            if missing:
                files = ", ".join(f"{route.template}/{channel.value}/{part}.j2" for part in missing)
                raise ValueError(
                    f"rule {rule.match!r} needs template {route.template!r}, but there is no {files}"
                )
