"""`gateway serve`, `validate`, `config-checksum`, `key`, `cache-eval`, `cache-data`, `cache-train`,
`router-data`, `router-train`, `router-calibrate` and `router-eval`."""

from __future__ import annotations

import argparse
import logging
import math
import os
import socket
import sys

from gateway import config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway", description="An OpenAI-compatible LLM gateway.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", default=None, help="YAML config file (default: $GATEWAY_CONFIG, else config/gateway.yaml)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--fd", type=int, default=None, help="serve on this inherited listening socket (socket activation)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (each loads the config)")
    serve.add_argument("--admin-port", type=int, default=None, help="the admin listener's port (default: admin.port)")
    serve.add_argument("--admin-fd", type=int, default=None, help="serve the admin API on this inherited listening socket")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    validate = commands.add_parser("validate", help="check config files; print every problem")
    validate.add_argument("files", nargs="+")
    checksum = commands.add_parser(
        "config-checksum", help="a hash of a config file's start-only settings (for a pod annotation that rolls the replicas)"
    )
    checksum.add_argument("file")

    evaluate = commands.add_parser("cache-eval", help="precision and recall of the semantic cache on labelled pairs")
    evaluate.add_argument("file", help='JSON lines: {"a": ..., "b": ..., "same": true|false, "kind": ..., "source": ...}')
    evaluate.add_argument("--source", action="append", default=[], help="only the pairs of this source (repeatable)")
    evaluate.add_argument("--threshold", type=float, default=None, help="the cosine floor; default: cache.threshold of --config")
    evaluate.add_argument("--target", type=float, default=None, help="default: cache.target_false_hit_rate of --config")
    evaluate.add_argument("--no-verifier", action="store_true", help="cosine and rules only (cache.verifier: false)")
    evaluate.add_argument("--config", default=None, help="default: as for serve")
    evaluate.add_argument("--json", action="store_true", help="the figures at the operating point as one JSON object")
    data = commands.add_parser("cache-data", help="write the generated training pairs of the cache verifier")
    data.add_argument("--out", default="-", help="a JSON lines file (default: standard output)")
    data.add_argument("--per-family", type=int, default=200)
    learn = commands.add_parser("cache-train", help="train the cache verifier and calibrate it (minutes on a CPU)")
    learn.add_argument("--out", default="config/cache", help="where verifier.safetensors and verifier.json go")
    learn.add_argument("--epochs", type=int, default=2)

    router_train = commands.add_parser("router-train", help="fit the complexity classifier on labelled prompts")
    router_train.add_argument(
        "files", nargs="+", help='JSON lines: {"prompt" or "messages", "tier", "split": "train"|"test"}; each file\'s train rows'
    )
    router_train.add_argument("--out", default="config/router/model.json", help="where the classifier is written")
    router_train.add_argument("--tiers", default=None, help="tier names, smallest first, comma-separated")
    router_train.add_argument(
        "--no-generated", action="store_true", help="leave out the rows generated from evals/router-seeds/ (`router-data`)"
    )
    router_train.add_argument(
        "--log", action="append", default=[], help="a routing log (routing_log.path) whose outcomes label requests; repeatable"
    )
    router_train.add_argument(
        "--escalations", action="store_true", help="also learn from requests a larger tier answered after the pools failed"
    )
    router_data = commands.add_parser("router-data", help="write the router's generated training rows (from evals/router-seeds/)")
    router_data.add_argument("--out", default="-", help="a JSON lines file (default: standard output)")
    router_data.add_argument("--seed", type=int, default=0)

    router_eval = commands.add_parser("router-eval", help="accuracy, under/over-routing and cost of a router, with baselines")
    router_eval.add_argument("file", help="labelled prompts (the test rows are scored)")
    router_eval.add_argument("--source", action="append", default=[], help="score only this source's test rows (repeatable)")
    router_eval.add_argument("--config", default=None, help="default: as for serve")
    router_eval.add_argument("--router", default="auto")
    router_eval.add_argument("--bias", type=float, default=None, help="default: the router's")
    router_eval.add_argument("--train-file", default=None, help="fit the baselines on this file's train rows (default: FILE's)")
    router_eval.add_argument("--label", default="tier", help="the column with the tier each row needs (e.g. tier_b)")
    router_eval.add_argument("--by", default="kind", help="also report by this column (default: kind)")
    router_eval.add_argument("--json", action="store_true", help="the figures as one JSON object")
    router_eval.add_argument("--sweep", action="store_true", help="cost against under-routing across the bias knob")
    router_eval.add_argument("--scores", default=None, help="write each row's score and chosen tier to this file")

    router_calibrate = commands.add_parser(
        "router-calibrate", help="place a router's tier boundaries from your own labelled prompts (a few dozen)"
    )
    router_calibrate.add_argument("file", help='JSON lines: {"prompt" or "messages", "tier"}; every row is used')
    router_calibrate.add_argument("--config", default=None, help="default: as for serve")
    router_calibrate.add_argument("--router", default="auto")
    router_calibrate.add_argument("--under", type=float, default=0.05, help="the most under-routing allowed (default 0.05)")
    router_calibrate.add_argument("--label", default="tier", help="the column with the tier each row needs")
    router_calibrate.add_argument("--out", default=None, help="where the calibrated classifier goes (default: beside the config)")

    key = commands.add_parser("key", help="make a client key for auth.keys, or hash one")
    key.add_argument("action", choices=["new", "hash"], help="new: a fresh key and its hash; hash: hash a key from stdin")

    args = parser.parse_args(argv)
    if getattr(args, "config", "") is None:
        try:
            args.config = config.default_path()
        except config.ConfigError as exc:
            print(str(exc), file=sys.stderr)
            return 1
    if args.command == "key":
        return _key(args.action)
    if args.command == "config-checksum":
        from pathlib import Path

        print(config.start_only_checksum(Path(args.file).read_bytes()))
        return 0
    if args.command == "validate":
        return _validate(args.files)
    if args.command == "cache-eval":
        return _cache_eval(args)
    if args.command == "cache-data":
        return _cache_data(args)
    if args.command == "cache-train":
        return _cache_train(args)
    if args.command == "router-train":
        from pathlib import Path

        from gateway.offline.router_training import train_command

        tiers = args.tiers.split(",") if args.tiers else None
        logs = [Path(f) for f in args.log]
        print(train_command([Path(f) for f in args.files], Path(args.out), tiers, not args.no_generated, logs, args.escalations))
        return 0
    if args.command == "router-data":
        from pathlib import Path

        from gateway.offline.router_data import generate, write

        write(generate(seed=args.seed), None if args.out == "-" else Path(args.out))
        return 0
    if args.command == "router-calibrate":
        return _router_calibrate(args)
    if args.command == "router-eval":
        return _router_eval(args)
    return _serve(args)


