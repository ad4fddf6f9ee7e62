"""Alembic environment and revisions for Eventwire's SQL schema (PostgreSQL and SQLite)."""
