"""The store: consumes the EVENTS/ALERTS streams into SQLite or PostgreSQL and answers queries."""
