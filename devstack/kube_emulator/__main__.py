"""`python -m devstack.kube_emulator --port 6443 --kubeconfig PATH [--state-file PATH] [--ready-delay S]`."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from .emulator import Emulator
from .tokens import DEFAULT_ISSUER, MIN_EXPIRATION_SECONDS


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devstack.kube_emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6443, help="0 picks a free port")
    parser.add_argument("--kubeconfig", help="write a kubeconfig for the host cluster here")
    parser.add_argument("--state-file", help="persist all clusters here and reload them on start")
    parser.add_argument("--ready-delay", type=float, default=0.5, help="seconds until deployments are ready")
    parser.add_argument("--history-size", type=int, default=1000, help="watch events kept per cluster")
    parser.add_argument("--advertise-url", help="server URL written into kubeconfigs (default http://HOST:PORT)")
    parser.add_argument("--token-issuer", default=DEFAULT_ISSUER, help="iss of service account tokens")
    parser.add_argument(
        "--min-token-expiration-seconds",
        type=int,
        default=MIN_EXPIRATION_SECONDS,
        help="shortest TokenRequest accepted (kube-apiserver: 600)",
    )
    parser.add_argument("--tls-dir", help="serve https with a CA and certificate kept here (ca.crt for clients)")
    parser.add_argument("--log-level", default="INFO")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = argument_parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    emulator = Emulator(
        port=args.port,
        host=args.host,
        ready_delay=args.ready_delay,
        state_file=args.state_file,
        history_size=args.history_size,
        advertise_url=args.advertise_url,
        token_issuer=args.token_issuer,
        min_token_expiration_seconds=args.min_token_expiration_seconds,
        tls_dir=args.tls_dir,
    ).start()
    if args.kubeconfig:
        emulator.write_kubeconfig(args.kubeconfig)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stop.wait()
    emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
