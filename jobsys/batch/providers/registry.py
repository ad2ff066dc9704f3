"""Which provider runs a job: the job asks (auto / gemini / offline / openai_compatible), the
runner decides, and claims only what it can run.

auto means Gemini when this runner has GEMINI_API_KEY, else offline. gemini needs the key;
openai_compatible needs JOBSYS_OPENAI_BASE_URL. A runner advertises what it has (`names`)
when it claims, so it never takes a job it would have to fail; such a job waits, and says why
(background_wait_reason), until a runner that can run it appears.
"""

from __future__ import annotations

import dataclasses

from jobsys.batch.models import ProviderChoice
from jobsys.batch.providers import openai_env
from jobsys.batch.providers.base import CallFailure, FailureKind, Provider
from jobsys.batch.providers.gemini_env import ENV_API_KEY, api_key_from_env
from jobsys.batch.providers.offline import DEFAULT_LATENCY_S, OfflineProvider


@dataclasses.dataclass
class ProviderSet:
    offline: Provider
    gemini: Provider | None = None
    openai_compatible: Provider | None = None

    @classmethod
    def from_env(cls, *, offline_only: bool = False,
                 offline_latency_s: tuple[float, float] = DEFAULT_LATENCY_S) -> ProviderSet:
        key = None if offline_only else api_key_from_env()
        gemini: Provider | None = None
        if key:
            from jobsys.batch.providers.gemini import GeminiProvider  # google-genai only when used
            gemini = GeminiProvider(key)
        openai: Provider | None = None
        base_url = None if offline_only else openai_env.base_url_from_env()
        if base_url:
            from jobsys.batch.providers.openai_compat import (
                OpenAICompatibleProvider,  # the SDK only when used
            )
            openai = OpenAICompatibleProvider(base_url, openai_env.api_key_from_env())
        return cls(offline=OfflineProvider(offline_latency_s), gemini=gemini, openai_compatible=openai)

    @property
    def default_name(self) -> str:
        return "gemini" if self.gemini is not None else "offline"

    @property
    def names(self) -> list[str]:
        """What this runner can run, as it advertises it when claiming."""
        out = ["offline"]
        if self.gemini is not None:
            out.append("gemini")
        if self.openai_compatible is not None:
            out.append("openai_compatible")
        return sorted(out)

    def for_choice(self, choice: ProviderChoice | str) -> Provider:
        choice = ProviderChoice(choice)
        if choice is ProviderChoice.OFFLINE:
            return self.offline
        if choice is ProviderChoice.OPENAI_COMPATIBLE:
            if self.openai_compatible is None:
                raise CallFailure(FailureKind.FATAL, f"this job asks for an OpenAI-compatible server but "
                                                     f"{openai_env.ENV_BASE_URL} is not set on the runner")
            return self.openai_compatible
        if self.gemini is not None:
            return self.gemini
        if choice is ProviderChoice.GEMINI:
            raise CallFailure(FailureKind.FATAL, f"this job asks for Gemini but {ENV_API_KEY} is not set on the runner")
        return self.offline

    async def close(self) -> None:
        await self.offline.close()
        for provider in (self.gemini, self.openai_compatible):
            if provider is not None:
                await provider.close()
