"""The morning digest: yesterday's fact, today's plan, the pace and the oldest critical findings, per account."""
