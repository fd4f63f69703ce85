"""``python -m infra.admin_key``: issues the first admin API key of a deployed stage.

A fresh stack has no keys, and every route except ``/health`` needs one. This writes an admin key
straight into the stage's API-keys table with your AWS credentials (``dynamodb:PutItem`` on it)
and prints the token once; further keys are created with ``POST /auth/keys``.

    AWS_REGION=eu-west-1 .venv/bin/python -m infra.admin_key --stage prod --principal you@x.org
"""

from __future__ import annotations

import argparse
import os
import sys


def create_admin_key(principal: str, description: str = "bootstrap admin") -> tuple[str, str]:
    """Creates an admin key in the table the current environment names.

    Returns:
        ``(key_id, token)``; the token is not stored anywhere and cannot be shown again.
    """
    from chalicelib.auth.service import AuthService

    issued = AuthService().create_key(principal, ["admin"], description=description)
    return issued.key.key_id, issued.token


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description="Issue an admin API key for a deployed stage.")
    parser.add_argument("--stage", default="prod")
    parser.add_argument("--principal", required=True, help="who the key belongs to")
    args = parser.parse_args(argv)

    from infra.package import apply_environment, stage_environment

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        print("set AWS_REGION to the stack's region", file=sys.stderr)
        return 2
    apply_environment(stage_environment(args.stage), region)
    key_id, token = create_admin_key(args.principal)
    print(f"admin key {key_id} for {args.principal} (shown once):\n{token}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
