"""PingSource ticks on an injected clock: when a source fires, the event it sends, and that a tick
is one event however often it is published."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from evroute.clock import parse_time
from evroute.cloudevent import CloudEvent
from evroute.routes.model import PingSource
from evroute.sources.ping import EVENT_TYPE, Ticker, latest_tick, next_tick, tick_event, tick_id
from evroute.store import Store
from evroute.store import log as event_log

T0 = parse_time("2026-11-30T10:00:00Z") or 0.0
EVERY_MINUTE = PingSource(
    name="beat", namespace="shop", broker="default", data=b'{"a":1}', content_type="application/json"
)


class Published:
    def __init__(self) -> None:
        self.events: list[tuple[str, CloudEvent]] = []

    def __call__(self, broker: str, events: Sequence[CloudEvent]) -> None:
        self.events.extend((broker, e) for e in events)


def test_next_and_latest_tick_of_a_five_field_schedule() -> None:
    assert next_tick(EVERY_MINUTE, T0) == T0 + 60
    assert next_tick(EVERY_MINUTE, T0 + 0.5) == T0 + 60
    assert latest_tick(EVERY_MINUTE, T0) == T0
    assert latest_tick(EVERY_MINUTE, T0 + 59.9) == T0
    hourly = PingSource(name="h", namespace="n", schedule="@hourly", broker="default")
    assert next_tick(hourly, T0 + 1) == T0 + 3600


def test_timezone_moves_the_ticks() -> None:
    nine = PingSource(name="n", namespace="n", schedule="0 9 * * *", timezone="Europe/Berlin", broker="b")
    winter = next_tick(nine, T0)  # 10:00 UTC is 11:00 in Berlin: next is tomorrow 09:00 CET
    assert dt.datetime.fromtimestamp(winter, dt.UTC).isoformat() == "2026-12-01T08:00:00+00:00"
    summer = next_tick(nine, parse_time("2026-07-01T00:00:00Z") or 0.0)
    assert dt.datetime.fromtimestamp(summer, dt.UTC).isoformat() == "2026-07-01T07:00:00+00:00"


def test_seconds_field_is_an_extension_for_fast_schedules() -> None:
    fast = PingSource(name="f", namespace="n", schedule="* * * * * */5", broker="b")
    assert next_tick(fast, T0) == T0 + 5


def test_the_event_carries_knatives_attributes() -> None:
    event = tick_event(EVERY_MINUTE, T0)
    assert event.type == EVENT_TYPE == "dev.knative.sources.ping"
    assert event.source == "/apis/v1/namespaces/shop/pingsources/beat"
    assert event.time == "2026-11-30T10:00:00.000Z"
    assert event.datacontenttype == "application/json" and event.data == b'{"a":1}'
    assert event.id == tick_id(EVERY_MINUTE, T0) != tick_id(EVERY_MINUTE, T0 + 60)
    other = PingSource(name="beat", namespace="other", broker="default")
    assert tick_id(other, T0) != event.id  # the id is the source's and the tick's


def test_ticker_fires_once_per_minute_and_does_not_make_up_missed_ticks() -> None:
    out = Published()
    ticker = Ticker([EVERY_MINUTE], now=T0 + 10)
    assert ticker.step(T0 + 10, out) == 50
    assert out.events == []
    assert ticker.step(T0 + 59.99, out) is not None and out.events == []
    assert ticker.step(T0 + 60, out) == 60
    assert ticker.step(T0 + 60.5, out) == 59.5  # the same minute: nothing more
    assert [e.time for _, e in out.events] == ["2026-11-30T10:01:00.000Z"]
    # Asleep for five minutes (a suspended laptop): one event, for the latest tick.
    ticker.step(T0 + 60 * 6 + 3, out)
    assert [e.time for _, e in out.events][1:] == ["2026-11-30T10:06:00.000Z"]
    assert {b for b, _ in out.events} == {"default"}


def test_a_restart_within_the_minute_publishes_the_tick_once(tmp_path: Path) -> None:
    db = str(tmp_path / "ev.db")

    def into_store(broker: str, events: Sequence[CloudEvent]) -> None:
        with Store(db) as store:
            event_log.append(store, broker, events)

    first = Ticker([EVERY_MINUTE], now=T0 + 59)
    first.step(T0 + 60, into_store)
    # The worker restarts 0.2 s later, before its state said the tick was done: a new ticker
    # that fires the same tick again (as a second worker on a cluster would) stores nothing new.
    second = Ticker([EVERY_MINUTE], now=T0 + 59.9)
    second.step(T0 + 60.2, into_store)
    # And one started after the tick waits for the next minute.
    third = Ticker([EVERY_MINUTE], now=T0 + 61)
    assert third.step(T0 + 61, into_store) == 59
    with Store(db) as store:
        stored = event_log.listing(store, broker="default", type=EVENT_TYPE, limit=10)
    assert [s.event.time for s in stored] == ["2026-11-30T10:01:00.000Z"]


def test_reconfigured_sources_keep_or_restart_their_schedule() -> None:
    out = Published()
    ticker = Ticker([EVERY_MINUTE], now=T0)
    five = PingSource(name="five", namespace="n", schedule="*/5 * * * *", broker="b")
    ticker.configure([EVERY_MINUTE, five], now=T0 + 30)
    assert ticker.upcoming() == {"beat": T0 + 60, "five": T0 + 300}
    ticker.configure([], now=T0 + 31)
    assert ticker.step(T0 + 400, out) is None and out.events == []


def test_uri_sink_ticks_go_to_the_sources_own_broker() -> None:
    out = Published()
    direct = PingSource(name="direct", namespace="n", uri="http://127.0.0.1:9/")
    ticker = Ticker([direct], now=T0)
    ticker.step(T0 + 60, out)
    assert [b for b, _ in out.events] == ["pingsource-direct"]


def test_a_real_worker_ticks_every_second_across_a_kill_9(tmp_path: Path) -> None:
    """Real time, a few seconds: a seconds-field schedule (an evroute extension) in a worker
    process, killed with -9 and started again: every tick stored once, none twice."""
    import signal
    import subprocess
    import textwrap

    import helpers

    from receiver import Receiver

    sink = Receiver().start()
    try:
        (tmp_path / "routes.yaml").write_text(
            textwrap.dedent(
                f"""
                routes:
                  - {{name: audit, subscriber: "{sink.url}/"}}
                ---
                apiVersion: sources.knative.dev/v1
                kind: PingSource
                metadata: {{name: fast, namespace: ops}}
                spec:
                  schedule: "* * * * * *"
                  data: tick
                  contentType: text/plain
                  sink: {{ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}}}
                """
            )
        )
        worker = helpers.evroute(tmp_path, "worker", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        helpers.wait_until(lambda: len(sink.requests) >= 2, 20, "two ticks delivered")
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        again = helpers.evroute(tmp_path, "worker", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seen = len({r.ce_id for r in sink.requests})
        helpers.wait_until(
            lambda: len({r.ce_id for r in sink.requests}) >= seen + 2, 20, "ticks after restart"
        )
        assert helpers.stop(again) == 0
    finally:
        sink.stop()
    with Store(str(tmp_path / "ev.db")) as store:
        stored = event_log.listing(store, broker="default", type=EVENT_TYPE, limit=100)
    times = [parse_time(s.event.time or "") for s in stored]
    assert len(stored) >= 4
    assert all(t is not None and t == int(t) for t in times)  # whole seconds: the ticks
    assert times == sorted(set(times))  # one event per tick, none twice
    assert {s.event.source for s in stored} == {"/apis/v1/namespaces/ops/pingsources/fast"}
    assert {r.body for r in sink.requests} == {b"tick"}
