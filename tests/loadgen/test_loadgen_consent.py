"""The load generator refreshes ICE consent as a browser does (a binding request on each transport
every ~5 s), so a run longer than the server's consent timeout is not cut (issue 12: every run
over 30 s was). The server's timeout is shortened through its environment variable, and the
generator's refresh interval with it, so the run outlives the timeout several times over."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

CONSENT_TIMEOUT_S = 1.5
DURATION_S = 5.0


async def test_media_keeps_flowing_past_the_consent_timeout():
    from studyrooms.config import Settings
    from studyrooms.standalone import start_standalone

    from benchmarks.loadgen.runner import plan, run_shard

    settings = Settings.from_env({"STUDYROOMS_MEDIA_CONSENT_TIMEOUT_S": str(CONSENT_TIMEOUT_S)})
    assert settings.media.consent_timeout_s == CONSENT_TIMEOUT_S
    app = await start_standalone(settings, num_workers=1, port=0)
    try:
        out = await run_shard(app.url, plan(1, 2, screen_share=0, video=False), duration_s=DURATION_S,
                              join_gap_s=0.1, consent_interval_s=0.4)
    finally:
        await app.stop()
    media_s = out["loadgen"]["media_s"]
    assert media_s >= DURATION_S > 3 * CONSENT_TIMEOUT_S
    for p in out["participants"]:
        assert p["ok"], p
        # about 2 refreshes per transport per second, every one answered
        assert p["consent_checks"] >= 2 * 2 * (media_s - 1), p["consent_checks"]
        (audio,) = [s for s in p["streams"] if s["kind"] == "audio"]
        # 50 packets/s all along: a transport cut at the consent timeout would stop near 1.5 s of it
        assert audio["packets"] >= 0.85 * 50 * media_s, (audio, media_s)
