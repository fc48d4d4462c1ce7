"""The rules engine: one module per rule (see base.Rule), evaluated set-based over the mirror."""
