"""Providers: Gemini (google-genai) and offline. `create_provider` picks one for a job."""

from __future__ import annotations

from jobsys.batch.providers.base import CallFailure, Completion, FailureKind, Provider, Request
from jobsys.batch.providers.offline import OFFLINE_LABEL, OfflineProvider

__all__ = ["OFFLINE_LABEL", "CallFailure", "Completion", "FailureKind", "OfflineProvider", "Provider", "Request"]
