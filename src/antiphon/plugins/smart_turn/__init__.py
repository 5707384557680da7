"""Semantic end of turn: Smart Turn v3.2 (BSD-2-Clause), weights from the ``pipecat-ai`` wheel."""

from antiphon.plugins.smart_turn.detector import (
    INSTALL_HINT,
    MODEL_FILE,
    PINS,
    SmartTurnDetector,
    SmartTurnModel,
    available,
    packaged_model,
)

__all__ = [
    "INSTALL_HINT",
    "MODEL_FILE",
    "PINS",
    "SmartTurnDetector",
    "SmartTurnModel",
    "available",
    "packaged_model",
]
