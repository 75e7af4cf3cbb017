"""Prometheus metrics, one registry per process."""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

registry = CollectorRegistry()

ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class IngestCollector(Collector):
    """``hookbay_requests_total`` and ``hookbay_ack_seconds``, counted in plain ints on the ingest
    path and turned into metric families only when scraped. prometheus_client's own Counter and
    Histogram take a lock per update (two for a histogram), which on the event loop thread cost
    about 5% of each acknowledged request. Only the event loop thread updates these."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str], int] = {}
        self.ack_buckets = [0] * (len(ACK_BUCKETS) + 1)
        self.ack_sum = 0.0

    def count_request(self, source_id: str, verdict: str) -> None:
        key = (source_id, verdict)
        self.requests[key] = self.requests.get(key, 0) + 1

    def observe_ack(self, seconds: float) -> None:
        self.ack_buckets[bisect.bisect_left(ACK_BUCKETS, seconds)] += 1
        self.ack_sum += seconds

    def collect(self) -> Iterator[Metric]:
        req = CounterMetricFamily("hookbay_requests", "Requests at ingest URLs by source and verdict",
                                  labels=["source", "verdict"])
        for (source, verdict), n in list(self.requests.items()):
            req.add_metric([source, verdict], n)
        yield req
        cumulative, total = [], 0
        for bound, n in zip((*(str(float(b)) for b in ACK_BUCKETS), "+Inf"), self.ack_buckets, strict=True):
            total += n
            cumulative.append((bound, total))
        yield HistogramMetricFamily("hookbay_ack_seconds", "Time from request start to durable acknowledgement",
                                    buckets=cumulative, sum_value=self.ack_sum)


ingest = IngestCollector()
registry.register(ingest)
count_request = ingest.count_request
observe_ack = ingest.observe_ack

unknown_tokens_total = Counter(
    "hookbay_unknown_token_total", "Requests to ingest URLs naming no active source", registry=registry
)
storage_errors_total = Counter(
    "hookbay_storage_errors_total", "Ingest requests answered 503 because storage failed", registry=registry
)
queue_depth = Gauge("hookbay_queue_depth", "Processing jobs not yet finished", registry=registry)
processing_delay_seconds = Histogram(
    "hookbay_processing_delay_seconds", "Time from receipt to processed", registry=registry,
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
processing_lag_seconds = Gauge(
    "hookbay_processing_lag_seconds", "Age of the oldest processing job that is due (0 when none)", registry=registry)
jobs_failed_total = Counter("hookbay_jobs_failed_total", "Requests that processing gave up on, by reason",
                            ["reason"], registry=registry)
job_retries_total = Counter("hookbay_job_retries_total", "Processing jobs put back for a later attempt",
                            registry=registry)
worker_errors_total = Counter("hookbay_worker_errors_total", "Worker cycles or jobs that raised unexpectedly",
                              registry=registry)
write_retries_total = Counter("hookbay_write_retries_total",
                              "Write transactions run again after losing a race (deadlock, concurrent merge)",
                              registry=registry)
processed_total = Counter("hookbay_processed_total", "Requests processed by outcome", ["state"], registry=registry)
deliveries_total = Counter(
    "hookbay_deliveries_total", "Delivery attempts by action type and resulting state", ["action", "state"],
    registry=registry,
)
deliveries_pending = Gauge("hookbay_deliveries_pending", "Deliveries waiting or running", registry=registry)
dead_letters = Gauge("hookbay_dead_letters", "Deliveries in the dead-letter state", registry=registry)
relay_ready = Gauge("hookbay_relay_ready", "Relay messages not yet acknowledged by an agent", ["source"],
                    registry=registry)
relay_pruned_total = Counter("hookbay_relay_pruned_total", "Acked relay messages deleted after their retention",
                             registry=registry)
