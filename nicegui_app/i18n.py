"""Dashboard labels in Korean and English, and the choice between them.

Each page builds one `Translator` for the language of its request and hands it to its
components, so background refreshes need no request context to pick a language.
"""

from __future__ import annotations

from typing import Any

LANGUAGES: dict[str, str] = {"ko": "한국어", "en": "English"}
FALLBACK_LANGUAGE = "en"  # for a browser that asks for neither language

TEXTS: dict[str, dict[str, str]] = {
    "ko": {
        "app_title": "jobsys",
        "nav_jobs": "작업 관리",
        "nav_devices": "기기",
        "connected": "연결된 기기 {n}대",
        "live": "실시간",
        "live_down": "실시간 연결 끊김",
        "logout": "로그아웃",
        "login_title": "로그인",
        "token": "API 토큰",
        "login": "로그인",
        "login_wrong": "토큰이 올바르지 않습니다",
        "summary_total": "총 작업",
        "summary_active": "진행중",
        "summary_paused": "일시정지",
        "summary_completed": "완료",
        "filter_status": "상태",
        "filter_all": "전체",
        "search": "검색",
        "status_active": "진행중",
        "status_paused": "일시정지",
        "status_completed": "완료",
        "status_cancelled": "취소됨",
        "progress": "{done}/{target}대 ({pct}%)",
        "count_completed": "완료 {n}",
        "count_running": "실행중 {n}",
        "count_failed": "실패 {n}",
        "pause": "일시정지",
        "resume": "재개",
        "delete": "삭제",
        "confirm_delete": "'{title}' 작업과 기기 할당을 모두 삭제할까요?",
        "cancel": "취소",
        "per_device": "기기별 상태",
        "no_assignments": "할당된 기기가 없습니다",
        "no_jobs": "작업이 없습니다",
        "more_jobs": "더 보기",
        "new_job": "새 작업 생성",
        "url": "URL",
        "url_invalid": "http:// 또는 https:// 로 시작하는 올바른 URL을 입력하세요",
        "title": "제목 (URL에서 자동 입력)",
        "duration": "표시 시간 (초)",
        "duration_invalid": "1~86400초",
        "target": "대상",
        "target_all_devices": "모든 기기",
        "target_percentage": "백분율",
        "target_device_count": "기기 수",
        "percentage_value": "백분율 (%)",
        "count_value": "기기 수 (대)",
        "hint_all": "연결된 모든 기기: {n}대",
        "hint_percentage": "예상 기기 수: {n}대 (연결된 {total}대 중)",
        "hint_device_count": "요청 {n}대 (연결된 기기 {total}대)",
        "create": "생성",
        "created": "작업을 생성했습니다: {assigned}대에 할당",
        "deleted": "작업을 삭제했습니다",
        "devices_title": "기기",
        "worker": "워커 {name}",
        "no_worker": "워커 없음",
        "no_devices": "등록된 기기가 없습니다",
        "device_idle": "대기",
        "device_busy": "작업중",
        "device_offline": "오프라인",
        "device_error": "오류",
        "device_disabled": "비활성",
        "current_job": "현재 작업: {job}",
        "last_heartbeat": "마지막 응답: {at}",
        "simulated": "시뮬레이션",
        "assignment_pending": "대기중",
        "assignment_paused": "일시정지",
        "assignment_running": "실행중",
        "assignment_completed": "완료",
        "assignment_failed": "실패",
        "assignment_cancelled": "취소됨",
        "attempt": "시도 {n}",
    },
    "en": {
        "app_title": "jobsys",
        "nav_jobs": "Jobs",
        "nav_devices": "Devices",
        "connected": "{n} devices connected",
        "live": "Live",
        "live_down": "Live updates paused",
        "logout": "Log out",
        "login_title": "Log in",
        "token": "API token",
        "login": "Log in",
        "login_wrong": "Wrong token",
        "summary_total": "Total jobs",
        "summary_active": "Active",
        "summary_paused": "Paused",
        "summary_completed": "Completed",
        "filter_status": "Status",
        "filter_all": "All",
        "search": "Search",
        "status_active": "Active",
        "status_paused": "Paused",
        "status_completed": "Completed",
        "status_cancelled": "Cancelled",
        "progress": "{done}/{target} devices ({pct}%)",
        "count_completed": "Completed {n}",
        "count_running": "Running {n}",
        "count_failed": "Failed {n}",
        "pause": "Pause",
        "resume": "Resume",
        "delete": "Delete",
        "confirm_delete": "Delete job '{title}' and all its device assignments?",
        "cancel": "Cancel",
        "per_device": "Per-device status",
        "no_assignments": "No device assigned",
        "no_jobs": "No jobs yet",
        "more_jobs": "Show more",
        "new_job": "New job",
        "url": "URL",
        "url_invalid": "Enter a valid URL starting with http:// or https://",
        "title": "Title (filled from the URL)",
        "duration": "Display time (seconds)",
        "duration_invalid": "1 to 86400 seconds",
        "target": "Target",
        "target_all_devices": "All devices",
        "target_percentage": "Percentage",
        "target_device_count": "Device count",
        "percentage_value": "Percentage (%)",
        "count_value": "Devices",
        "hint_all": "All connected devices: {n}",
        "hint_percentage": "Expected devices: {n} (of {total} connected)",
        "hint_device_count": "{n} devices requested ({total} connected)",
        "create": "Create",
        "created": "Job created: assigned to {assigned} devices",
        "deleted": "Job deleted",
        "devices_title": "Devices",
        "worker": "Worker {name}",
        "no_worker": "No worker",
        "no_devices": "No devices registered",
        "device_idle": "Idle",
        "device_busy": "Busy",
        "device_offline": "Offline",
        "device_error": "Error",
        "device_disabled": "Disabled",
        "current_job": "Current job: {job}",
        "last_heartbeat": "Last heartbeat: {at}",
        "simulated": "simulated",
        "assignment_pending": "Pending",
        "assignment_paused": "Paused",
        "assignment_running": "Running",
        "assignment_completed": "Completed",
        "assignment_failed": "Failed",
        "assignment_cancelled": "Cancelled",
        "attempt": "attempt {n}",
    },
}


class Translator:
    def __init__(self, language: str) -> None:
        self.language = language if language in LANGUAGES else FALLBACK_LANGUAGE
        self._texts = TEXTS[self.language]

    def __call__(self, key: str, **values: Any) -> str:
        return self._texts[key].format(**values)


def from_accept_language(header: str | None) -> str:
    """The supported language the browser ranks highest (RFC 9110 q-values)."""
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate((header or "").split(",")):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGUAGES and quality > 0:
            ranked.append((-quality, position, primary))
    return min(ranked)[2] if ranked else FALLBACK_LANGUAGE
