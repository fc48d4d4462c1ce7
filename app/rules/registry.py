"""Every rule, found by looking for a module-level RULE in app/rules/: adding a rule is adding a module."""

from __future__ import annotations

import importlib
import pkgutil

import app.rules as package

from .base import Rule

# The engine's own modules live beside the rules; everything else in app/rules/ is a rule.
FRAMEWORK = {"base", "config", "endpoints", "engine", "models", "registry"}


def _discover() -> dict[str, Rule]:
    found: dict[str, Rule] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name in FRAMEWORK:
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        rule = getattr(module, "RULE", None)
        if not isinstance(rule, Rule):
            raise RuntimeError(f"app/rules/{info.name}.py defines no RULE")
        if rule.name in found:
            raise RuntimeError(f"two rules are named {rule.name!r}")
        found[rule.name] = rule
    return found


RULES: dict[str, Rule] = _discover()
