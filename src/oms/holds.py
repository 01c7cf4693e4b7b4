"""Who holds checkout stock: the caller a hold counts against, and its cap (DESIGN section 4).

A quote holds nothing; ``StartCheckout`` holds one option's units for a few
minutes. So that no caller can hold a SKU's stock away from everyone else,
each caller may hold only so many units at once:

* a caller with a valid bearer token (the checkout or admin token) is a checkout
  backend acting for its shoppers: each shopper session it names in the
  ``x-client-id`` metadata is its own caller, with ``hold_units_per_caller``;
* a caller without one (checkout is open by default) is anonymous: it is keyed
  by its network address (not the port, which it could change at will) and gets
  the small ``hold_units_anonymous``. An ``x-client-id`` from it is ignored, since
  anyone could send a fresh one per call.

Behind a shared gateway every anonymous shopper has the gateway's address and
shares one small cap: such a deployment sets a checkout token and passes
``x-client-id`` per shopper.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass

import grpc

from oms.interceptors import bearer_token
from oms.settings import Settings

CLIENT_ID_HEADER = "x-client-id"
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:@-]{1,64}")
#: ``ipv4:1.2.3.4:5678``, ``ipv6:[::1]:5678``: the address without the port.
_PEER = re.compile(r"(?:ipv4:(?P<v4>[0-9.]+)|ipv6:\[(?P<v6>[0-9A-Fa-f:.%a-z]+)\])(?::\d+)?")


@dataclass(frozen=True)
class Caller:
    """``key``: what its holds count against (stored on each hold); ``name``: for people."""

    key: str
    name: str
    anonymous: bool

    def cap(self, settings: Settings) -> int:
        """Units this caller may hold at once over all its checkouts."""
        if self.anonymous:
            return settings.hold_units_anonymous
        return settings.hold_units_per_caller


def peer_address(peer: str) -> str:
    """The network address of a gRPC peer string, without its port (the whole string
    for other transports, e.g. ``unix:...``), at most 64 characters."""
    found = _PEER.fullmatch(peer)
    if found is None:
        return peer[:64]
    return found.group("v4") or found.group("v6")


def caller_of(context: grpc.ServicerContext, settings: Settings) -> Caller:
    """The caller of this call, as the hold caps see it (see the module docstring)."""
    metadata = context.invocation_metadata()
    token = bearer_token(metadata)
    kind = None
    if token is not None:
        # Compare with every configured token, so timing does not tell which matched.
        for name, good in (("admin", settings.admin_token), ("checkout", settings.checkout_token)):
            if good and hmac.compare_digest(token, good.encode()) and kind is None:
                kind = name
    if kind is None:
        address = peer_address(context.peer())
        return Caller(f"anon:{address}", f"anonymous caller {address}", anonymous=True)
    client = next(
        (
            value
            for key, value in metadata or ()
            if key == CLIENT_ID_HEADER and isinstance(value, str) and _CLIENT_ID.fullmatch(value)
        ),
        "-",
    )
    return Caller(f"token:{kind}/{client}", f"client {client!r} of the {kind} token", False)
