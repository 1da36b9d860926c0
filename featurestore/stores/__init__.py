"""Storage: offline (Delta Lake) and online (Redis, embedded SQLite, in-memory) stores."""
