"""Reports: set-based figures over the mirror, the calls and the findings."""
