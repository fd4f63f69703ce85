"""Shared infrastructure: configuration, AWS clients, errors, HTTP toolkit, events, auth."""
