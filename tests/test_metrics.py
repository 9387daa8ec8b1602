"""Prometheus metrics: names, labels and values as a scraper parses them."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from evroute.worker.metrics import LATENCY_BUCKETS, Metrics


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, content_type = metrics.render()
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    out = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for s in family.samples:
            if not s.name.endswith("_created"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_every_method_lands_in_its_series() -> None:
    m = Metrics()
    m.published("default")
    m.published("default", 4)
    m.published("orders", 0)  # nothing stored: no series
    m.delivered("inventory", "default", 0.0004)
    m.delivered("inventory", "default", 0.2)
    m.delivered("payment", "default", 45.0)
    m.failed("payment", "default")
    m.failed("payment", "default")
    m.retried("payment", "default")
    m.dead_lettered("payment", "default")
    m.set_in_flight("inventory", "default", 7)
    m.set_in_flight("inventory", "default", 3)
    m.set_lag("inventory", "default", 120)
    got = samples(m)
    inv = (("broker", "default"), ("route", "inventory"))
    pay = (("broker", "default"), ("route", "payment"))
    assert got[("evroute_events_published_total", (("broker", "default"),))] == 5
    assert not any(labels == (("broker", "orders"),) for _, labels in got)
    assert got[("evroute_deliveries_total", inv)] == 2
    assert got[("evroute_deliveries_total", pay)] == 1
    assert got[("evroute_delivery_failures_total", pay)] == 2
    assert got[("evroute_retries_scheduled_total", pay)] == 1
    assert got[("evroute_dead_letters_total", pay)] == 1
    assert got[("evroute_in_flight", inv)] == 3
    assert got[("evroute_lag_events", inv)] == 120
    assert got[("evroute_delivery_latency_seconds_count", inv)] == 2
    assert abs(got[("evroute_delivery_latency_seconds_sum", inv)] - 0.2004) < 1e-9
    bucket = "evroute_delivery_latency_seconds_bucket"
    assert got[(bucket, (*inv[:1], ("le", "0.001"), inv[1]))] == 1
    assert got[(bucket, (*inv[:1], ("le", "0.25"), inv[1]))] == 2
    assert got[(bucket, (*pay[:1], ("le", "30.0"), pay[1]))] == 0  # 45 s is past the last bucket
    assert got[(bucket, (*pay[:1], ("le", "+Inf"), pay[1]))] == 1


def test_buckets_run_from_a_millisecond_to_thirty_seconds() -> None:
    assert LATENCY_BUCKETS[0] == 0.001 and LATENCY_BUCKETS[-1] == 30.0
    assert list(LATENCY_BUCKETS) == sorted(LATENCY_BUCKETS)
    m = Metrics()
    m.delivered("r", "default", 0.01)
    les = [labels for name, labels in samples(m) if name.endswith("_bucket")]
    assert [dict(labels)["le"] for labels in les] == [repr(b) for b in LATENCY_BUCKETS] + ["+Inf"]


def test_instances_do_not_share_a_registry() -> None:
    a, b = Metrics(), Metrics()
    a.published("default", 3)
    assert samples(a)[("evroute_events_published_total", (("broker", "default"),))] == 3
    assert not any(name == "evroute_events_published_total" for name, _ in samples(b))
    # a fresh instance renders the families with no series and still parses
    assert b"# TYPE evroute_delivery_latency_seconds histogram" in b.render()[0]
