"""Korean throughout (issue 20): batch log lines stored as a code + parameters and shown in the
reader's language (the English text stays as the fallback), server errors mapped by code and
details in both languages (dashboard and API), the simulated device's label, Korean spacing and
one word for the cancel action."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

import httpx

from jobsys.batch.facade import BatchJobs
from jobsys.batch.models import BatchLog, LogLevel
from jobsys.batch.providers.base import CallFailure, Completion, FailureKind, Request
from jobsys.batch.providers.offline import OfflineProvider
from jobsys.errors import IllegalTransition, InvalidInput, NotFound
from nicegui_app.i18n import TEXTS, Translator
from nicegui_app.pages import batch_state
from nicegui_app.pages.device_model import SIM_MODEL, model_text
from nicegui_app.server_errors import describe, error_text
from tests.dashboard.test_background_api import ROOT, TEMPLATE, settle
from tests.support.runners import RunnerPool, wait_final

KO, EN = Translator("ko"), Translator("en")
ITEMS = [{"text": f"note {i}"} for i in range(3)]


def line(message: str, **metadata: Any) -> BatchLog:
    return BatchLog(id=1, level=LogLevel.INFO, message=message, metadata=metadata,
                    created_at=dt.datetime.now(dt.UTC))


def rendered(t: Translator, log: BatchLog) -> str:
    return batch_state.log_text(t, t.has, log)


class FailsOnce(OfflineProvider):
    """The offline provider, but each prompt's first call fails transiently (a 500)."""

    def __init__(self) -> None:
        super().__init__((0.0, 0.0))
        self.seen: set[str] = set()

    async def generate(self, request: Request) -> Completion:
        if request.prompt not in self.seen:
            self.seen.add(request.prompt)
            raise CallFailure(FailureKind.TRANSIENT, "500 INTERNAL: try again")
        return await super().generate(request)


async def test_every_log_line_the_sql_writes_has_a_code_both_languages_render(batch: BatchJobs) -> None:
    job = await batch.create_job(template=TEMPLATE, items=ITEMS, title="notes")
    await settle(batch, job.id, failed=[1])
    await batch.retry_job(job.id)
    await batch.cancel_job(job.id)
    logs = (await batch.job_logs(job.id)).logs
    codes = [log.metadata.get("code") for log in reversed(logs)]  # oldest first
    assert codes == ["created", "started", "item_failed", "finished_completed", "retried", "cancelled"]
    for log in logs:
        for t in (KO, EN):
            assert rendered(t, log) != log.message or t is EN, (log.metadata, rendered(t, log))
    by_code = {log.metadata["code"]: log for log in logs}
    assert rendered(KO, by_code["created"]) == "생성됨: 항목 3개, 모델 gemini-2.5-flash, 제공자 auto, 동시 실행 5"
    assert rendered(KO, by_code["item_failed"]) == "항목 1: 1번 시도 후 실패: 400 INVALID_ARGUMENT: blocked prompt"
    # the error is stored once, in the message: not copied into the line's parameters
    assert by_code["item_failed"].metadata == {"code": "item_failed", "item": 1, "attempts": 1}
    assert rendered(KO, by_code["finished_completed"]) == "완료: 항목 3개 중 2개 성공, 1개 실패"
    assert rendered(KO, by_code["retried"]) == "재시도 1회차: 실패한 항목 1개를 다시 대기열에 넣음"
    assert rendered(KO, by_code["cancelled"]) == "취소됨: 끝나지 않은 항목 1개 취소 (실행 중이던 호출 0개)"
    # The English rendering says what the stored English text says.
    for code in ("created", "item_failed", "finished_completed", "retried", "cancelled"):
        assert rendered(EN, by_code[code]) == by_code[code].message


