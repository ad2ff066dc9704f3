"""How a device's model is shown: as its worker reported it (a phone's own model name), except
the simulated driver's label, which is ours and so is translated."""

from __future__ import annotations

from collections.abc import Callable

SIM_MODEL = "Simulated device"  # worker/drivers/sim.py SIM_MODEL (a test keeps them equal)


def model_text(t: Callable[..., str], model: str | None) -> str:
    if not model:
        return ""
    return t("device_model_sim") if model == SIM_MODEL else model
