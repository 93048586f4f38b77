"""Capture real Chromium TransportFeedback (RTCP RTPFB FMT 15) for the unit-test fixtures, and watch
the downlink estimator/allocator while doing it.

    .venv/bin/python scripts/capture_twcc.py [--seconds 12] [--out tests/media/fixtures/chrome_twcc.json]

Runs the whole server in this process (studyrooms.standalone, no Ray) with the built page
(web/dist), opens two headless Chromium pages (Debian's chromium, fake camera/mic) that join one
room, and records, on Bob's recv transport, every TransportFeedback Chromium sends together with
the send record (tw-seq -> send time, size) of the packets it reports on. Prints Bob's view of
Alice's camera (frame size) and the transport's estimate once a second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from studyrooms.config import ServerSettings, Settings  # noqa: E402
from studyrooms.media.twcc import parse_feedback  # noqa: E402
from studyrooms.sfu.transport_bwe import TransportBwe  # noqa: E402
from studyrooms.standalone import start_standalone  # noqa: E402

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream", "--allow-loopback-in-peer-connection"]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--max-packets", type=int, default=40)
    args = ap.parse_args()
    from playwright.async_api import async_playwright

    captured: list[dict] = []
    original = TransportBwe.on_feedback

    def recording(self, data, offset, length):
        if len(captured) < args.max_packets and self.stamper is not None:
            raw = bytes(data[offset:offset + length])
            parsed = parse_feedback(raw, 0, len(raw))
            if parsed is not None:
                sent = {}
                for seq, _ in parsed[2]:
                    rec = self.stamper.lookup(seq)
                    if rec is not None:
                        sent[str(seq)] = [round(rec[0], 6), rec[1]]
                captured.append({"hex": raw.hex(), "sent": sent})
        return original(self, data, offset, length)

    TransportBwe.on_feedback = recording
    settings = Settings(server=ServerSettings(host="127.0.0.1", port=0, web_root=str(REPO / "web" / "dist")))
    app = await start_standalone(settings, num_workers=1, port=0)
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path="/usr/lib/chromium/chromium", headless=True, args=ARGS)
            pages = []
            for name in ("Alice", "Bob"):
                ctx = await browser.new_context(viewport={"width": 1280, "height": 800})
                page = await ctx.new_page()
                await page.goto(app.url + "/")
                await page.wait_for_function("() => !!window.studyrooms", timeout=15000)
                await page.fill("#display-name", name)
                await page.fill("#room-id", "capture")
                await page.click("#join-button")
                pages.append(page)
            t0 = time.monotonic()
            while time.monotonic() - t0 < args.seconds:
                await asyncio.sleep(1.0)
                stats = await pages[1].evaluate("() => window.studyrooms.stats()")
                sent = await pages[0].evaluate("() => window.studyrooms.sendStats()")
                cams = [(s["frameWidth"], s["framesDecoded"]) for s in stats if s["source"] == "camera"]
                tops = sorted({s.get("frameWidth") or 0 for s in sent if s["kind"] == "video"})
                bwe = []
                for worker in app.workers:
                    for router in worker.routers.values() if hasattr(worker, "routers") else []:
                        for t in router.transports.values():
                            if getattr(t, "allocator", None) is not None:
                                st = t.bwe.stats()
                                bwe.append((st["availableOutgoingBitrate"], st["bweSource"], st["probing"],
                                            st["bwe"]["delayState"], t.allocator.dump()["consumers"]))
                aob = await pages[0].evaluate("""async () => { let v = null;
                    (await window.studyrooms.client.sendTransport.getStats()).forEach((s) => {
                      if (s.type === 'candidate-pair' && s.availableOutgoingBitrate) v = s.availableOutgoingBitrate; });
                    return v; }""")
                rates = []
                for worker in app.workers:
                    for router in worker.routers.values():
                        for prod in router.producers.values():
                            if prod.kind == "video":
                                rates.append([s.bitrate_bps(time.monotonic()) if s else None for s in prod.streams])
                print(f"{time.monotonic() - t0:5.1f}s bob sees {cams} alice sends widths {tops} alice-est {aob} "
                      f"layers {rates}", flush=True)
                for b in bwe:
                    print("    ", b[:4], [(d["spatialLayer"], d["temporalLayer"], d["bitrate"], d["reason"])
                                         for d in b[4].values()], flush=True)
            await browser.close()
    finally:
        await app.stop()
    print(f"captured {len(captured)} TransportFeedback packets")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"source": "Chromium (Debian) headless, mediasoup-client page, "
                                                         "two pages on loopback; scripts/capture_twcc.py",
                                              "feedback": captured}, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
