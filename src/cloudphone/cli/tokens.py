"""``cloudphone token``: issue bearer tokens for the API."""

from __future__ import annotations

from typing import Annotated

import typer

from cloudphone.cli._shared import EXIT_USAGE, fail, load
from cloudphone.domain import Role

app = typer.Typer(help="Bearer tokens for the API.", no_args_is_help=True)


@app.command()
def create(
    user: Annotated[str, typer.Option("--user", "-u", help="User id (the token's subject).")],
    role: Annotated[Role, typer.Option("--role", "-r", help="user or admin.")] = Role.USER,
    ttl: Annotated[
        str | None,
        typer.Option(help="Lifetime: 30m, 12h, 7d … [CLOUDPHONE_TOKEN_TTL, default 12h]."),
    ] = None,
) -> None:
    """Print a signed token (HS256, the platform's JWT secret) for USER acting as ROLE.

    Use it as `Authorization: Bearer <token>`.
    """
    from cloudphone.api.auth import issue_token
    from cloudphone.config import parse_duration

    settings = load()
    lifetime = settings.token_ttl
    if ttl is not None:
        try:
            lifetime = parse_duration(ttl)
        except ValueError as error:
            fail(f"--ttl: {error}", EXIT_USAGE)
    assert settings.jwt_secret is not None  # load_settings always fills it
    try:
        token = issue_token(
            settings.jwt_secret.get_secret_value(),
            user,
            role,
            ttl=lifetime,
            issuer=settings.jwt_issuer,
        )
    except ValueError as error:
        fail(str(error), EXIT_USAGE)
    typer.echo(token)
