"""Gemini's environment settings, apart from the provider so that naming them does not
import google-genai (about 34 MB and a second of start-up every worker would pay)."""

from __future__ import annotations

import os

ENV_API_KEY = "GEMINI_API_KEY"
ENV_BASE_URL = "GOOGLE_GEMINI_BASE_URL"  # read by the SDK itself


def api_key_from_env() -> str | None:
    return os.environ.get(ENV_API_KEY) or None
