"""Every request a page makes, as headless Chromium reports it over the DevTools protocol.

A page's HTML can name only its own assets and still reach out at run time (a script that
loads a font, a validator badge, a worker from a CDN). Chromium's own background requests
(component updates, its clock) go through the network too, so a proxy cannot tell them
from the page's; the protocol's ``Network.requestWillBeSent`` events are the page's alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import tempfile
from typing import Any

import httpx
from websockets.asyncio.client import connect

DEVTOOLS_URL = re.compile(rb"DevTools listening on (ws://127\.0\.0\.1:(\d+)/\S+)")


async def page_requests(
    chromium: str, url: str, *, settle: float = 6.0, host: str | None = None
) -> list[str]:
    """The URL of every request the page at ``url`` made: up to its load event and for
    ``settle`` seconds after it (the scripts' own requests). ``host``, when given, is a
    name Chromium resolves to 127.0.0.1: pages behave differently on the loopback address
    (Swagger UI asks its online validator about every address but localhost)."""
    resolve = [f"--host-resolver-rules=MAP {host} 127.0.0.1"] if host else []
    with tempfile.TemporaryDirectory() as profile:
        process = await asyncio.create_subprocess_exec(
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={profile}", "--window-size=1400,2000",
            "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", *resolve,
            "about:blank", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            return await asyncio.wait_for(_requests(process, url, settle), 60 + settle)
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()


async def _requests(process: asyncio.subprocess.Process, url: str, settle: float) -> list[str]:
    assert process.stderr is not None
    while not (found := DEVTOOLS_URL.search(await process.stderr.readline())):
        assert not process.stderr.at_eof(), "Chromium ended before its DevTools listened"
    # Keep reading Chromium's log so that it never blocks on a full pipe.
    drain = asyncio.create_task(process.stderr.read(), name="chromium-stderr")
    try:
        async with httpx.AsyncClient() as http:
            listed = (await http.get(f"http://127.0.0.1:{int(found.group(2))}/json/list")).json()
        target = next(t["webSocketDebuggerUrl"] for t in listed if t["type"] == "page")
        async with connect(target, max_size=None) as ws:
            ids = iter(range(1, 1_000_000))
            answers: dict[int, asyncio.Future[dict[str, Any]]] = {}
            urls: list[str] = []
            loaded = asyncio.Event()

            async def send(method: str, params: dict[str, Any] | None = None) -> None:
                """Send one command and wait for its answer (so Network.enable is in force
                before the page is asked for)."""
                number = next(ids)
                answers[number] = asyncio.get_running_loop().create_future()
                try:
                    await ws.send(
                        json.dumps({"id": number, "method": method, "params": params or {}})
                    )
                    answer = await asyncio.wait_for(answers[number], 30)
                finally:
                    del answers[number]
                assert "error" not in answer, answer

            async def listen() -> None:
                async for raw in ws:
                    message = json.loads(raw)
                    if message.get("id") in answers:
                        answers[message["id"]].set_result(message)
                    elif message.get("method") == "Network.requestWillBeSent":
                        urls.append(message["params"]["request"]["url"])
                    elif message.get("method") == "Page.loadEventFired":
                        loaded.set()

            listener = asyncio.create_task(listen(), name="devtools-events")
            try:
                await send("Network.enable")
                await send("Page.enable")
                await send("Page.navigate", {"url": url})
                await asyncio.wait_for(loaded.wait(), 60)
                await asyncio.sleep(settle)
            finally:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
        return urls
    finally:
        process.kill()
        with contextlib.suppress(Exception):
            await drain
