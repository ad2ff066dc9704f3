"""The new-batch dialog (새 백그라운드 작업).

Prompt template with the placeholders it uses (found as you type), items pasted one per
line or uploaded (CSV / JSONL), model, concurrency, optional system instruction and title,
a preview of the first rendered prompt, Gemini's Batch API mode (half price, results within
24 h), an optional response JSON Schema (structured output), the runners' shared rate limits
for the model (read once the dialog is open: list_batch_rate_limits) and an estimate of
tokens and cost (jobsys.batch.pricing's heuristic). The form is checked with the library's own
BatchCreate on every change, so 생성 is enabled exactly when the API would accept the
body (the frame: dialog.py); errors are shown inline. The shipped non-deceptive examples
are presets.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import html
import json
import math
from typing import Any

import pydantic
from nicegui import events, ui

from jobsys.batch import examples, pricing
from jobsys.batch import template as templates
from jobsys.batch.examples import EXAMPLES, Example
from jobsys.batch.models import (
    CONCURRENCY_DEFAULT,
    CONCURRENCY_MAX,
    DEFAULT_MODEL,
    ITEMS_MAX_TOTAL_BYTES,
    BatchCreate,
    BatchJob,
    RateLimit,
)
from jobsys.errors import JobsysError
from nicegui_app.pages import batch_items
from nicegui_app.pages.dialog import CreateDialog, whole, whole_number
from nicegui_app.pages.frame import PageContext

UPLOAD_MAX_BYTES = 2 * ITEMS_MAX_TOTAL_BYTES  # a file's framing (quotes, keys) is not counted by the limit
PREVIEW_MAX_CHARS = 4000  # the preview shows the start of a long prompt
_EXAMPLES = {example.key: example for example in EXAMPLES}


@dataclasses.dataclass(frozen=True)
class FormState:
    placeholders: list[str]
    template_problem: str | None  # the template does not parse: shown where the placeholders go
    items: list[dict[str, Any]]
    spec: BatchCreate | None  # what the API would accept; None while anything is off
    error: str | None  # the first problem; None also while nothing is typed yet


def validation_message(exc: pydantic.ValidationError) -> str:
    """The first problem as the API words it ("concurrency: ..."), without pydantic's prefix."""
    error = exc.errors(include_url=False)[0]
    message = str(error["msg"]).removeprefix("Value error, ")
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {message}" if where else message


def estimate_text(t: Any, estimate: pricing.Estimate) -> str:
    values = {"input": f"{estimate.input_tokens:,}", "output": f"{estimate.output_tokens:,}"}
    if estimate.usd is None:
        return str(t("batch_estimate_unpriced", **values))
    usd = f"${estimate.usd:,.4f}" if estimate.usd < 1 else f"${estimate.usd:,.2f}"
    return str(t("batch_estimate", usd=usd, **values))


def limits_text(t: Any, model: str, limits: list[RateLimit] | None, now: dt.datetime) -> str:
    """The runners' shared limits of this model (one part per provider that has one)."""
    if limits is None:
        return str(t("batch_limits_unknown"))
    parts = []
    mine = [limit for limit in limits if limit.model == model]
    for limit in mine:
        values = ([t("batch_limits_rpm", n=f"{limit.rpm:,}")] if limit.rpm else []) + (
            [t("batch_limits_tpm", n=f"{limit.tpm:,}")] if limit.tpm else [])
        if limit.cooldown_until is not None and limit.cooldown_until > now:
            values.append(t("batch_limits_cooling", s=math.ceil((limit.cooldown_until - now).total_seconds())))
        parts.append((f"{limit.provider}: " if len(mine) > 1 else "") + " · ".join(map(str, values)))
    if not parts:
        return str(t("batch_limits_none"))
    return str(t("batch_limits", model=model, limits="; ".join(parts)))


