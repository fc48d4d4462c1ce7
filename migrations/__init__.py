"""Alembic migrations, shipped inside the package so `crmwatch migrate` works from any install."""
