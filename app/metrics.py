"""Prometheus metrics. Labels never carry keys, tokens or ids of people."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

WEBHOOKS = Counter("crmwatch_webhooks_total", "Webhook deliveries by CRM and outcome", ["crm", "outcome"])
INBOX_PROCESSED = Counter("crmwatch_inbox_processed_total", "Inbox rows processed", ["source", "outcome"])
INBOX_PENDING = Gauge("crmwatch_inbox_pending", "Inbox rows waiting for the worker (last seen)")
INBOX_APPLY_SECONDS = Histogram(
    "crmwatch_inbox_batch_seconds",
    "Time to claim, apply and commit one inbox batch (before its re-evaluation)",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
# Per account by its numeric id (never its name or key: the labels stay safe to share).
INBOX_DEPTH = Gauge("crmwatch_inbox_depth", "Inbox rows not applied yet, per account", ["account_id"])
INBOX_OLDEST_AGE = Gauge(
    "crmwatch_inbox_oldest_age_seconds", "Age of the oldest inbox row not applied yet, per account", ["account_id"]
)
INBOX_APPLY_RATE = Gauge("crmwatch_inbox_apply_rate", "Inbox rows applied per second over the last minute, all workers")
SYNC_ITEMS = Counter("crmwatch_sync_items_total", "Records read by backfills", ["crm", "section"])
HTTP_LATENCY = Histogram(
    "crmwatch_http_request_seconds",
    "HTTP request latency",
    ["route", "status"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