def _key(action: str) -> int:
    """Prints what `auth.keys` needs; the key itself goes to the client and nowhere else."""
    from gateway.access.keys import hash_key, new_key

    if action == "new":
        secret = new_key()
        print(f"key:      {secret}\nkey_hash: {hash_key(secret)}")
        return 0
    secret = sys.stdin.readline().strip()
    if not secret:
        print("gateway key hash: give the key on stdin", file=sys.stderr)
        return 2
    print(hash_key(secret))
    return 0


def _validate(files: list[str]) -> int:
    failed = False
    for path in files:
        try:
            loaded = config.load(path)
        except config.ConfigError as exc:
            failed = True
            print(str(exc), file=sys.stderr)
            print(f"{path}: INVALID ({len(exc.problems)} problem{'s' if len(exc.problems) != 1 else ''})", file=sys.stderr)
        else:
            print(f"{path}: OK (version {loaded.version}, {len(loaded.settings.pools)} pools)")
    return 1 if failed else 0


def _cache_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gateway.offline.cache_eval import run

    settings = config.load(args.config).settings.cache
    floor = args.threshold if args.threshold is not None else settings.threshold
    target = args.target if args.target is not None else settings.target_false_hit_rate
    verifier = settings.verifier and not args.no_verifier
    print(run(Path(args.file), floor, target, args.source, as_json=args.json, verifier=verifier))
    return 0


