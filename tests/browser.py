"""Look at a page as a person would: Debian's headless chromium, driven over the DevTools protocol
(aiohttp's websocket client), with every console message, script error and network request seen."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# What the page reports about itself once loaded: images that did not load, and its figures.
PROBE = """JSON.stringify({
  images: [...document.images].length,
  broken: [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),
  figures: Object.fromEntries([...document.querySelectorAll('[data-metric]')]
      .map(e => [e.dataset.metric, e.textContent.trim()])),
  title: document.title})"""


@dataclass
class Look:
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)   # anything fetched that is not data: or file:
    images: int = 0
    broken_images: list[str] = field(default_factory=list)
    figures: dict[str, str] = field(default_factory=dict)  # data-metric -> its text on the page
    title: str = ""


def look_at(page: Path, screenshot: Path, width: int = 1200) -> Look:
    return asyncio.run(_look(page, screenshot, width))


async def _look(page: Path, screenshot: Path, width: int) -> Look:
    import aiohttp

    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", f"--window-size={width},900", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            port = _devtools_port(proc)
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
                    target = next(t for t in await r.json() if t["type"] == "page")
                async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                    return await _drive(ws, page, screenshot)
        finally:
            proc.kill()
            proc.wait(timeout=10)


def _devtools_port(proc: subprocess.Popen) -> int:
    for line in proc.stderr:
        found = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
        if found:
            return int(found.group(1))
    raise RuntimeError("chromium did not start its DevTools endpoint")


async def _drive(ws, page: Path, screenshot: Path) -> Look:  # noqa: ANN001 - aiohttp's websocket
    look, ids, loaded = Look(), itertools.count(1), asyncio.Event()
    pending: dict[int, asyncio.Future] = {}

    async def reader() -> None:
        async for message in ws:
            data = json.loads(message.data)
            if "id" in data and data["id"] in pending:
                pending.pop(data["id"]).set_result(data.get("result", {}))
                continue
            method, params = data.get("method"), data.get("params", {})
            if method == "Page.loadEventFired":
                loaded.set()
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                words = (str(a.get("value", a.get("description"))) for a in params["args"])
                look.console_errors.append(" ".join(words))
            elif method == "Runtime.exceptionThrown":
                look.console_errors.append(params["exceptionDetails"].get("text", "exception"))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                look.console_errors.append(params["entry"].get("text", ""))
            elif method == "Network.requestWillBeSent":
                url = params["request"]["url"]
                if not url.startswith(("data:", "file:")):
                    look.requests.append(url)

    async def call(method: str, **params: object) -> dict:
        number = next(ids)
        pending[number] = asyncio.get_running_loop().create_future()
        await ws.send_str(json.dumps({"id": number, "method": method, "params": params}))
        return await asyncio.wait_for(pending[number], 60)

    task = asyncio.create_task(reader())
    for domain in ("Page", "Runtime", "Log", "Network"):
        await call(f"{domain}.enable")
    await call("Page.navigate", url=page.resolve().as_uri())
    await asyncio.wait_for(loaded.wait(), 60)
    answer = await call("Runtime.evaluate", expression=PROBE, returnByValue=True)
    probe = json.loads(answer["result"]["value"])
    look.images, look.broken_images = probe["images"], probe["broken"]
    look.figures, look.title = probe["figures"], probe["title"]
    shot = await call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    task.cancel()
    return look
