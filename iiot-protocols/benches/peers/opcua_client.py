"""The asyncua baseline client of the iiot-protocols OPC-UA subscription benchmark.

Connects to URL (security None, anonymous), creates one subscription with a 100 ms
publishing interval and, in one subscribe_data_change call, monitors ns=2;s=Bench.0 ..
ns=2;s=Bench.{N-1} (sampling interval 0: every change, queue size 10), as served by
tests/peers/opcua_server.py --items N. Counts data change notifications in the handler
for SECONDS from the first one, measuring wall clock (time.monotonic) and this process's
CPU time (time.process_time) over the same window, then disconnects and prints one line
of JSON on stdout:

  {"notifications": n, "seconds": s, "cpu_seconds": c, "per_cpu_second": n / c}

Usage: python opcua_client.py URL N SECONDS
"""

import asyncio
import json
import logging
import sys
import time


class Handler:
    def __init__(self):
        self.count = 0
        self.first = asyncio.Event()
        self.t0 = None
        self.cpu0 = None
        self.error = None
        self.lost = asyncio.Event()

    def datachange_notification(self, node, val, data):
        if self.t0 is None:
            self.t0 = time.monotonic()
            self.cpu0 = time.process_time()
            self.first.set()
        self.count += 1

    def status_change_notification(self, status):
        # The subscription broke (e.g. the server went away): end the run with an error.
        self.error = status
        self.first.set()
        self.lost.set()


async def main(url, n, seconds):
    from asyncua import Client, ua

    client = Client(url)
    # No set_security_string: asyncua defaults to policy None, and to anonymous without a user.
    await client.connect()
    handler = Handler()
    try:
        sub = await client.create_subscription(100, handler)
        nodes = [client.get_node(ua.NodeId(f"Bench.{i}", 2)) for i in range(n)]
        handles = await sub.subscribe_data_change(nodes, queuesize=10, sampling_interval=0)
        bad = [h for h in handles if isinstance(h, ua.StatusCode)]
        if bad:
            raise RuntimeError(f"{len(bad)} of {n} monitored items failed: {bad[0]}")
        await asyncio.wait_for(handler.first.wait(), timeout=30)
        if handler.error is None:
            try:
                remaining = max(0.0, handler.t0 + seconds - time.monotonic())
                await asyncio.wait_for(handler.lost.wait(), timeout=remaining)
            except asyncio.TimeoutError:
                pass
        if handler.error is not None:
            sys.exit(f"subscription lost: {handler.error}")
        count = handler.count
        wall = time.monotonic() - handler.t0
        cpu = time.process_time() - handler.cpu0
    finally:
        try:
            await client.disconnect()
        except (ConnectionError, OSError):
            if handler.error is None:
                raise
    print(
        json.dumps(
            {
                "notifications": count,
                "seconds": round(wall, 6),
                "cpu_seconds": round(cpu, 6),
                "per_cpu_second": round(count / cpu, 1) if cpu > 0 else None,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: opcua_client.py URL N SECONDS")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
