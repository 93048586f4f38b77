from studyrooms.clock import FakeClock
from studyrooms.media.audio_level import ActiveSpeakerDetector


def test_loudest_recent_speaker_wins_with_hysteresis():
    clock = FakeClock()
    d = ActiveSpeakerDetector(threshold_dbov=-80, hysteresis_db=3, stale_s=1.0, smoothing=0.5)
    assert d.dominant(clock.now()) == (None, -127)
    for _ in range(10):
        d.add("alice", 30, clock.now())  # -30 dBov
        d.add("bob", 60, clock.now())  # -60 dBov
        d.add("carol", 127, clock.now())  # silence
        clock.advance(0.02)
    assert d.dominant(clock.now()) == ("alice", -30)
    # bob becomes only slightly louder than alice: within the hysteresis, alice stays
    for _ in range(20):
        d.add("alice", 30, clock.now())
        d.add("bob", 28, clock.now())
        clock.advance(0.02)
    assert d.dominant(clock.now())[0] == "alice"
    # bob clearly louder: switch
    for _ in range(20):
        d.add("alice", 40, clock.now())
        d.add("bob", 20, clock.now())
        clock.advance(0.02)
    assert d.dominant(clock.now()) == ("bob", -20)


def test_silence_stale_and_removal():
    clock = FakeClock()
    d = ActiveSpeakerDetector(threshold_dbov=-70)
    d.add("a", 100, clock.now())  # -100 dBov: below the threshold
    assert d.dominant(clock.now()) == (None, -127)
    d.add("b", 10, clock.now())
    assert d.dominant(clock.now()) == ("b", -10)
    clock.advance(1.5)  # b stopped sending
    assert d.dominant(clock.now()) == (None, -127)
    d.add("b", 10, clock.now())
    d.remove("b")
    assert d.dominant(clock.now()) == (None, -127)
    d.add("c", -1, clock.now())  # "no level" samples are ignored
    assert d.volume("c", clock.now()) is None
