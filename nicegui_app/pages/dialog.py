"""What the dialogs share: waiting for a dialog's answer and removing it, and the frame of
the dialogs that create something (new job, new batch).

A create dialog checks its form with the library's own model on every change, so its
create button is enabled exactly when the API would accept the body; the create call's
error is shown inline and the dialog stays open.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Generic, Iterator, TypeVar

from nicegui import ui

from jobsys.errors import JobsysError
from nicegui_app.pages.frame import PageContext
from nicegui_app.server_errors import error_text

SpecT = TypeVar("SpecT")
CreatedT = TypeVar("CreatedT")


async def answer(dialog: ui.dialog) -> Any:
    """Wait until the dialog is submitted or dismissed (None), then remove it."""
    result = await dialog
    if not dialog.is_deleted:  # deleted already when the browser went away
        dialog.delete()
    return result


async def confirm(question: str, dismiss: str, confirm_label: str, marks: tuple[str, str],
                  details: list[str] | None = None) -> bool:
    """Ask once before a destructive or mass action; True when the operator confirmed.
    `details` lists what it affects (job titles), `marks` are the dismiss and confirm buttons'."""
    dismiss_mark, confirm_mark = marks
    with ui.dialog() as dialog, ui.card().classes("max-w-full"):
        ui.label(question).classes("font-medium").mark("confirm-question")
        if details:
            with ui.column().classes("w-full gap-0 text-sm").mark("confirm-details"):
                for line in details:  # cut to the card (a phone's width too), whole on hover
                    detail = ui.label(line).classes("truncate max-w-[min(28rem,100%)]")
                    detail.props["title"] = line
        with ui.row().classes("w-full justify-end"):
            # Focus starts on the harmless answer: Enter does not destroy anything.
            ui.button(dismiss, on_click=lambda: dialog.submit(False)).props("flat autofocus").mark(dismiss_mark)
            ui.button(confirm_label, on_click=lambda: dialog.submit(True)).props("color=negative").mark(
                confirm_mark)
    return bool(await answer(dialog))


FIELDS = (ui.input, ui.number, ui.select)  # ui.textarea is a ui.input


def focus_first_field(container: ui.element) -> None:
    """Mark the container's first field `autofocus`: Quasar focuses it when its dialog opens (without
    one it focuses the dialog itself, and a keyboard user starts by tabbing into the form)."""
    for element in container.descendants():
        if isinstance(element, FIELDS):
            element.props("autofocus")
            return


def whole(value: Any) -> Any:
    """ui.number gives floats; whole ones become ints, anything else stays and fails validation."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def whole_number(label: str, value: int, maximum: int, on_change: Callable[[], None]) -> ui.number:
    """A number field for a whole count from 1 to `maximum`."""
    return ui.number(label, value=value, min=1, max=maximum, step=1, precision=0, on_change=on_change)


class CreateDialog(Generic[SpecT, CreatedT]):
    """A dialog whose form describes one thing to create. The subclass builds the form inside
    `_card()`, ends it with `_footer()`, and says what the form describes (`spec`) and how
    it is created (`_create`)."""

    dialog: ui.dialog
    error: ui.label
    create: ui.button

    def __init__(self, ctx: PageContext, created_type: type[CreatedT]) -> None:
        self.ctx = ctx
        self._created_type = created_type

    @contextlib.contextmanager
    def _card(self, title_key: str, width: str) -> Iterator[None]:
        """The dialog and its card, titled; the form goes inside. The first field takes the focus
        when the dialog opens."""
        title = self.ctx.t(title_key)
        with ui.dialog() as self.dialog, ui.card().classes(f"{width} max-w-full gap-3") as card:
            self.dialog.props["aria-label"] = title
            ui.label(title).classes("text-xl font-semibold").props('role="heading" aria-level="2"')
            yield
        focus_first_field(card)

    def _footer(self, error_mark: str, cancel_mark: str, create_mark: str) -> None:
        """The inline error, then cancel and create."""
        t = self.ctx.t
        self.error = ui.label().classes("text-negative text-sm").mark(error_mark)
        with ui.row().classes("w-full justify-end"):
            ui.button(t("cancel"), on_click=lambda: self.dialog.submit(None)).props("flat").mark(cancel_mark)
            self.create = ui.button(t("create"), on_click=self._submit).mark(create_mark)

    def spec(self) -> SpecT | None:
        """What the form describes, or None while it is not valid."""
        raise NotImplementedError

    async def _create(self, spec: SpecT) -> CreatedT:
        raise NotImplementedError

    async def _submit(self) -> None:
        spec = self.spec()
        if spec is None:
            return
        self.create.disable()  # no double submit while the call runs
        try:
            created = await self._create(spec)
        except JobsysError as exc:
            self.error.set_text(error_text(self.ctx.t, exc))  # in the page language
            self.create.enable()
            return
        self.dialog.submit(created)

    async def run(self) -> CreatedT | None:
        """Open the dialog; what it created, or None when dismissed."""
        result = await answer(self.dialog)
        return result if isinstance(result, self._created_type) else None
