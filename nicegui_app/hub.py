"""The process-wide event hub: one push subscription fans out to every open page.

The dashboard subscribes to the push channel once (`JobSystem.subscribe_dashboard`) and
publishes here; pages add a listener while they are open. A listener only marks its
page dirty, so publishing is cheap however many pages are open.

When the channel (re)subscribes, events may have been missed: the hub sends every
listener a RESYNC event and the pages re-read everything. `status` is what the header
shows: connected, reconnecting (the subscription retries; pages re-read every 3 s
meanwhile) or polling (this transport has no push, e.g. a Supabase dashboard without an
account for Realtime: pages re-read every 3 s).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import Callable

from nicegui import binding

from jobsys.events import DASHBOARD_TOPIC, ChannelState, Event

log = logging.getLogger(__name__)

RESYNC = "resync"  # not a database event: "re-read everything"
SAFETY_REFRESH_UP_S = 15.0  # while push works: catches what no event announces (e.g. a heartbeat going stale)
SAFETY_REFRESH_DOWN_S = 3.0  # while push is down: the dashboard keeps up by re-reading

Listener = Callable[[Event], None]


class PushStatus(str, enum.Enum):
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    POLLING = "polling"


class EventHub:
    live = binding.BindableProperty()  # push channel up
    status = binding.BindableProperty()  # PushStatus; the header shows it

    def __init__(self, *, push: bool = True) -> None:
        """`push`: whether the subscription feeding this hub can push at all."""
        self._listeners: set[Listener] = set()
        self.push = push
        self.state = ChannelState.DISCONNECTED
        self.live = False
        self.status = PushStatus.RECONNECTING if push else PushStatus.POLLING

    def __len__(self) -> int:
        return len(self._listeners)

    def add_listener(self, listener: Listener) -> None:
        self._listeners.add(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.discard(listener)

    def publish(self, event: Event) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # one page's bug must not starve the others
                log.exception("dashboard listener failed on %s", event.event)

    def resync(self) -> None:
        self.publish(Event(topic=DASHBOARD_TOPIC, event=RESYNC))

    def set_state(self, state: ChannelState) -> None:
        """The subscription's state handler."""
        self.state = state
        self.live = state is ChannelState.SUBSCRIBED
        if self.live:
            self.status = PushStatus.CONNECTED
        else:
            self.status = PushStatus.RECONNECTING if self.push else PushStatus.POLLING
        if state is ChannelState.SUBSCRIBED:
            self.resync()

    async def run_safety_refresh(
        self, up_interval_s: float = SAFETY_REFRESH_UP_S, down_interval_s: float = SAFETY_REFRESH_DOWN_S
    ) -> None:
        """Resync now and then, more often while push is down. Server-side: browsers never poll."""
        while True:
            await asyncio.sleep(up_interval_s if self.live else down_interval_s)
            if self._listeners:
                self.resync()
