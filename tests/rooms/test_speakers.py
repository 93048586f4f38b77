"""The room's speaker decisions (studyrooms/rooms/speakers.py), driven tick by tick with explicit
times: audio selection with hysteresis and hang-over, speaker history with its dwell, last-N order."""

from __future__ import annotations

from studyrooms.rooms.speakers import AudioSelection, SpeakerHistory, SpeakerTracker, rank_videos

TICK = 0.3


def run(selection: AudioSelection, tracker: SpeakerTracker, script: list[dict], start: float = 0.0):
    """Feed one report per tick (``{key: wire level}``); returns the selection after each tick."""
    out, now = [], start
    for levels in script:
        for key, level in levels.items():
            tracker.add(key, level, now)
        out.append(set(selection.update(tracker.volumes(now), now)))
        now += TICK
    return out


def test_the_loudest_k_are_selected_and_silence_is_never():
    tracker, sel = SpeakerTracker(), AudioSelection(2)
    got = run(sel, tracker, [{"a": 20, "b": 30, "c": 40, "d": 127, "e": 100}] * 3)
    assert got[-1] == {"a", "b"}  # the two loudest; d (silent) and e (-100 dBov) never


def test_a_newcomer_displaces_only_when_clearly_louder():
    tracker, sel = SpeakerTracker(smoothing=1.0), AudioSelection(2, hysteresis_db=6.0, hangover_s=10)
    run(sel, tracker, [{"a": 20, "b": 30}] * 2)
    # c is louder than b but within the hysteresis margin: b keeps its slot
    assert run(sel, tracker, [{"a": 20, "b": 30, "c": 26}] * 3, start=1.0)[-1] == {"a", "b"}
    # c clearly louder than b: it takes b's slot (b is the quietest selected)
    assert run(sel, tracker, [{"a": 20, "b": 30, "c": 15}], start=2.0)[-1] == {"a", "c"}


def test_hang_over_keeps_a_pausing_speaker_then_lets_go():
    tracker, sel = SpeakerTracker(), AudioSelection(3, hangover_s=1.0)
    run(sel, tracker, [{"a": 20}] * 3)  # t = 0 .. 0.6
    # a stops: still selected within the hang-over (the tail of the word is not clipped)...
    got = run(sel, tracker, [{"a": 127}] * 8, start=0.9)  # t = 0.9 .. 3.0
    assert got[0] == {"a"} and got[1] == {"a"}
    # ...and dropped once silent for longer than the hang-over
    assert got[-1] == set()
    # talking again brings it back at once (a free slot)
    assert run(sel, tracker, [{"a": 10}], start=3.3)[-1] == {"a"}


def test_no_limit_selects_every_speaker():
    tracker, sel = SpeakerTracker(), AudioSelection(-1)
    assert run(sel, tracker, [{k: 20 for k in "abcdef"}])[-1] == set("abcdef")


def test_dominant_speaker_has_hysteresis():
    tracker = SpeakerTracker(smoothing=1.0, hysteresis_db=3.0)
    tracker.add("a", 30, 0.0)
    tracker.add("b", 40, 0.0)
    assert tracker.dominant(0.0)[0] == "a"
    tracker.add("a", 30, 0.3)
    tracker.add("b", 29, 0.3)  # 1 dB louder: not enough to take over
    assert tracker.dominant(0.3)[0] == "a"
    tracker.add("a", 30, 0.6)
    tracker.add("b", 20, 0.6)
    assert tracker.dominant(0.6)[0] == "b"
    assert tracker.dominant(5.0) == (None, -127.0)  # stale: nobody


def test_history_needs_the_dwell_so_interjections_do_not_shuffle():
    h = SpeakerHistory(dwell_s=1.0)
    for t in (0.0, 0.3, 0.6, 0.9, 1.2):
        h.update("a", t)
    assert h.order == ["a"]
    h.update("b", 1.5)  # b interjects for 0.6 s
    h.update("b", 1.8)
    h.update("a", 2.1)
    assert h.order == ["a"]
    for t in (2.4, 2.7, 3.0, 3.3, 3.6):
        h.update("c", t)
    assert h.order == ["c", "a"]
    h.remove("c")
    assert h.order == ["a"]


def test_rank_puts_screen_then_stage_then_speakers_then_join_order():
    joined = ["me", "p1", "p2", "p3", "p4", "p5"]
    assert rank_videos("me", joined) == ["p1", "p2", "p3", "p4", "p5"]
    assert rank_videos("me", joined, history=["p4", "me", "p2"]) == ["p4", "p2", "p1", "p3", "p5"]
    assert rank_videos("me", joined, on_stage=["p5"], history=["p4"]) == ["p5", "p4", "p1", "p2", "p3"]
    ranked = rank_videos("me", joined, screen=["p3"], on_stage=["p5", "gone"], history=["p4"])
    assert ranked == ["p3", "p5", "p4", "p1", "p2"]
