"""Which provider runs a job: the job asks (auto / gemini / offline), the runner decides.

auto means Gemini when this runner has GEMINI_API_KEY, else offline. A job that asks for
Gemini on a runner without a key fails with that reason instead of producing offline text.
"""

from __future__ import annotations

import dataclasses

from jobsys.batch.models import ProviderChoice
from jobsys.batch.providers.base import CallFailure, FailureKind, Provider
from jobsys.batch.providers.gemini_env import ENV_API_KEY, api_key_from_env
from jobsys.batch.providers.offline import DEFAULT_LATENCY_S, OfflineProvider


@dataclasses.dataclass
class ProviderSet:
    offline: Provider
    gemini: Provider | None = None

    @classmethod
    def from_env(cls, *, offline_only: bool = False,
                 offline_latency_s: tuple[float, float] = DEFAULT_LATENCY_S) -> ProviderSet:
        key = None if offline_only else api_key_from_env()
        if key:
            from jobsys.batch.providers.gemini import GeminiProvider  # google-genai only when used
        return cls(offline=OfflineProvider(offline_latency_s), gemini=GeminiProvider(key) if key else None)

    @property
    def default_name(self) -> str:
        return "gemini" if self.gemini is not None else "offline"

    def for_choice(self, choice: ProviderChoice | str) -> Provider:
        choice = ProviderChoice(choice)
        if choice is ProviderChoice.OFFLINE:
            return self.offline
        if self.gemini is not None:
            return self.gemini
        if choice is ProviderChoice.GEMINI:
            raise CallFailure(FailureKind.FATAL, f"this job asks for Gemini but {ENV_API_KEY} is not set on the runner")
        return self.offline

    async def close(self) -> None:
        await self.offline.close()
        if self.gemini is not None:
            await self.gemini.close()
