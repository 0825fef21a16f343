"""`pde-zoo explore`: a local web page that shows an image flowing through a model's blocks as a
PDE evolves, with the physics of the block under the slider (docs/explore.md).

The server is the standard library's `http.server` and the page is plain HTML / JavaScript /
SVG / canvas shipped in `pde_zoo/explore/static/`: no third-party package, nothing fetched from
outside, so it works offline and from a wheel (no `explore` extra is needed). Every number on the
page is computed by pde_zoo (`pde_zoo.explore.views`); the page only draws.

- `add_parser(subparsers)`: adds the `explore` subcommand to `pde-zoo`'s parser;
- `serve(models=None, host="127.0.0.1", port=8765, open_browser=True, allow_remote=False)`;
- `pde_zoo.explore.server.serve_in_thread(...)` -> (server, url), for tests and notebooks.
"""

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def serve(models=None, host=DEFAULT_HOST, port=DEFAULT_PORT, open_browser=True, allow_remote=False):
    """Serve the explorer until Ctrl-C.

    Raises:
        ValueError: unknown model names, a non-loopback host without allow_remote, a port in use.
    """
    import sys
    import threading

    from pde_zoo.explore.server import make_server, url_of

    server = make_server(host=host, port=port, models=models, allow_remote=allow_remote)
    url = url_of(server)
    names = server.explorer.names
    print(f"pde-zoo explore: {url}  ({len(names)} models: {', '.join(names[:6])}{' …' if len(names) > 6 else ''}; Ctrl-C stops)", flush=True)
    if not (host in ("127.0.0.1", "localhost", "::1")):
        print(f"pde-zoo explore: listening on {host}, reachable from other machines (--allow-remote); there is no authentication.", file=sys.stderr)
    if open_browser:
        import webbrowser

        threading.Timer(0.3, lambda: webbrowser.open(url)).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("pde-zoo explore: stopped", flush=True)
    finally:
        server.server_close()


def _cmd_explore(args):
    serve(args.models or None, host=args.host, port=args.port, open_browser=not args.no_browser, allow_remote=args.allow_remote)


def add_parser(subparsers):
    """Add `pde-zoo explore [MODEL ...] [--host H] [--port P] [--no-browser] [--allow-remote]`."""
    p = subparsers.add_parser(
        "explore", help="local web page: a test or drawn image through the blocks, ψ per block, the physics of each block",
        description="Start a local web page (loopback only by default) showing ψ after every block / output time of a "
                    "pretrained model, its prediction, and the physics of the block under the slider.",
    )
    p.add_argument("models", nargs="*", metavar="MODEL", help="models to offer (default: every pretrained preset); the first is shown first")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST}; another needs --allow-remote)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free port)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host (no authentication: your network sees it)")
    p.set_defaults(func=_cmd_explore)
    return p