async def test_a_job_level_failure_and_a_release_are_coded(batch: BatchJobs) -> None:
    failing = await batch.create_job(template=TEMPLATE, items=ITEMS, provider="gemini")
    claimed = await batch.claim_job("old-runner")
    assert claimed is not None
    await batch.finish_job(failing.id, claimed.lease_token, "this job asks for Gemini but GEMINI_API_KEY is not set")
    [failed_line] = [log for log in (await batch.job_logs(failing.id)).logs if log.metadata.get("code") == "job_failed"]
    assert rendered(KO, failed_line) == (
        "작업 실패: this job asks for Gemini but GEMINI_API_KEY is not set. 끝나지 않은 항목 3개를 실패로 처리")

    released = await batch.create_job(template=TEMPLATE, items=ITEMS)
    held = await batch.claim_job("runner-a")
    assert held is not None and held.id == released.id
    await batch.release_job(released.id, held.lease_token, "runner shutting down")
    [release] = [log for log in (await batch.job_logs(released.id)).logs if log.metadata.get("code") == "released"]
    assert rendered(KO, release) == (
        "실행기 runner-a에서 작업을 돌려놓음 (runner shutting down). 끝나지 않은 항목 0개를 다시 대기열에 넣음")


async def test_the_engines_retry_lines_are_coded(batch: BatchJobs, start_runner: RunnerPool) -> None:
    await start_runner(FailsOnce())
    job = await batch.create_job(template=TEMPLATE, items=ITEMS[:1], max_retries=2)
    await wait_final(batch, job.id)
    [retry] = [log for log in (await batch.job_logs(job.id)).logs if log.metadata.get("code") == "item_retry"]
    assert retry.metadata["reason"] == "500 INTERNAL: try again" and retry.metadata["item"] == 0
    assert re.fullmatch(r"항목 0의 1번째 호출 실패 \(500 INTERNAL: try again\)\. [0-9.]+초 후 다시 시도",
                        rendered(KO, retry)), rendered(KO, retry)


def test_log_lines_without_a_known_code_show_the_stored_text() -> None:
    assert rendered(KO, line("an old line")) == "an old line"
    assert rendered(KO, line("future line", code="not_yet_known")) == "future line"
    assert rendered(KO, line("cancelled: 3", code="cancelled")) == "cancelled: 3"  # a parameter missing


def test_an_item_failed_line_reads_its_error_from_the_message() -> None:
    stored = line("item 4 failed after 2 attempt(s): 400 BAD: try 2 attempt(s): again", code="item_failed", item=4,
                  attempts=2)
    assert rendered(KO, stored) == "항목 4: 2번 시도 후 실패: 400 BAD: try 2 attempt(s): again"
    assert rendered(EN, stored) == stored.message
    older = line("item 4 failed after 2 attempt(s): 400 BAD", code="item_failed", item=4, attempts=2, error="400 BAD")
    assert rendered(KO, older) == "항목 4: 2번 시도 후 실패: 400 BAD"  # lines from before keep the error param
    odd = line("something else", code="item_failed", item=4, attempts=2)
    assert rendered(KO, odd) == "something else"  # no error to read: the stored text


# A particle right after a variable (이/가, 을/를, 은/는, 와/과, (으)로) depends on how the value ends.
PARTICLE_AFTER_VARIABLE = re.compile(r"\}(이|가|을|를|은|는|와|과|으로|로)(?![가-힣])")


def test_no_korean_log_line_puts_a_particle_after_a_variable() -> None:
    keys = [key for key in TEXTS["ko"] if key.startswith("logline_")] + ["error_invalid_field"]
    assert [key for key in keys if PARTICLE_AFTER_VARIABLE.search(TEXTS["ko"][key])] == []
    for runner in ("runner-a", "gpu-box-7", "러너"):  # ends in a vowel, a digit, Hangul: reads the same
        started = rendered(KO, line(f"started by runner {runner}", code="started", runner=runner))
        assert started == f"실행기 {runner}에서 시작함"
    resumed = rendered(KO, line("resuming", code="provider_batch_resumed", provider_batch="batches/abc1"))
    assert resumed == "제공자 일괄 처리(batches/abc1)를 이어서 확인함 (다시 제출하지 않음)"


def test_every_log_code_is_translated_in_both_languages() -> None:
    ko = {key for key in TEXTS["ko"] if key.startswith("logline_")}
    en = {key for key in TEXTS["en"] if key.startswith("logline_")}
    assert ko == en and len(ko) >= 15