class NewBatchDialog(CreateDialog[BatchCreate, BatchJob]):
    def __init__(self, ctx: PageContext) -> None:
        super().__init__(ctx, BatchJob)
        self.file_items: list[dict[str, Any]] | None = None  # an uploaded file wins over the paste box
        self.rate_limits: list[RateLimit] | None = []  # None: could not be read
        self.limits_loaded = False  # read after the dialog opens (run)
        self.file_name = ""
        t = ctx.t
        with self._card("new_batch", "w-[52rem]"):
            ui.label(t("batch_draft_note")).classes("text-sm text-gray-600").mark("batch-draft-note")
            self.preset = (
                ui.select(
                    {key: t(f"example_{key}") for key in _EXAMPLES},
                    label=t("batch_preset"),
                    on_change=self._preset_chosen,
                )
                .classes("w-72")
                .mark("batch-preset")
            )
            self.title = (
                ui.input(t("batch_title"), on_change=self._changed).classes("w-full").mark("batch-title")
            )
            self.template = (
                ui.textarea(
                    t("batch_template"), placeholder=t("batch_template_hint"), on_change=self._changed
                )
                .props("autogrow")
                .classes("w-full")
                .mark("batch-template")
            )
            with ui.row().classes("items-center gap-1 min-h-6"):
                ui.label(t("batch_placeholders")).classes("text-sm text-gray-600")
                self.placeholders = ui.row().classes("gap-1").mark("batch-placeholders")
            self.items_text = (
                ui.textarea(t("batch_items"), placeholder=t("batch_items_hint"), on_change=self._changed)
                .props("autogrow")
                .classes("w-full")
                .mark("batch-items")
            )
            with ui.row().classes("w-full items-center gap-2"):
                self.upload = (
                    ui.upload(
                        label=t("batch_upload"),
                        auto_upload=True,
                        max_file_size=UPLOAD_MAX_BYTES,
                        on_upload=self._uploaded,
                        on_rejected=self._rejected,
                    )
                    .props(f"accept={batch_items.FILE_ACCEPT} flat bordered")
                    .classes("w-72")
                    .mark("batch-upload")
                )
                # Quasar's own header gives its pick button no accessible name: the same
                # header, with one (auto_upload needs neither its upload nor its clear button).
                label = html.escape(t("batch_upload"), quote=True)
                self.upload.add_slot("header", f'''
                    <div class="q-uploader__header-content row items-center no-wrap q-pa-sm">
                      <div class="col q-uploader__title">{label}</div>
                      <q-btn v-if="props.canAddFiles" type="a" icon="add_box" round dense flat
                             aria-label="{label}" @click="props.pickFiles"><q-uploader-add-trigger /></q-btn>
                    </div>''')
                with ui.column().classes("gap-1"):
                    self.file_label = ui.label().classes("text-sm").mark("batch-file")
                    self.file_clear = (
                        ui.button(t("batch_file_clear"), icon="close", on_click=self._clear_file)
                        .props("flat dense")
                        .mark("batch-file-clear")
                    )
                    self.item_count = ui.label().classes("text-sm text-gray-600").mark("batch-item-count")
            with ui.row().classes("w-full gap-4"):
                self.model = (
                    ui.input(t("batch_model"), value=DEFAULT_MODEL, on_change=self._changed)
                    .classes("w-64")
                    .mark("batch-model")
                )
                self.concurrency = (
                    whole_number(t("batch_concurrency"), CONCURRENCY_DEFAULT, CONCURRENCY_MAX, self._changed)
                    .classes("w-40")
                    .mark("batch-concurrency")
                )
            self.limits = ui.label().classes("text-sm text-gray-600").mark("batch-rate-limits")
            with self.limits:
                ui.tooltip(t("batch_limits_hint"))
            self.batch_api = (
                ui.checkbox(t("batch_mode_batch_api"), on_change=self._changed)
                .tooltip(t("batch_mode_batch_api_hint"))
                .mark("batch-mode-batch-api")
            )
            self.system = (
                ui.textarea(t("batch_system"), on_change=self._changed)
                .props("autogrow")
                .classes("w-full")
                .mark("batch-system")
            )
            self.schema = (
                ui.textarea(t("batch_response_schema"), placeholder=t("batch_response_schema_hint"),
                            on_change=self._changed)
                .props("autogrow")
                .classes("w-full font-mono")
                .mark("batch-response-schema")
            )
            ui.label(t("batch_preview")).classes("text-sm text-gray-600")
            self.preview = (
                ui.label()
                .classes("w-full whitespace-pre-wrap font-mono text-sm bg-gray-100 rounded p-2")
                .mark("batch-preview")
            )
            self.estimate = ui.label().classes("text-sm text-gray-700").mark("batch-estimate")
            with self.estimate:
                ui.tooltip(t("batch_estimate_hint"))
            self._footer("batch-error", "batch-dialog-cancel", "batch-create")
        self._changed()

    # Form state ---------------------------------------------------------------------------
    def read(self) -> FormState:
        """Everything the form says, parsed once per change."""
        t = self.ctx.t
        try:
            placeholders, template_problem = templates.placeholders(self.template.value or ""), None
        except ValueError as exc:
            placeholders, template_problem = [], str(exc)
        try:
            items = (
                self.file_items
                if self.file_items is not None
                else batch_items.from_pasted(self.items_text.value or "", placeholders)
            )
        except batch_items.ItemsError as exc:
            return FormState(placeholders, template_problem, [], None, t(exc.key, **exc.values))
        schema_text = (self.schema.value or "").strip()
        try:
            schema = json.loads(schema_text) if schema_text else None
        except ValueError as exc:
            return FormState(placeholders, template_problem, items, None,
                             f"response_schema: {t('batch_response_schema_not_json')} ({exc})")
        try:
            spec = BatchCreate.model_validate(
                {
                    "template": self.template.value or "",
                    "items": items,
                    "model": (self.model.value or "").strip(),
                    "title": self.title.value or None,
                    "system_instruction": self.system.value or None,
                    "concurrency": whole(self.concurrency.value),
                    "response_schema": schema,
                    # the Batch API is Gemini's: the mode names the provider
                    **({"mode": "batch_api", "provider": "gemini"} if self.batch_api.value else {}),
                }
            )
        except pydantic.ValidationError as exc:
            untouched = not (self.template.value or "").strip() and not items
            return FormState(
                placeholders, template_problem, items, None, None if untouched else validation_message(exc)
            )
        return FormState(placeholders, template_problem, items, spec, None)

    def spec(self) -> BatchCreate | None:
        return self.read().spec

    def _preview(self, form: FormState) -> str:
        """The first item's prompt, shown as soon as it renders (even while other fields are off)."""
        if not form.placeholders or not form.items:
            return ""
        try:
            text = templates.render(self.template.value or "", form.items[0])
        except (KeyError, ValueError):
            return ""
        return text if len(text) <= PREVIEW_MAX_CHARS else text[:PREVIEW_MAX_CHARS] + "…"

    def _show_placeholders(self, form: FormState) -> None:
        self.placeholders.clear()
        with self.placeholders:
            if form.template_problem:
                ui.label(form.template_problem).classes("text-negative text-sm")
            elif not form.placeholders:
                ui.label(self.ctx.t("batch_no_placeholders")).classes("text-sm text-gray-500")
            for name in form.placeholders:
                ui.badge("{" + name + "}", color="primary").props("outline").mark(f"placeholder-{name}")

    def _changed(self) -> None:
        t = self.ctx.t
        form = self.read()
        self._show_placeholders(form)
        from_file = self.file_items is not None
        self.items_text.set_enabled(not from_file)
        self.file_label.set_text(t("batch_file", name=self.file_name) if from_file else "")
        self.file_clear.set_visibility(from_file)
        self.item_count.set_text(t("batch_item_count", n=len(form.items)))
        self.preview.set_text(self._preview(form) or t("batch_preview_empty"))
        self.error.set_text(form.error or "")
        self.create.set_enabled(form.spec is not None)
        self._show_limits()
        self.estimate.set_visibility(form.spec is not None)
        if form.spec is not None:
            self.estimate.set_text(estimate_text(t, pricing.estimate(form.spec)))

    def _show_limits(self) -> None:
        t = self.ctx.t
        if not self.limits_loaded:  # blank until read, rather than "no limit known"
            self.limits.set_text("")
            return
        text = limits_text(t, (self.model.value or "").strip(), self.rate_limits, dt.datetime.now(dt.UTC))
        if self.batch_api.value:  # the Batch API has quotas of its own
            text = f"{text} ({t('batch_limits_batch_api')})"
        self.limits.set_text(text)

    async def _load_limits(self) -> None:
        try:
            self.rate_limits = await self.ctx.services.batch.rate_limits()
        except JobsysError:
            self.rate_limits = None  # said so in the dialog; creating a batch does not need them
        self.limits_loaded = True
        if not self.dialog.is_deleted:  # closed meanwhile (or the browser went away)
            self._show_limits()

    async def run(self) -> BatchJob | None:
        # The dialog opens at once and the limits fill in when read: a slow database must not
        # make the button look dead (creating a batch does not need them).
        loading = asyncio.create_task(self._load_limits(), name="new-batch-limits")
        try:
            return await super().run()
        finally:
            loading.cancel()  # dismissed before the limits came: nothing left to show them in

    # Presets and files --------------------------------------------------------------------
    def _preset_chosen(self) -> None:
        example: Example | None = examples.by_key(self.ctx.t.language).get(self.preset.value or "")  # in the page language
        if example is None:
            return
        self.file_items, self.file_name = None, ""
        self.template.value = example.template
        self.system.value = example.system_instruction
        self.items_text.value = batch_items.as_lines(
            [dict(item) for item in example.sample_items], templates.placeholders(example.template)
        )
        self._changed()

    async def _uploaded(self, event: events.UploadEventArguments) -> None:
        self.upload.reset()  # ready for another file
        try:
            items = batch_items.from_file(event.file.name, await event.file.read())
        except batch_items.ItemsError as exc:
            self.file_items, self.file_name = None, ""
            self._changed()
            self.error.set_text(self.ctx.t(exc.key, **exc.values))
            self.create.disable()
            return
        self.file_items, self.file_name = items, event.file.name
        self._changed()

    def _rejected(self) -> None:
        self.error.set_text(self.ctx.t("items_file_too_large", mb=UPLOAD_MAX_BYTES // 1_000_000))

    def _clear_file(self) -> None:
        self.file_items, self.file_name = None, ""
        self._changed()

    # Submit ---------------------------------------------------------------------------------
    async def _create(self, spec: BatchCreate) -> BatchJob:
        return await self.ctx.services.batch.create_job(spec)
