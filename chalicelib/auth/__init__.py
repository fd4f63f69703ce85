"""API-key authentication and role-based authorization."""