def test_server_errors_map_by_code_and_details_in_both_languages() -> None:
    background_gone = NotFound("background job not found", {"job_id": str(uuid.uuid4())})
    assert error_text(KO, background_gone) == "백그라운드 작업을 찾을 수 없습니다. 이미 삭제되었을 수 있습니다"
    assert error_text(EN, background_gone) == "Background job not found; it may have been deleted"
    ended = IllegalTransition("cannot cancel a background job that is completed",
                              {"job_id": "x", "status": "completed", "transition": "cancel"})
    assert error_text(KO, ended) == "완료 상태인 작업은 취소할 수 없습니다"
    assert error_text(EN, ended) == "A job that is Completed cannot be cancelled"
    paused = IllegalTransition("cannot pause a job that is cancelled",
                               {"job_id": "x", "status": "cancelled", "transition": "pause"})
    assert error_text(KO, paused) == "취소됨 상태인 작업은 일시정지할 수 없습니다"
    nothing = IllegalTransition("no failed items to retry",
                                {"status": "completed", "transition": "retry", "failed_items": 0})
    assert error_text(KO, nothing) == "다시 시도할 실패 항목이 없습니다"
    bad = InvalidInput("concurrency must be between 1 and 64", {"field": "concurrency"})
    # Korean only: the server's English message stays out of the Korean sentence
    assert error_text(KO, bad) == "동시 실행 수 값이 올바르지 않습니다. 허용되는 범위와 형식을 확인하세요"
    assert error_text(EN, bad) == "Invalid concurrency: concurrency must be between 1 and 64"
    assert describe(KO, "forbidden", "operator role required") == "운영자 권한이 필요합니다"
    assert describe(KO, "unavailable", "connection refused") == "데이터베이스에 연결할 수 없습니다. 잠시 후 다시 시도하세요"
    assert describe(KO, "something_new", "as the server says") == "as the server says"  # the fallback


async def test_api_errors_carry_a_localized_message_for_korean_readers(api: httpx.AsyncClient) -> None:
    missing = f"{ROOT}/{uuid.uuid4()}/cancel"
    english = (await api.post(missing)).json()["error"]
    assert english["code"] == "not_found" and "localized_message" not in english
    korean = (await api.post(missing, headers={"Accept-Language": "ko-KR,ko;q=0.9,en;q=0.8"})).json()["error"]
    assert korean["message"] == english["message"]  # scripts keep the stable English text
    assert korean["localized_message"] == {
        "locale": "ko", "message": "백그라운드 작업을 찾을 수 없습니다. 이미 삭제되었을 수 있습니다"}

    created = (await api.post(ROOT, json={"template": TEMPLATE, "items": ITEMS})).json()
    await api.post(f"{ROOT}/{created['id']}/cancel")
    again = await api.post(f"{ROOT}/{created['id']}/cancel", headers={"Accept-Language": "ko"})
    assert again.status_code == 409
    assert again.json()["error"]["localized_message"]["message"] == "취소됨 상태인 작업은 취소할 수 없습니다"


def test_the_simulated_devices_label_is_translated() -> None:
    from worker.drivers.sim import SIM_MODEL as WORKER_SIM_MODEL

    assert SIM_MODEL == WORKER_SIM_MODEL
    assert model_text(KO, WORKER_SIM_MODEL) == "시뮬레이션 기기"
    assert model_text(EN, WORKER_SIM_MODEL) == "Simulated device"
    assert model_text(KO, "SM-G991N") == "SM-G991N"  # a phone's model as its worker reported it


def test_korean_spacing_and_one_word_for_cancel() -> None:
    spaced = [text for text in TEXTS["ko"].values() if re.search(r"(진행|실행|대기|작업|처리|연결)중", text)]
    assert spaced == []  # 진행 중, 실행 중, 대기 중
    stop = [text for text in TEXTS["ko"].values() if "중지" in text]
    assert stop == []  # the action and its result are both 취소 (취소됨)
