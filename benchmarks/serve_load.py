"""Load test of `ferlab serve` on loopback: N concurrent clients for a fixed time.

    python benchmarks/serve_load.py --clients 50 --seconds 20

Starts the server itself (the bundled model unless --model), sends the sample
photo from every client as fast as it is answered, and prints requests/s,
p50/p95 latency and the error count. Traffic goes to 127.0.0.1 only, and the
run is bounded in time and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import time

import httpx

from ferlab.inference.shipped import SAMPLE_PHOTO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def client(url: str, photo: bytes, deadline: float, latencies: list[float], errors: list[str]) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                r = await http.post(url, files={"file": ("astronaut.jpg", photo, "image/jpeg")})
                if r.status_code != 200 or len(r.json()["faces"]) != 1:
                    errors.append(f"{r.status_code}: {r.text[:80]}")
                    continue
            except Exception as e:
                errors.append(repr(e))
                continue
            latencies.append(time.perf_counter() - start)


async def run(url: str, clients: int, seconds: float,
              photo: bytes | None = None) -> tuple[list[float], list[str], float]:
    """`clients` concurrent clients posting `photo` (JPEG bytes; the sample photo by default)."""
    photo = SAMPLE_PHOTO.read_bytes() if photo is None else photo
    latencies: list[float] = []
    errors: list[str] = []
    start = time.perf_counter()
    deadline = start + seconds
    await asyncio.gather(*(client(url, photo, deadline, latencies, errors) for _ in range(clients)))
    return latencies, errors, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 10, 50])
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()

    port = free_port()
    cmd = [sys.executable, "-m", "ferlab", "serve", "--host", "127.0.0.1", "--port", str(port)]
    if args.model:
        cmd += ["--model", args.model]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).json()
                break
            except httpx.HTTPError:
                if server.poll() is not None or time.time() > deadline:
                    sys.exit(f"server did not start: {server.stderr.read()}")
                time.sleep(0.3)
        print(f"ferlab serve on 127.0.0.1:{port}, model {health['model']}; photo {SAMPLE_PHOTO.name} "
              f"(512x512, one face); {args.seconds:g} s per row")
        print(f"{'clients':>8}{'requests':>10}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'errors':>8}")
        for n in args.clients:
            url = f"http://127.0.0.1:{port}/api/predict"
            latencies, errors, elapsed = asyncio.run(run(url, n, args.seconds))
            q = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else [0.0] * 19
            print(f"{n:>8}{len(latencies):>10}{len(latencies) / elapsed:>8.1f}"
                  f"{statistics.median(latencies) * 1000 if latencies else 0:>9.0f}{q[18] * 1000:>9.0f}"
                  f"{len(errors):>8}")
            for e in errors[:3]:
                print(f"        e.g. {e}")
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
