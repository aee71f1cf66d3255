"""Database: one schema (SQLAlchemy Core) for SQLite and PostgreSQL, Alembic migrations."""
