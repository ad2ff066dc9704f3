"""Transports: how the library reaches the SQL functions and the push channel."""

from jobsys.transport.base import EventHandler, EvidenceUploader, StateHandler, Subscription, Transport

__all__ = ["EventHandler", "EvidenceUploader", "StateHandler", "Subscription", "Transport"]
