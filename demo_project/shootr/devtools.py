"""The browser-wide DevTools connection: what chromedriver's page-level ``execute_cdp_cmd`` may not
do (Chromium answers "Not allowed"), such as creating and disposing of browser contexts.

Chromium listens for DevTools on a loopback port that chromedriver chose; its browser endpoint
takes commands for the whole browser. One connection per browser, used by one thread at a time.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import urllib.request
from typing import Any

import websocket


class DevToolsError(Exception):
    """The browser's DevTools endpoint could not be reached, or refused a command."""


class BrowserDevTools:
    def __init__(self, address: str, timeout: float) -> None:
        """``address``: chromedriver's ``goog:chromeOptions.debuggerAddress`` (host:port)."""
        self._ids = itertools.count(1)
        no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with no_proxy.open(f"http://{address}/json/version", timeout=timeout) as response:
                url = json.load(response)["webSocketDebuggerUrl"]
            # No Origin header: Chromium refuses DevTools connections that come from a page.
            self._ws = websocket.create_connection(url, timeout=timeout, suppress_origin=True,
                                                   http_no_proxy=["localhost", "127.0.0.1"])
        except (OSError, ValueError, KeyError, websocket.WebSocketException) as exc:
            raise DevToolsError(f"cannot reach the browser's DevTools at {address}: {exc}") from exc

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its answer (events, never asked for, are skipped)."""
        call_id = next(self._ids)
        try:
            self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
            while True:
                message = json.loads(self._ws.recv())
                if message.get("id") == call_id:
                    break
        except (OSError, ValueError, websocket.WebSocketException) as exc:
            raise DevToolsError(f"{method}: {exc}") from exc
        if "error" in message:
            raise DevToolsError(f"{method}: {message['error'].get('message')}")
        result: dict[str, Any] = message.get("result", {})
        return result

    def close(self) -> None:
        with contextlib.suppress(OSError, websocket.WebSocketException):
            self._ws.close()
