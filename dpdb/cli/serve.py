"""``dpdb serve``: the web service (TAP at /tap) under uvicorn, until SIGINT or SIGTERM."""

from __future__ import annotations

import click

from ..errors import DpdbError
from ._common import archive, console

__all__ = ["serve"]


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port (0: any free port).")  # fmt: skip
@click.option("--anonymous/--no-anonymous", default=True, show_default=True,
              help="Serve requests without HTTP Basic credentials (as the service's query login); "
              "--no-anonymous: every TAP request needs a reader login (`dpdb db grant-reader`).")  # fmt: skip
@click.option("--allow-upload-host", "allow_upload", multiple=True, metavar="HOST|CIDR",
              help="Let URL uploads read from this host or network although it is not public "
              "(loopback, private, link-local are refused by default); repeatable.")  # fmt: skip
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, anonymous: bool, allow_upload: tuple[str, ...]) -> None:
    """Run the web portal (at /) and the TAP service (IVOA TAP 1.1 at /tap) on this database."""
    import signal
    import socket

    import uvicorn

    from ..service import create_app
    from ..serving import base_url, clear_serving, record_serving
    from ..tap.run import Limits

    arch = archive(ctx)
    arch.up()
    # IPPROTO_TCP given, not 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
    # without it every keep-alive response waits ~40 ms for the client's delayed ACK (Nagle)
    sock = socket.socket(
        socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP
    )
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        raise DpdbError(f"cannot listen on {host}:{port}: {e.strerror}") from e
    sock.listen(2048)  # from here clients wait in the backlog until the app has started, never refused
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    # one URL on the line (scripts grep it): the portal is at / of the same address
    console.print(
        f"dpdb TAP service at http://{shown}:{bound}/tap  (web portal at /; Ctrl-C stops it)", highlight=False
    )
    app = create_app(arch, limits=Limits(anonymous=anonymous, upload_url_allow=allow_upload))
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)  # on SIGINT/SIGTERM: stops accepting, finishes requests, shuts down
    stopped_by: list[int] = []

    def stop(signum: int, _frame: object) -> None:
        # Before uvicorn's own handlers are in place (startup) a signal still stops it; after its
        # shutdown uvicorn raises the signal again, and this turns that into a clean exit 0.
        stopped_by.append(signum)
        server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    try:  # `dpdb cite show` names the landing pages of the running portal
        record_serving(arch.settings, base_url(host, bound))
    except OSError as e:
        console.print(f"note: cannot record the portal's address in {arch.settings.home} ({e.strerror})")
    try:
        server.run(sockets=[sock])
    finally:
        clear_serving(arch.settings)
    how = f" ({signal.Signals(stopped_by[0]).name})" if stopped_by else ""
    console.print(f"dpdb TAP service stopped{how}", highlight=False)
