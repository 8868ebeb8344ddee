"""The throwaway PostgreSQL of the tests: the same helper ``make service`` uses (tonearm/app/pgcluster.py);
conftest's ``pg_cluster`` (one per session) and ``pg_url`` (a fresh database per test) start it."""

from tonearm.app.pgcluster import PG_BIN, PG_USER, PgCluster, free_port, pg_available, remove_cluster, start_cluster

__all__ = ("PG_BIN", "PG_USER", "PgCluster", "free_port", "pg_available", "remove_cluster", "start_cluster")