def _cache_data(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gateway.offline.cache_data import augment, generate, write
    from gateway.offline.cache_eval import read_pairs
    from gateway.offline.verifier_training import HANDWRITTEN

    pairs = generate(per_family=args.per_family) + augment(read_pairs(HANDWRITTEN))
    write(pairs, Path("/dev/stdout" if args.out == "-" else args.out))
    if args.out != "-":
        print(f"{args.out}: {len(pairs)} pairs")
    return 0


def _cache_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gateway.offline.verifier_training import run

    run(Path(args.out), epochs=args.epochs)
    return 0


def _load(path: str) -> config.LoadedConfig | None:
    """The config file, or None with its problems printed."""
    try:
        return config.load(path)
    except config.ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return None


def _router_calibrate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gateway.offline.router_training import calibrate_command

    if (loaded := _load(args.config)) is None:
        return 1
    folder = Path(loaded.source).parent if loaded.source and Path(loaded.source).exists() else Path.cwd()
    out = Path(args.out) if args.out else folder / f"router-{args.router}-calibrated.json"
    print(calibrate_command(Path(args.file), loaded, args.router, out, args.under, args.label))
    return 0


def _router_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gateway.offline.router_training import EvalOptions, eval_command

    if (loaded := _load(args.config)) is None:
        return 1
    options = EvalOptions(
        bias=args.bias,
        train_file=Path(args.train_file) if args.train_file else None,
        sources=args.source,
        label=args.label,
        by=args.by,
        as_json=args.json,
        sweep=args.sweep,
        scores_out=Path(args.scores) if args.scores else None,
    )
    print(eval_command(Path(args.file), loaded, args.router, options))
    return 0


def _serve(args: argparse.Namespace) -> int:
    try:
        settings = config.load(args.config).settings
    except config.ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    server = settings.server
    import msgspec
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from gateway.http import server as server_bounds
    from gateway.http.admin import ADMIN_LISTENER_ENV
    from gateway.http.server import GuardedProtocol

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # never log request URLs per call
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # it tells of every CPU build it did not find
    os.environ["GATEWAY_CONFIG"] = os.path.abspath(args.config) if args.config else config.default_path()
    os.environ[server_bounds.ENV] = msgspec.json.encode(server).decode()  # read by each worker's protocol
    if args.fd is not None:
        _no_delay(args.fd)
    uv = uvicorn.Config(
        "gateway.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        fd=args.fd,
        workers=args.workers,
        loop="uvloop",
        http=GuardedProtocol,
        timeout_keep_alive=server.keep_alive_timeout_s,
        lifespan="on",
        access_log=False,
        proxy_headers=bool(server.forwarded_allow_ips),  # uvicorn's default trusts any loopback peer
        forwarded_allow_ips=server.forwarded_allow_ips or None,
        log_level=args.log_level,
        timeout_graceful_shutdown=math.ceil(server.drain_timeout_s) + 2,  # streams end at drain_timeout_s (gateway.http.drain)
    )
    log = logging.getLogger("gateway")
    if args.fd is not None:
        traffic = socket.socket(fileno=args.fd)
        log.info("serving the API on %s", _address(traffic))
    else:
        traffic = uv.bind_socket()  # logs where
    listeners = [traffic]
    os.environ.pop(ADMIN_LISTENER_ENV, None)
    if settings.admin.enabled or args.admin_fd is not None:
        try:
            admin = _admin_listener(settings.admin.host, settings.admin.port, args)
        except OSError as exc:
            print(f"admin.port: cannot listen on {settings.admin.host}:{args.admin_port or settings.admin.port}: {exc}",
                  file=sys.stderr)  # fmt: skip
            return 1
        if _port(admin) is None:
            print("--admin-fd: the admin listener must be a TCP socket", file=sys.stderr)
            return 1
        if _port(admin) == _port(traffic):
            print("admin.port: the admin listener needs a port of its own, not the traffic port", file=sys.stderr)
            return 1
        wide = not config.is_loopback(admin.getsockname()[0])
        if wide and settings.admin.key() is None:
            print(f"admin.api_key: the admin listener {_address(admin)} is beyond loopback and needs a key", file=sys.stderr)
            return 1
        os.environ[ADMIN_LISTENER_ENV] = f"{_port(admin)} wide" if wide else str(_port(admin))
        log.info("serving the admin API on %s", _address(admin))
        listeners.append(admin)
    try:
        if uv.workers > 1:
            Multiprocess(uv, sockets=listeners).run()
            return 0
        process = uvicorn.Server(uv)
        process.run(sockets=listeners)
    except KeyboardInterrupt:
        return 0
    return 0 if process.started else 3  # 3: the application did not start (uvicorn's code)


def _port(listener: socket.socket) -> int | None:
    return listener.getsockname()[1] if listener.family in (socket.AF_INET, socket.AF_INET6) else None


def _address(listener: socket.socket) -> str:
    name = listener.getsockname()
    if listener.family == socket.AF_INET6:
        return f"http://[{name[0]}]:{name[1]}"
    return f"http://{name[0]}:{name[1]}" if listener.family == socket.AF_INET else str(name)


def _admin_listener(host: str, port: int, args: argparse.Namespace) -> socket.socket:
    """The admin API's own listening socket: inherited (`--admin-fd`) or bound here."""
    if args.admin_fd is not None:
        _no_delay(args.admin_fd)
        return socket.socket(fileno=args.admin_fd)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.bind((host, args.admin_port if args.admin_port is not None else port))
    listener.set_inheritable(True)
    return listener


def _no_delay(fd: int) -> None:
    """Turn Nagle's algorithm off on an inherited TCP listening socket; its connections inherit that.
    uvicorn takes an inherited fd for a Unix socket, so its connections would not get TCP_NODELAY,
    and an answer written in two parts (head, body) would wait ~40 ms for the client's delayed ACK."""
    listener = socket.socket(fileno=os.dup(fd))
    try:
        if listener.family in (socket.AF_INET, socket.AF_INET6):
            listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    finally:
        listener.close()


if __name__ == "__main__":
    sys.exit(main())
