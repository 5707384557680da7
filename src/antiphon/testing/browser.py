"""Headless Chromium over the DevTools protocol, for end-to-end tests of the playground.

Starts Debian's Chromium (``/usr/bin/chromium``) headless with a fake microphone that
plays a WAV file, opens a page, and evaluates JavaScript in it, every step bounded by a
deadline. The browser process is always killed and waited for, and its profile removed.
Uses only ``websockets`` (already a dependency) to speak the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

__all__ = ["CHROMIUM", "INSTALL_HINT", "Browser", "BrowserError", "Page", "chromium"]

CHROMIUM = os.environ.get("ANTIPHON_CHROMIUM", "/usr/bin/chromium")
INSTALL_HINT = "install Debian's Chromium: apt-get install -y chromium (make test does it)"


class BrowserError(RuntimeError):
    pass


class Page:
    """One tab, driven over a flat DevTools session."""

    def __init__(self, browser: Browser, session_id: str) -> None:
        self._browser = browser
        self._session = session_id

    async def evaluate(self, expression: str, *, timeout: float = 10.0) -> Any:
        """The value of ``expression`` (awaited if it is a promise), as JSON."""
        result = await self._browser.call(
            "Runtime.evaluate",
            {
                "expression": expression,
                "returnByValue": True,
                "awaitPromise": True,
                "userGesture": True,
            },
            session=self._session,
            timeout=timeout,
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"page error: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    async def wait_for(self, expression: str, *, timeout: float = 20.0) -> Any:
        """Evaluate ``expression`` every 100 ms until it is truthy; return its value."""
        async with asyncio.timeout(timeout):
            while True:
                value = await self.evaluate(expression)
                if value:
                    return value
                await asyncio.sleep(0.1)


class Browser:
    """A running headless Chromium (use :func:`chromium`)."""

    def __init__(self, proc: asyncio.subprocess.Process, ws: ClientConnection) -> None:
        self._proc = proc
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.console: list[str] = []
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for raw in self._ws:
            msg = json.loads(raw)
            fut = self._pending.pop(msg.get("id", -1), None)
            if fut is not None and not fut.done():
                if "error" in msg:
                    fut.set_exception(BrowserError(str(msg["error"])))
                else:
                    fut.set_result(msg.get("result", {}))
            elif msg.get("method") == "Runtime.consoleAPICalled":
                args = msg["params"].get("args", [])
                self.console.append(" ".join(str(a.get("value", "")) for a in args))

    async def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: str | None = None,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        msg_id = next(self._ids)
        message: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        await self._ws.send(json.dumps(message))
        try:
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            self._pending.pop(msg_id, None)

    async def open(self, url: str) -> Page:
        target = await self.call("Target.createTarget", {"url": "about:blank"})
        attached = await self.call(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self, attached["sessionId"])
        await self.call("Runtime.enable", session=attached["sessionId"])
        await self.call("Page.enable", session=attached["sessionId"])
        await self.call("Page.navigate", {"url": url}, session=attached["sessionId"])
        await page.wait_for("document.readyState === 'complete'")
        return page

    async def aclose(self) -> None:
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._ws.close(), 2)


@contextlib.asynccontextmanager
async def chromium(*, fake_audio: str | Path | None = None) -> AsyncIterator[Browser]:
    """Run headless Chromium; ``fake_audio``: a WAV file the fake microphone plays once."""
    if not os.access(CHROMIUM, os.X_OK):
        raise BrowserError(f"{CHROMIUM} not found; {INSTALL_HINT}")
    profile = tempfile.mkdtemp(prefix="antiphon-chromium-")
    args = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--remote-debugging-port=0",
        "--autoplay-policy=no-user-gesture-required",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
    ]
    if fake_audio is not None:
        args.append(f"--use-file-for-fake-audio-capture={fake_audio}%noloop")
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM,
        *args,
        "about:blank",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    browser: Browser | None = None
    try:
        assert proc.stderr is not None
        url = None
        async with asyncio.timeout(30):
            while url is None:
                line = await proc.stderr.readline()
                if not line:
                    raise BrowserError("Chromium exited before it listened for DevTools")
                found = re.search(rb"DevTools listening on (ws://\S+)", line)
                if found:
                    url = found.group(1).decode()
        drain = asyncio.get_running_loop().create_task(_drain(proc.stderr))
        ws = await connect(url, max_size=None)
        browser = Browser(proc, ws)
        try:
            yield browser
        finally:
            await browser.aclose()
            drain.cancel()
            await asyncio.gather(drain, return_exceptions=True)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass
