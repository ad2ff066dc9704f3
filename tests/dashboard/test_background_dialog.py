"""New batch dialog (새 백그라운드 작업): placeholders found as you type, pasted or uploaded items,
the first prompt previewed, presets from the shipped examples, and the API's validation inline
(create stays disabled, nothing stored)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from nicegui import ui
from nicegui.testing import User

from jobsys.batch.examples import EXAMPLES, EXAMPLES_KO
from jobsys.batch.facade import BatchJobs
from nicegui_app.pages import batch_items
from nicegui_app.pages.background_jobs import PATH
from tests.dashboard.pages import login
from tests.dashboard.test_background_api import dump_background
from tests.support.pages import element, text_of, texts
from tests.support.postgres import Db
from tests.support.waiting import wait_until


async def open_dialog(user: User, language: str = "ko") -> None:
    await login(user, PATH, language=language)
    user.find(marker="new-batch").click()
    await user.should_see(marker="batch-template", retries=20)


def create_enabled(user: User) -> bool:
    return bool(element(user, "batch-create").enabled)


def placeholders(user: User) -> list[str]:
    return texts(user, "batch-placeholders")


async def upload(user: User, name: str, content: bytes) -> None:
    await element(user, "batch-upload").handle_uploads([ui.upload.SmallFileUpload(name, "", content)])


async def test_create_with_placeholders_found_and_the_first_prompt_previewed(
    user: User, batch: BatchJobs
) -> None:
    await open_dialog(user)
    assert not create_enabled(user)  # empty form
    assert text_of(user, "batch-error") == ""  # nothing typed: nothing to complain about yet
    user.find(marker="batch-template").type("Reply to {customer}")
    assert placeholders(user) == ["{customer}"]
    user.find(marker="batch-template").type(" about {topic}.")
    assert placeholders(user) == ["{customer}", "{topic}"]  # found live, in order of use

    lines = [{"customer": "Kim", "topic": "a late delivery"}, {"customer": "Lee", "topic": "a refund"}]
    user.find(marker="batch-items").type("\n".join(json.dumps(line) for line in lines))
    assert text_of(user, "batch-preview") == "Reply to Kim about a late delivery."
    assert text_of(user, "batch-item-count") == "항목 2개"
    user.find(marker="batch-title").type("Support replies")
    user.find(marker="batch-concurrency").clear().type("8")
    user.find(marker="batch-system").type("Be polite.")
    assert create_enabled(user) and text_of(user, "batch-error") == ""
    user.find(marker="batch-create").click()
    await user.should_not_see(marker="batch-template", retries=50)  # closed on success

    [job] = (await batch.list_jobs()).jobs
    assert (job.title, job.total_items, job.concurrency, job.payload.system_instruction) == (
        "Support replies",
        2,
        8,
        "Be polite.",
    )
    assert job.payload.template == "Reply to {customer} about {topic}."
    assert [i.input for i in (await batch.job_items(job.id)).items] == lines
    await user.should_see(marker=f"batch-{job.id}", retries=50)  # the list shows it without a reload


async def test_plain_lines_fill_the_only_placeholder(user: User, batch: BatchJobs) -> None:
    await open_dialog(user, language="en")
    user.find(marker="batch-template").type("Summarise:\n{body}")
    user.find(marker="batch-items").type("first note\n\n  second note  \nthird note\n")
    assert text_of(user, "batch-item-count") == "3 items"  # blank lines skipped
    assert text_of(user, "batch-preview") == "Summarise:\nfirst note"
    user.find(marker="batch-create").click()
    await user.should_not_see(marker="batch-template", retries=50)
    [job] = (await batch.list_jobs()).jobs
    assert [i.input for i in (await batch.job_items(job.id)).items] == [
        {"body": "first note"},
        {"body": "second note"},
        {"body": "third note"},
    ]


@pytest.mark.parametrize(("language", "example"), [("ko", e) for e in EXAMPLES_KO] + [("en", e) for e in EXAMPLES],
                         ids=[f"ko-{e.key}" for e in EXAMPLES_KO] + [f"en-{e.key}" for e in EXAMPLES])
async def test_presets_are_the_shipped_examples(user: User, batch: BatchJobs, language: str, example: Any) -> None:
    """A Korean page fills in the Korean examples, an English page the English ones."""
    await open_dialog(user, language=language)
    preset = element(user, "batch-preset")
    assert set(preset.options) == {e.key for e in EXAMPLES}
    preset.value = example.key
    assert element(user, "batch-template").value == example.template
    assert element(user, "batch-system").value == example.system_instruction
    assert placeholders(user) == ["{" + name + "}" for name in dict.fromkeys(_fields(example.template))]
    assert text_of(user, "batch-preview").startswith(example.template.split("{")[0])
    assert text_of(user, "batch-draft-note").startswith(
        "결과는 사람이 검토할 초안입니다" if language == "ko" else "Outputs are drafts")
    assert create_enabled(user)
    user.find(marker="batch-create").click()
    await user.should_not_see(marker="batch-template", retries=50)
    [job] = (await batch.list_jobs()).jobs
    assert [i.input for i in (await batch.job_items(job.id)).items] == [dict(i) for i in example.sample_items]
    assert job.payload.system_instruction == example.system_instruction


def _fields(template: str) -> list[str]:
    from jobsys.batch import template as templates

    return templates.placeholders(template)


async def test_items_from_uploaded_csv_and_jsonl(user: User, batch: BatchJobs, db: Db) -> None:
    await open_dialog(user, language="en")
    user.find(marker="batch-template").type("Translate into {language}: {text}")
    csv_file = '\ufefflanguage,text\nKorean,"Hello, world"\nJapanese,Thanks\n\n'.encode()
    await upload(user, "phrases.csv", csv_file)
    await wait_until(lambda: text_of(user, "batch-item-count") == "2 items", what="items from the CSV")
    assert text_of(user, "batch-file") == "Items from the file phrases.csv"
    assert not element(user, "batch-items").enabled  # the file wins over the paste box
    assert text_of(user, "batch-preview") == "Translate into Korean: Hello, world"
    assert create_enabled(user)

    before = dump_background(db)
    await upload(user, "phrases.xlsx", b"PK\x03\x04")
    await wait_until(lambda: "only CSV" in text_of(user, "batch-error"), what="file type refused")
    assert not create_enabled(user)
    await upload(user, "broken.jsonl", b'{"language": "Korean", "text": "a"}\n{"language": \n')
    await wait_until(lambda: text_of(user, "batch-error").startswith("line 2:"), what="bad JSONL line named")
    assert not create_enabled(user)
    user.find(marker="batch-create").click()  # disabled: does nothing
    assert dump_background(db) == before

    lines = b'{"language": "Korean", "text": "Good morning"}\n"Good night"\n'
    await upload(user, "more.jsonl", lines)
    await wait_until(lambda: text_of(user, "batch-item-count") == "2 items", what="items from the JSONL")
    assert "item 1 has no field language" in text_of(user, "batch-error")  # a bare string is {"text": ...}
    assert not create_enabled(user)
    await upload(
        user, "more.jsonl", lines.replace(b'"Good night"', b'{"language": "Thai", "text": "Good night"}')
    )
    await wait_until(lambda: create_enabled(user), what="a valid file")
    user.find(marker="batch-create").click()
    await user.should_not_see(marker="batch-template", retries=50)
    [job] = (await batch.list_jobs()).jobs
    assert [i.input for i in (await batch.job_items(job.id)).items] == [
        {"language": "Korean", "text": "Good morning"},
        {"language": "Thai", "text": "Good night"},
    ]


async def test_removing_the_file_brings_the_paste_box_back(user: User) -> None:
    await open_dialog(user)
    user.find(marker="batch-template").type("Summarise: {text}")
    user.find(marker="batch-items").type("pasted")
    await upload(user, "notes.jsonl", b'"from the file"\n"second"\n')
    await wait_until(lambda: text_of(user, "batch-item-count") == "항목 2개", what="file items")
    user.find(marker="batch-file-clear").click()
    assert text_of(user, "batch-item-count") == "항목 1개"
    assert element(user, "batch-items").enabled
    assert text_of(user, "batch-preview") == "Summarise: pasted"


async def test_invalid_input_keeps_create_disabled_with_the_reason(user: User, db: Db) -> None:
    await open_dialog(user, language="en")
    before = dump_background(db)
    template, items = user.find(marker="batch-template"), user.find(marker="batch-items")
    template.type("Summarise: {text}")
    items.type("a note")
    assert create_enabled(user)

    def refused(why: str) -> None:
        assert not create_enabled(user), why
        assert why in text_of(user, "batch-error"), (why, text_of(user, "batch-error"))

    template.clear().type("Summarise this")
    refused("template has no {placeholder}")
    assert placeholders(user) == ["none yet: name the item fields as {field}"]
    template.clear().type("Summarise: {text")
    refused("unmatched brace")
    assert texts(user, "batch-placeholders")[0].startswith("template has an unmatched brace")
    template.clear().type("Summarise: {text.__class__}")
    refused("not a plain field name")
    template.clear().type("Reply to {customer} about {text}")
    refused("item 0 has no field customer")
    template.clear().type("Summarise: {text}")
    assert create_enabled(user)

    items.clear().type('{"text": "a", ')
    refused("line 1: starts with '{' but is not a valid JSON object")
    items.clear().type('{"text": {"nested": true}}')
    refused("nested object or list")
    items.clear().type("x" * 20_001)
    refused("larger than 20000 characters")
    items.clear()
    refused("items:")
    assert (
        text_of(user, "batch-preview") == "The first prompt appears here once there is a template and an item"
    )
    items.type("a note")

    for value, why in (("0", "concurrency:"), ("65", "concurrency:"), ("2.5", "concurrency:")):
        user.find(marker="batch-concurrency").clear().type(value)
        refused(why)
    user.find(marker="batch-concurrency").clear().type("5")
    user.find(marker="batch-model").clear().type("gemini 2.5; drop")
    refused("model must be a model name")
    user.find(marker="batch-model").clear().type("gemini-2.5-flash")
    user.find(marker="batch-title").type("t" * 201)
    refused("title")
    user.find(marker="batch-title").clear()
    user.find(marker="batch-system").type("s" * 20_001)
    refused("system_instruction")
    user.find(marker="batch-create").click()  # disabled while invalid: a click does nothing
    user.find(marker="batch-system").clear()
    assert create_enabled(user) and text_of(user, "batch-error") == ""
    user.find(marker="batch-dialog-cancel").click()
    await user.should_not_see(marker="batch-template", retries=50)
    assert dump_background(db) == before


def test_pasted_and_file_items_parse_like_the_cli() -> None:
    assert batch_items.from_pasted("a\n\n b \n", ["review"]) == [{"review": "a"}, {"review": "b"}]
    assert batch_items.from_pasted("a", ["product", "review"]) == [{"text": "a"}]  # then validation names it
    assert batch_items.from_pasted('{"product": "lamp", "review": "ok"}', ["product", "review"]) == [
        {"product": "lamp", "review": "ok"}
    ]
    with pytest.raises(batch_items.ItemsError) as info:
        batch_items.from_pasted('ok\n["a"]\n{"x": ', ["text"])
    assert (info.value.key, info.value.values) == ("items_bad_json", {"line": 3})
    assert batch_items.from_file("x.json", b'[{"text": "a"}, "b"]') == [{"text": "a"}, {"text": "b"}]
    assert batch_items.from_file("x.ndjson", b'{"text": "a"}\r\n\r\n"b"\r\n') == [
        {"text": "a"},
        {"text": "b"},
    ]
    assert batch_items.from_file("X.CSV", b"a,b\n1,\n") == [{"a": "1", "b": ""}]
    for name, data, key in (
        ("x.csv", b"a,b\n1,2,3\n", "items_csv_row"),
        ("x.csv", b",b\n1,2\n", "items_csv_header"),
        ("x.csv", b"a,b\n", "items_file_empty"),
        ("x.jsonl", b"[1, 2]", "items_bad_json"),
        ("x.jsonl", b"\xff\xfe", "items_file_encoding"),
        ("x.txt", b"a", "items_file_type"),
    ):
        with pytest.raises(batch_items.ItemsError) as info:
            batch_items.from_file(name, data)
        assert info.value.key == key, (name, data)
    assert batch_items.as_lines([{"text": "a"}, {"text": "b"}], ["text"]) == "a\nb"
    assert batch_items.as_lines([{"text": "{a}"}], ["text"]) == '{"text": "{a}"}'  # would read back as JSON
