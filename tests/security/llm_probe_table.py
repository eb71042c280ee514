"""The probe's cases against a running server, as table rows (issue 12's before | after).

    python -m tests.security.llm_probe_table URL MODEL PID

PID is the server's process (for its memory). Prints one ``| case | result |`` row per case.
"""

from __future__ import annotations

import socket
import sys
import threading
import time

import psutil

from rudder.llm.connections import raise_fd_limit
from tests.security import llm_probe as probe


def peak_rss_mb(pid: int, during) -> tuple[float, object]:
    """Run ``during()`` while sampling the server's RSS; (peak growth in MB, its result)."""
    p = psutil.Process(pid)
    base = p.memory_info().rss
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                peak[0] = max(peak[0], p.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.02)

    t = threading.Thread(target=sample)
    t.start()
    try:
        result = during()
    finally:
        done.set()
        t.join()
    return (peak[0] - base) / 2**20, result


def minus_one_body(url: str, mib: int) -> probe.Reply:
    """``Content-Length: -1`` and then ``mib`` MiB of body, then the write side shut."""
    t0 = time.perf_counter()
    out = b""
    with socket.create_connection(probe.address(url), timeout=60) as s:
        try:
            s.sendall(probe.head("POST", "/api/generate", b"-1"))
            block = b" " * 2**20
            for _ in range(mib):
                s.sendall(block)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        try:
            while chunk := s.recv(65536):
                out += chunk
        except OSError:
            pass
    status = int(out.split(b" ", 2)[1]) if out.startswith(b"HTTP/1.") else 0
    return probe.Reply(status, out.partition(b"\r\n\r\n")[2], time.perf_counter() - t0)


def slowloris(url: str, n: int, pid: int) -> str:
    raise_fd_limit(n + 200)
    server = psutil.Process(pid)
    with probe.slow_header_clients(url, n) as socks:
        opened = len(socks)
        threads = server.num_threads()
        during = probe.version(url, timeout_s=5)
        time.sleep(3)
        during2 = probe.version(url, timeout_s=5)
        left = probe.still_open(socks)
    time.sleep(1)
    after = probe.version(url, timeout_s=5)

    def fmt(r: probe.Reply) -> str:
        return f"{r.seconds:.2f} s" if r.status == 200 else f"no answer in {r.seconds:.1f} s"

    return (
        f"{opened} opened, server threads {threads}; /api/version while open: {fmt(during)}, "
        f"3 s later {fmt(during2)}; "
        f"{left} still open after 3 s; after closing them: {fmt(after)}"
    )


def main(url: str, model: str, pid: int, only: str = "") -> None:
    if only == "slow":
        print(f"| 1,500 slow-header connections | {slowloris(url, 1500, pid)} |")
        return
    rows = []
    for name, (path, body) in {**probe.bad_requests(model), **probe.streamed(model)}.items():
        rows.append((name, probe.summary(probe.post(url, path, body))))
    growth, r = peak_rss_mb(pid, lambda: minus_one_body(url, 256))
    rows.append(("Content-Length: -1 + 256 MiB body", f"{probe.summary(r)}, RSS +{growth:.0f} MB"))
    growth, r = peak_rss_mb(
        pid, lambda: probe.raw(url, probe.head("POST", "/api/generate", b"1000000000000"))
    )
    rows.append(("Content-Length: 10**12, no body", f"{probe.summary(r)} in {r.seconds:.2f} s"))
    rows.append(("1,500 slow-header connections", slowloris(url, 1500, pid)))
    ok = probe.post(url, "/api/generate", {"model": model, "prompt": "Hi", "stream": False})
    rows.append(("a normal request afterwards", probe.summary(ok)))
    for name, result in rows:
        print(f"| {name} | {result} |", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:3], int(sys.argv[3]), *sys.argv[4:5])
