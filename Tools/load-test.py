#!/usr/bin/env python3
"""Load test: CLIENTS concurrent streaming chat requests against `spool serve --slots 2 --queue 4`.
With 8 clients, 6 fit (2 running + 4 waiting) and 2 must get 503. Afterwards /health must show no
slot busy and nothing queued, and the server must still answer. Prints the counts."""
import http.client
import json
import sys
import threading
import time

from serve_helper import Server

CLIENTS, SLOTS, QUEUE = 8, 2, 4
server = Server("-c", "512", "--slots", str(SLOTS), "--queue", str(QUEUE))
results = [None] * CLIENTS
start = threading.Barrier(CLIENTS)


def client(i):
    body = json.dumps({"messages": [{"role": "user", "content": f"Tell me a short story about the number {i}."}],
                       "max_tokens": 24, "temperature": 0.7, "seed": i, "stream": True})
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)
    start.wait()
    t0 = time.time()
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    r = conn.getresponse()
    if r.status != 200:
        results[i] = (r.status, json.loads(r.read()).get("error", {}).get("code"), time.time() - t0)
        return
    chunks, done = 0, False
    for line in r:
        line = line.strip()
        if line == b"data: [DONE]":
            done = True
        elif line.startswith(b"data: "):
            chunks += 1
    results[i] = (200 if done else -1, chunks, time.time() - t0)


threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
for t in threads:
    t.start()
for t in threads:
    t.join()

def get_health():
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("GET", "/health")
    return json.loads(conn.getresponse().read())


# Every client has its [DONE]; the slots must be free by now (allow a moment for the last release).
health = get_health()
for _ in range(20):
    if health.get("slots_processing") == 0 and health.get("queued") == 0:
        break
    time.sleep(0.1)
    health = get_health()
served = sum(1 for r in results if r and r[0] == 200)
busy = sum(1 for r in results if r and r[0] == 503)
other = CLIENTS - served - busy
for i, r in enumerate(results):
    print(f"client {i}: status {r[0]}, {'chunks' if r[0] == 200 else 'code'} {r[1]}, {r[2]:.2f} s")
print(f"load: {CLIENTS} streaming clients, {SLOTS} slots, queue {QUEUE}: served {served}, 503 {busy}, other {other}")
print(f"health afterwards: {json.dumps(health)}")
alive = server.alive()
server.stop()
ok = (served == SLOTS + QUEUE and busy == CLIENTS - SLOTS - QUEUE and other == 0 and alive
      and health.get("slots_processing") == 0 and health.get("queued") == 0)
print(f"load-test: {1 if ok else 0} passed, {0 if ok else 1} failed")
sys.exit(0 if ok else 1)
