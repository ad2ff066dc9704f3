"""The OpenAI-compatible provider's environment settings, apart from the provider so that
naming them does not import the openai SDK."""

from __future__ import annotations

import os

ENV_BASE_URL = "JOBSYS_OPENAI_BASE_URL"  # e.g. http://gpu-box:8000/v1 (vLLM), http://localhost:11434/v1 (Ollama)
ENV_API_KEY = "JOBSYS_OPENAI_API_KEY"  # optional: local servers often need none. Not OPENAI_API_KEY, which
# would send an openai.com key to whatever server the base URL names.


def base_url_from_env() -> str | None:
    return os.environ.get(ENV_BASE_URL) or None


def api_key_from_env() -> str | None:
    return os.environ.get(ENV_API_KEY) or None
