"""``rudder llm``: the embedded Ollama-compatible LLM server."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from rudder.cli.common import UserError, positive_float, positive_int
from rudder.llm.defaults import (
    DEFAULT_LLM_HOST,
    DEFAULT_LLM_PORT,
    llm_model_from_env,
    llm_url_from_env,
)
from rudder.prompts import DEFAULT_PROMPT


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("llm", help="serve a local LLM behind the Ollama HTTP API")
    lsub = p.add_subparsers(dest="llm_command", metavar="SUBCOMMAND", required=True)
    s = lsub.add_parser(
        "serve",
        help="serve a model over the Ollama API (what ChatOllama and `ollama` talk to)",
        description="Load one model with llama.cpp and serve /api/version, /api/tags, "
        "/api/show, /api/ps, /api/chat and /api/generate like Ollama does. --parallel requests "
        "decode side by side and reuse the cached prompt prefix. Binds 127.0.0.1 unless --host "
        "says otherwise. Slow or idle connections are closed after the timeouts below. Stops on "
        "SIGTERM or Ctrl-C.",
    )
    s.add_argument(
        "--model",
        default=None,
        help="a model name from `rudder models list` (default: the agent's) or a .gguf path",
    )
    s.add_argument("--host", default=DEFAULT_LLM_HOST)
    s.add_argument("--port", type=int, default=DEFAULT_LLM_PORT)
    s.add_argument("--threads", type=positive_int, default=2)
    s.add_argument("--ctx", type=positive_int, default=2048, help="context size per slot, tokens")
    s.add_argument(
        "--parallel",
        type=positive_int,
        default=2,
        help="slots decoded side by side: a request never waits for another's whole answer",
    )
    s.add_argument(
        "--nice",
        type=int,
        default=0,
        help="lower the server's CPU priority by N (0-19): on a host that also trains, training "
        "keeps the CPU and decisions take longer",
    )
    s.add_argument(
        "--max-connections",
        type=positive_int,
        default=1000,
        help="open connections; at the cap a new one closes the oldest idle one",
    )
    s.add_argument(
        "--header-timeout",
        type=positive_float,
        default=10.0,
        help="seconds a client may take to send a request's headers",
    )
    s.add_argument(
        "--idle-timeout",
        type=positive_float,
        default=60.0,
        help="seconds a keep-alive connection may stay idle",
    )
    s.add_argument(
        "--body-timeout",
        type=positive_float,
        default=30.0,
        help="seconds a client may take to send a request's body",
    )
    s.set_defaults(func=run_serve)

    a = lsub.add_parser(
        "ask",
        help="ask the LLM once, through ChatOllama (a decision on a metrics trace, or a question)",
        description="Send one request the way the agent does (ChatOllama, temperature 0, fixed "
        "seed). With --metrics, the decision prompt is filled from a metrics trace (a trainer's "
        "metrics-rank-R.jsonl or `rudder replay --metrics-out`) and the answer must match the "
        "decision schema. If nothing answers at --llm-url and it is on this host, the embedded "
        "server is started for the request and stopped after it.",
    )
    a.add_argument("question", nargs="?", help="a free-form question (without --metrics)")
    a.add_argument("--metrics", type=Path, help="a metrics trace (JSON lines)")
    a.add_argument(
        "--at", type=int, default=-1, help="which record to decide on (default: the last)"
    )
    a.add_argument(
        "--history", type=positive_int, default=4, help="earlier records shown as history"
    )
    a.add_argument(
        "--prompt", default=None, help=f"prompt name or directory (default: {DEFAULT_PROMPT})"
    )
    a.add_argument("--llm-url", default=llm_url_from_env())
    a.add_argument("--llm-model", default=llm_model_from_env())
    a.set_defaults(func=run_ask)


def run_serve(args: argparse.Namespace) -> int:
    from rudder.llm.connections import ConnectionLimits
    from rudder.llm.models import DEFAULT_MODEL
    from rudder.llm.server import ServeConfig, serve

    if not 0 <= args.nice <= 19:
        raise UserError(f"--nice takes 0..19, got {args.nice}")
    if args.nice:
        os.nice(args.nice)  # before llama.cpp starts its threads, so they all inherit it

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        import logging

        logging.getLogger(__name__).warning(
            "serving on %s: the Ollama API has no authentication; anyone who can reach this "
            "address can use the model",
            args.host,
        )
    serve(
        ServeConfig(
            model=args.model or DEFAULT_MODEL,
            host=args.host,
            port=args.port,
            threads=args.threads,
            ctx=args.ctx,
            parallel=args.parallel,
            body_timeout_s=args.body_timeout,
            limits=ConnectionLimits(
                max_connections=args.max_connections,
                header_timeout_s=args.header_timeout,
                idle_timeout_s=args.idle_timeout,
            ),
        )
    )
    return 0


def run_ask(args: argparse.Namespace) -> int:
    from langchain_ollama import ChatOllama

    from rudder.llm.embedded import llm_available
    from rudder.llm.models import DEFAULT_MODEL
    from rudder.metrics_trace import read_metrics_trace
    from rudder.prompts import DECISION_SCHEMA, decision_messages, load, metrics_history

    if (args.metrics is None) == (args.question is None):
        raise UserError("give either a question or --metrics FILE")
    model = args.llm_model or DEFAULT_MODEL
    fmt = None
    if args.metrics is not None:
        records = [m.to_dict() for m in read_metrics_trace(args.metrics)]  # ValueError: exit 2
        at = args.at % len(records)
        messages = decision_messages(
            load(args.prompt) if args.prompt else load(),
            records[at],
            metrics_history(records[max(0, at - args.history) : at]),
        )
        fmt = DECISION_SCHEMA
    else:
        messages = [{"role": "user", "content": args.question}]
    with llm_available(args.llm_url, model):
        llm = ChatOllama(
            model=model,
            base_url=args.llm_url,
            temperature=0,
            seed=7,
            num_ctx=2048,
            num_predict=160,
            format=fmt,
        )
        t0 = time.perf_counter()
        reply = llm.invoke([(m["role"], m["content"]) for m in messages])
        seconds = time.perf_counter() - t0
    if fmt is not None:
        answer = json.loads(reply.content)
        print(f"{model} on minibatch {records[at]['minibatch']} ({seconds:.1f} s):")
        print(json.dumps(answer, indent=2))
    else:
        print(reply.content)
    return 0
