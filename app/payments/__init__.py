"""Expected payments: the deal fields an account names for them, and the report per manager."""
