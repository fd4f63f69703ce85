"""Shared moto AWS per module for the security suites (bootstrapping every table is slow)."""

from tests.reliability.conftest import module_aws, module_http, module_tokens  # noqa: F401
