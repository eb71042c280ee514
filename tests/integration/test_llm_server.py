"""The embedded Ollama-API server with a real model (SmolLM2-135M), used by real clients."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m"
SCHEMA = {
    "type": "object",
    "properties": {
        "decision": {"type": "string", "enum": ["replace", "skip"]},
        "reason": {"type": "string"},
    },
    "required": ["decision", "reason"],
}
OPTS = {"temperature": 0, "seed": 1, "num_predict": 48}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    from rudder.llm.embedded import answers

    deadline = time.monotonic() + timeout_s
    while not answers(url, timeout_s=0.5):
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "server did not come up"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def model_installed():
    subprocess.run(
        [sys.executable, "-m", "rudder", "-q", "models", "fetch", MODEL], check=True, timeout=600
    )


@pytest.fixture(scope="module")
def server(model_installed):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rudder", "llm", "serve", "--model", MODEL, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_until_up(url, proc)
    yield url, proc
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=30)


def post(url: str, path: str, body: bytes | dict) -> tuple[int, bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(
        url + path, data=data, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_chat_ollama_invoke_stream_and_schema(server):
    from langchain_ollama import ChatOllama

    url, _ = server
    llm = ChatOllama(model=MODEL, base_url=url, temperature=0, seed=1, num_predict=48)
    reply = llm.invoke("Say hello.")
    assert isinstance(reply.content, str) and reply.content
    assert reply.response_metadata["done"] is True
    assert reply.usage_metadata["output_tokens"] > 0

    chunks = list(llm.stream("Count to three."))
    assert len(chunks) > 1
    assert "".join(c.content for c in chunks)

    constrained = ChatOllama(
        model=MODEL, base_url=url, temperature=0, seed=1, num_predict=64, format=SCHEMA
    )
    answer = json.loads(
        constrained.invoke("Hit rate fell from 40% to 20%. Replace or skip?").content
    )
    assert answer["decision"] in ("replace", "skip") and isinstance(answer["reason"], str)


def test_two_streamed_requests_decode_side_by_side(server):
    """Two agents on one server: the second's answer starts before the first one's ends."""
    import threading

    from langchain_ollama import ChatOllama

    url, _ = server
    llm = ChatOllama(model=MODEL, base_url=url, temperature=0, seed=1, num_predict=96)
    events: list[tuple[float, str, str]] = []

    def run(name: str, delay_s: float) -> None:
        time.sleep(delay_s)
        for i, _ in enumerate(llm.stream("Write a long list of animals, one per line.")):
            if i == 0:
                events.append((time.monotonic(), name, "first"))
        events.append((time.monotonic(), name, "done"))

    threads = [
        threading.Thread(target=run, args=("a", 0.0)),
        threading.Thread(target=run, args=("b", 0.3)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    order = [(name, what) for _, name, what in sorted(events)]
    assert len(order) == 4
    assert order.index(("b", "first")) < order.index(("a", "done")), order


def test_with_structured_output_json_schema(server):
    from langchain_ollama import ChatOllama
    from pydantic import BaseModel

    class Decision(BaseModel):
        decision: str
        reason: str

    url, _ = server
    llm = ChatOllama(model=MODEL, base_url=url, temperature=0, seed=1, num_predict=64)
    out = llm.with_structured_output(Decision, method="json_schema").invoke(
        "The buffer hit rate dropped. Decide: replace or skip, and say why."
    )
    assert isinstance(out, Decision)


def test_official_ollama_client(server):
    import ollama

    url, _ = server
    client = ollama.Client(host=url)
    names = [m.model for m in client.list().models]
    assert f"{MODEL}:latest" in names
    assert client.show(MODEL).details.format == "gguf"
    assert [m.model for m in client.ps().models] == [f"{MODEL}:latest"]
    r = client.chat(model=MODEL, messages=[{"role": "user", "content": "Hi"}], options=OPTS)
    assert r.message.role == "assistant" and r.done and r.eval_count > 0
    g = client.generate(model=MODEL, prompt="The sky is", options=OPTS)
    assert g.response and g.prompt_eval_count > 0
    parts = list(client.generate(model=MODEL, prompt="One, two,", options=OPTS, stream=True))
    assert parts[-1].done and not any(p.done for p in parts[:-1])
    js = client.chat(
        model=MODEL,
        messages=[{"role": "user", "content": "Decide."}],
        format=SCHEMA,
        options={**OPTS, "num_predict": 64},
    )
    assert json.loads(js.message.content)["decision"] in ("replace", "skip")


def test_bad_requests_get_clear_errors(server):
    url, _ = server
    status, body = post(url, "/api/chat", b"{not json")
    assert status == 400 and "invalid JSON" in json.loads(body)["error"]
    status, body = post(
        url, "/api/chat", {"model": "no-such-model", "messages": [], "stream": False}
    )
    assert status == 404 and f"{MODEL}:latest" in json.loads(body)["error"]
    status, body = post(url, "/api/chat", {"model": MODEL, "messages": "hi", "stream": False})
    assert status == 400 and "messages" in json.loads(body)["error"]
    status, body = post(
        url,
        "/api/generate",
        {"model": MODEL, "prompt": "x", "stream": False, "options": {"temperature": "hot"}},
    )
    assert status == 400 and "temperature" in json.loads(body)["error"]
    status, body = post(
        url,
        "/api/chat",
        {
            "model": MODEL,
            "format": "yaml",
            "stream": False,
            "messages": [{"role": "user", "content": "x"}],
        },
    )
    assert status == 400 and "format" in json.loads(body)["error"]
    status, body = post(url, "/api/nowhere", {})
    assert status == 404
    for b in (body,):
        assert b"Traceback" not in b
    # Streaming is the default, as in Ollama: NDJSON lines, the last one done.
    status, body = post(
        url,
        "/api/chat",
        {"model": MODEL, "options": OPTS, "messages": [{"role": "user", "content": "Hi"}]},
    )
    lines = [json.loads(x) for x in body.decode().splitlines()]
    assert status == 200 and len(lines) > 1 and lines[-1]["done"] is True
    assert lines[-1]["eval_count"] > 0 and "total_duration" in lines[-1]


def test_what_clients_see_is_what_ollama_shows(server):
    """Where Ollama 0.5.4 and the old server differed (issue 12), the server now does as Ollama."""
    url, _ = server
    gen = {"model": MODEL, "prompt": "The sky is", "stream": False, "options": dict(OPTS)}
    # An unknown option is ignored with a warning in the server's log, not refused.
    status, body = post(url, "/api/generate", {**gen, "options": {**OPTS, "temprature": 1}})
    assert status == 200 and json.loads(body)["done"] is True
    # The model is echoed as requested: no ":latest" added (nor removed).
    assert json.loads(body)["model"] == MODEL
    status, body = post(url, "/api/generate", {**gen, "model": f"{MODEL}:latest"})
    assert json.loads(body)["model"] == f"{MODEL}:latest"
    # Every prompt token counts, those served from the prompt cache too.
    first = json.loads(post(url, "/api/generate", gen)[1])
    again = json.loads(post(url, "/api/generate", gen)[1])
    assert again["prompt_eval_count"] == first["prompt_eval_count"] > 0
    # A small context is accepted (the model is reloaded with it, as Ollama does).
    small = {
        **gen,
        "raw": True,
        "prompt": "Hi",
        "options": {**OPTS, "num_ctx": 32, "num_predict": 2},
    }
    status, body = post(url, "/api/generate", small)
    assert status == 200, body
    status, body = post(url, "/api/generate", gen)  # and the default context is back
    assert status == 200, body


def test_sigterm_stops_the_server_and_frees_the_port(model_installed):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rudder", "llm", "serve", "--model", MODEL, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_until_up(url, proc)
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
    listening = [
        c
        for c in psutil.net_connections("tcp")
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
    ]
    assert listening == []  # nothing listens there any more (closed sockets may sit in TIME_WAIT)


def test_llm_available_starts_and_stops_the_embedded_server(model_installed, tmp_path):
    from rudder.llm.embedded import answers, llm_available

    url = f"http://127.0.0.1:{free_port()}"
    with llm_available(url, MODEL, log_file=tmp_path / "llm.log") as started:
        assert started and answers(url)
        with llm_available(url, MODEL) as again:
            assert not again and again.pid is None  # something answers: used as it is
            assert again.cpu_s() > 0  # found by its port: the CPU it used so far
    assert not answers(url)
    assert os.path.getsize(tmp_path / "llm.log") > 0


def test_ask_decides_on_a_metrics_trace_starting_the_server_itself(model_installed, tmp_path):
    from rudder.llm.embedded import answers

    trace = os.path.join(os.path.dirname(__file__), "..", "fixtures", "golden", "trace-rank-0.npz")
    metrics = tmp_path / "m.jsonl"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "rudder",
            "-q",
            "replay",
            "--trace",
            trace,
            "--policy",
            "rudder",
            "--buffer",
            "0.25",
            "--metrics-out",
            str(metrics),
        ],
        check=True,
    )
    url = f"http://127.0.0.1:{free_port()}"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "rudder",
            "-q",
            "llm",
            "ask",
            "--metrics",
            str(metrics),
            "--llm-url",
            url,
            "--llm-model",
            MODEL,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout.split("\n", 1)[1])
    assert answer["decision"] in ("replace", "skip")
    assert answer["expected_hit_pct"] in ("increase", "decrease", "stagnant")
    assert not answers(url)  # the server it started is gone
