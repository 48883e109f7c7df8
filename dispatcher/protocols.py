"""uvicorn's protocols with two fixes the dispatcher needs against careless or hostile peers.

- `DispatcherHttpProtocol`: uvicorn times out an idle keep-alive connection only after a
  response; a connection that never sends a request is held forever. 1,009 such silent
  connections exhausted a 1,024 file-descriptor limit, so new callers failed and a killed
  worker could not reconnect. Here the idle timeout also runs from the moment a connection
  is made, so a silent peer is dropped after `timeout_keep_alive` seconds.
- `DispatcherWebSocketProtocol`: when the opening request of a websocket is malformed or too
  large (a header line over 8 KiB, for instance a 64 KiB `Worker-Id`), the `websockets`
  parser rejects it, queues a 400/431 answer and raises no event; uvicorn's sans-I/O protocol
  (0.54) never writes that answer, so the client waits until its own timeout with the
  connection held open, and uvicorn's shutdown then trips over the half-finished handshake.
  Here the rejection is written and the connection closed.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


class DispatcherHttpProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` whose idle timeout also covers the wait for the first request."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Cancelled by the first bytes received (uvicorn's data_received), like keep-alive.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )


class DispatcherWebSocketProtocol(WebSocketsSansIOProtocol):
    """`WebSocketsSansIOProtocol` that answers and closes a handshake it could not parse."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.handshake_exc is not None and not self.handshake_complete:
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.handshake_complete = True  # nothing more to say: shutdown must not answer
            self.transport.close()
