"""``rudder agent``: the decision agent sidecar (serve it, ask it for its statistics)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from rudder.cli.common import UserError, format_table, positive_float, positive_int
from rudder.decisions import DeciderSpec

if TYPE_CHECKING:
    from rudder.protocol import StatsReply


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("agent", help="the decision agent sidecar that trainers ask over ZeroMQ")
    asub = p.add_subparsers(dest="agent_command", metavar="SUBCOMMAND", required=True)
    s = asub.add_parser(
        "serve",
        help="serve a decider to the trainers of this node",
        description="Bind a ZeroMQ ROUTER and answer every trainer's metrics with replace or "
        "skip (protocol: docs/protocol.md). One process per node serves all its trainers; "
        "decisions run in worker threads, at most one per trainer at a time, and metrics "
        "that arrive meanwhile replace the pending ones. Stops on SIGTERM or Ctrl-C.",
    )
    s.add_argument(
        "--bind",
        default=None,
        help="ipc:///path/agent.sock (default: one under $XDG_RUNTIME_DIR or /tmp) or "
        "tcp://127.0.0.1:PORT",
    )
    s.add_argument(
        "--decider",
        required=True,
        help="llm, classifier:PATH, heuristic, always, never or every:P",
    )
    s.add_argument("--workers", type=positive_int, default=1, help="threads calling the decider")
    s.add_argument("--log", type=Path, help="append every decision to FILE as a JSON line")
    s.add_argument("--mode", choices=("async", "sync"), default="async")
    s.add_argument("--llm-url", help="llm: the Ollama-API server (default: the agent's)")
    s.add_argument("--llm-model", help="llm: the model name")
    s.add_argument("--prompt", help="llm: prompt name or directory")
    s.add_argument(
        "--checkpoint",
        type=Path,
        help="the agent's history database (SQLite): a restarted sidecar resumes it",
    )
    s.add_argument("--run-id", help="names each trainer's history thread (<run>:trainer-<rank>)")
    s.add_argument(
        "--decide-timeout",
        type=positive_float,
        default=120.0,
        help="seconds a decision may take before the trainer gets skip (default 120)",
    )
    s.add_argument(
        "--expiry",
        type=positive_float,
        default=300.0,
        help="seconds of silence after which a trainer is forgotten (default 300)",
    )
    s.add_argument(
        "--max-trainers",
        type=positive_int,
        default=256,
        help="trainers tracked at once; a hello beyond is refused with too_many_trainers "
        "(default 256)",
    )
    s.add_argument(
        "--start-llm",
        type=Path,
        metavar="LOG",
        help="llm: if nothing answers at --llm-url on this host, start the embedded server "
        "there (log to LOG) and stop it on exit; how `rudder train --cluster ssh` gives each "
        "host its model",
    )
    s.add_argument("--llm-threads", type=positive_int, default=1, help="with --start-llm")
    s.add_argument("--llm-nice", type=int, default=10, help="with --start-llm: 0..19")
    s.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow binding tcp on a non-loopback address (the protocol has no authentication)",
    )
    s.set_defaults(func=run_serve)

    st = asub.add_parser("stats", help="live statistics of a running agent")
    st.add_argument("--connect", required=True, help="the agent's endpoint (its --bind)")
    st.add_argument("--json", action="store_true", help="print JSON instead of a table")
    st.add_argument("--timeout", type=positive_float, default=2.0, help="seconds to wait")
    st.add_argument(
        "--watch",
        type=positive_float,
        nargs="?",
        const=2.0,
        metavar="SECONDS",
        help="refresh every SECONDS (default 2) until Ctrl-C; an agent that does not answer "
        "is shown as such and asked again",
    )
    st.set_defaults(func=run_stats)


def run_serve(args: argparse.Namespace) -> int:
    from rudder.controller.server import parse_decider

    spec = parse_decider(args.decider)
    if args.start_llm is None or not spec.is_llm:
        return _serve(args, spec)
    from rudder.llm.defaults import DEFAULT_LLM_URL
    from rudder.llm.embedded import llm_available

    # The server first: the agent warms its prompt cache before it answers anyone.
    with llm_available(
        args.llm_url or DEFAULT_LLM_URL,
        args.llm_model,
        threads=args.llm_threads,
        nice=args.llm_nice,
        log_file=args.start_llm,
    ):
        return _serve(args, spec)


def _serve(args: argparse.Namespace, spec: DeciderSpec) -> int:
    from rudder.controller.server import AgentServer, ServerConfig, make_agent
    from rudder.protocol import ipc_endpoint

    options = {
        "llm_url": args.llm_url,
        "llm_model": args.llm_model,
        "prompt": args.prompt,
        "checkpoint": str(args.checkpoint) if args.checkpoint else None,
        "run_id": args.run_id,
        "warm_up": spec.is_llm or None,  # before trainers connect
    }
    agent = make_agent(spec, **{k: v for k, v in options.items() if v is not None})
    config = ServerConfig(
        workers=args.workers,
        mode=args.mode,
        decide_timeout_s=args.decide_timeout,
        expiry_s=args.expiry,
        log_path=args.log,
        allow_remote=args.allow_remote,
        label=args.decider,
        max_trainers=args.max_trainers,
    )
    try:
        server = AgentServer(agent, args.bind or ipc_endpoint(), config)
    except BaseException:
        agent.close()
        raise
    server.run(handle_signals=True)
    return 0


def run_stats(args: argparse.Namespace) -> int:
    if args.watch is None:
        _print_stats(_ask_stats(args), args)
        return 0
    import sys
    import time

    clear = "\x1b[H\x1b[2J" if sys.stdout.isatty() else ""
    try:
        while True:
            try:
                reply = _ask_stats(args)
            except UserError as e:
                reply, why = None, str(e)
            print(f"{clear}{time.strftime('%H:%M:%S')} every {args.watch:g} s (Ctrl-C ends)")
            if reply is None:
                print(f"no answer: {why}")
            else:
                _print_stats(reply, args)
            sys.stdout.flush()
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0


def _ask_stats(args: argparse.Namespace) -> StatsReply:
    from rudder.protocol import ErrorReply, StatsReply, StatsRequest
    from rudder.trainer_hooks.agent_client import ask

    try:
        reply = ask(args.connect, StatsRequest(seq=1), timeout_s=args.timeout)
    except TimeoutError as e:
        raise UserError(str(e)) from None
    if isinstance(reply, ErrorReply):
        raise UserError(f"the agent refused: {reply.reason}: {reply.detail}")
    if not isinstance(reply, StatsReply):
        raise UserError(f"the agent answered {reply.KIND!r} to a stats request")
    return reply


def _print_stats(reply: StatsReply, args: argparse.Namespace) -> None:
    if args.json:
        trainers = {str(k): v for k, v in sorted(reply.trainers.items())}
        print(json.dumps({"server": reply.server, "trainers": trainers}, indent=2))
        return
    srv = reply.server
    print(
        f"agent {srv.get('decider', '?')} on {srv.get('endpoint', args.connect)} "
        f"(pid {srv.get('pid', '?')}, up {srv.get('uptime_s', 0):.0f} s, {srv.get('mode', '?')}): "
        f"{srv.get('decisions', 0)} decisions, {srv.get('replace', 0)} replace, "
        f"{srv.get('failed', 0)} failed, {srv.get('timed_out', 0)} timed out, "
        f"{srv.get('superseded', 0)} superseded, {srv.get('rejected', 0)} rejected"
    )
    errors = srv.get("errors") or {}
    if errors:
        print("rejected, by reason: " + ", ".join(f"{k} {v}" for k, v in sorted(errors.items())))
    columns = ("metrics", "decisions", "replace_pct", "superseded", "failed", "mean_latency_s")
    rows = [
        [tid, *(s.get(c) for c in columns), s["last_seen_s"] if s.get("connected") else "left"]
        for tid, s in sorted(reply.trainers.items())
    ]
    if rows:
        print(format_table(["trainer", *columns, "last_seen_s"], rows))
    if srv.get("not_listed"):  # one reply always fits a message: the busiest are listed
        print(
            f"{srv['not_listed']} more trainers not listed ({srv.get('trainers', '?')} tracked, "
            f"{srv.get('departed', '?')} departed)"
        )
