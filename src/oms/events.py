"""OrderEventService: the order event feed (the outbox of :mod:`oms.store.outbox`) from a cursor.

``ListOrderEvents`` pages through committed events after a sequence;
``WatchOrderEvents`` streams them, then polls for new ones (every
``alert_poll_s``) until the caller goes away. Both only ever see a gapless
prefix of the sequence, so a reader that resumes after the last sequence it
processed misses nothing, across server crashes and restarts included.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc

from oms.convert import timestamp
from oms.settings import Settings
from oms.status import rpc, rpc_stream
from oms.store import Store, outbox
from oms.v1 import common_pb2, events_pb2, events_pb2_grpc
from oms.validation import Violations

DEFAULT_PAGE = 100
MAX_PAGE = 1000
#: Events read per poll while watching.
WATCH_BATCH = 500


def event_proto(event: outbox.EventRow) -> common_pb2.OrderEvent:
    return common_pb2.OrderEvent(
        time=timestamp(event.at),
        type=event.type,
        detail=event.detail,
        sequence=event.sequence,
        order_id=event.order_id,
        shipment_id=event.shipment_id or "",
        node_id=event.node_id or "",
    )


def _check_cursor(v: Violations, after: int) -> None:
    if after < 0:
        v.add("after_sequence", f"must not be negative, got {after}")


class OrderEventServicer(events_pb2_grpc.OrderEventServiceServicer):
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    @rpc
    def ListOrderEvents(
        self, request: events_pb2.ListOrderEventsRequest, context: grpc.ServicerContext
    ) -> events_pb2.ListOrderEventsResponse:
        v = Violations()
        _check_cursor(v, request.after_sequence)
        if request.page_size < 0:
            v.add("page_size", f"must not be negative, got {request.page_size}")
        if request.order_id:
            v.require_id("order_id", request.order_id)
        v.raise_if_any()
        size = min(request.page_size or DEFAULT_PAGE, MAX_PAGE)
        with self.store.read() as conn:
            events = outbox.events_after(
                conn, request.after_sequence, size, order_id=request.order_id or None
            )
        return events_pb2.ListOrderEventsResponse(
            events=[event_proto(e) for e in events],
            next_after_sequence=events[-1].sequence if events else request.after_sequence,
        )

    @rpc_stream
    def WatchOrderEvents(
        self, request: events_pb2.WatchOrderEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[events_pb2.WatchOrderEventsResponse]:
        v = Violations()
        _check_cursor(v, request.after_sequence)
        v.raise_if_any()
        gone = threading.Event()
        context.add_callback(gone.set)
        cursor = int(request.after_sequence)
        while context.is_active():
            with self.store.read() as conn:
                events = outbox.events_after(conn, cursor, WATCH_BATCH)
            for event in events:
                cursor = event.sequence
                yield events_pb2.WatchOrderEventsResponse(event=event_proto(event))
            if len(events) < WATCH_BATCH and gone.wait(self.settings.alert_poll_s):
                break
