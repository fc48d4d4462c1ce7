"""The head of sales dashboard: pages, access, read-only links."""
