"""Prometheus metrics, one registry per process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

registry = CollectorRegistry()

requests_total = Counter(
    "hookbay_requests_total", "Requests at ingest URLs by source and verdict", ["source", "verdict"], registry=registry
)
unknown_tokens_total = Counter(
    "hookbay_unknown_token_total", "Requests to ingest URLs naming no active source", registry=registry
)
ack_seconds = Histogram(
    "hookbay_ack_seconds", "Time from request start to durable acknowledgement", registry=registry,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
storage_errors_total = Counter(
    "hookbay_storage_errors_total", "Ingest requests answered 503 because storage failed", registry=registry
)
queue_depth = Gauge("hookbay_queue_depth", "Processing jobs not yet finished", registry=registry)
processing_lag_seconds = Histogram(
    "hookbay_processing_lag_seconds", "Time from receipt to processed", registry=registry,
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
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

_request_counters: dict[tuple[str, str], Counter] = {}


def count_request(source_id: str, verdict: str) -> None:
    """``requests_total.labels(...)`` takes a lock and builds a key on every call; on the ingest
    path the labelled child is looked up once per source and verdict."""
    child = _request_counters.get((source_id, verdict))
    if child is None:
        child = _request_counters[(source_id, verdict)] = requests_total.labels(source_id, verdict)
    child.inc()
