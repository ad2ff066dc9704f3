"""Transports: how the library reaches the SQL functions and the push channel."""

from jobsys.transport.base import EventHandler, StateHandler, Subscription, Transport

__all__ = ["EventHandler", "StateHandler", "Subscription", "Transport"]
