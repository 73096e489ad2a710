"""Prometheus counters of the gateway (served on /metrics with the rest of the dashboard's metrics).

Reads are counted here instead of being audited one by one; every write is in the audit log instead.
"""

from __future__ import annotations

from prometheus_client import Counter

GATEWAY_READS = Counter(
    "dashboard_gateway_reads_total",
    "Read calls (list, retrieve, stats) the gateway passed to the Work API, by operation and HTTP status returned.",
    ["operation", "status"],
)
GATEWAY_WRITES = Counter(
    "dashboard_gateway_writes_total",
    "Metadata updates and stops the gateway passed to the Work API, by operation and HTTP status returned.",
    ["operation", "status"],
)
GATEWAY_REFUSALS = Counter(
    "dashboard_gateway_refusals_total",
    "Calls the gateway answered itself without asking the Work API, by why "
    "(unauthenticated, rate_limited, forbidden, no_reason, not_found, bad_request, upstream_unreachable).",
    ["why"],
)
