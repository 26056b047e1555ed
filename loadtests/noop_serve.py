"""The no-op Serve app for P1: a FastAPI ingress deployment that validates nothing and stores nothing,
served as Herald's ingress is (the same ``HERALD_INGRESS`` mode, replicas and Ray settings). Herald beside
it is what Herald's own work costs; it beside the bare app is what Serve costs.

    python -m loadtests.noop_serve --port 8102     # runs until SIGTERM / Ctrl-C, then stops its Ray
"""

from __future__ import annotations

import argparse
import os
import signal
import threading

from fastapi import FastAPI, Request
from fastapi.responses import Response
from ray import serve

app = FastAPI()

_ANSWER = b'{"message_id":"msg_00000000000000000000000000000000","status":"queued"}'


@app.post("/api/notifications", status_code=202)
async def accept(request: Request) -> Response:
    await request.body()
    return Response(_ANSWER, status_code=202, media_type="application/json")


@app.get("/admin/healthz")
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=512)
@serve.ingress(app)
class NoopApi:
    pass


def main() -> None:
    from serve_app.ingress import default_replicas, serve_environment
    from serve_app.stack import ray_process_environment

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8102)
    parser.add_argument("--mode", default=os.environ.get("HERALD_INGRESS", "haproxy"))
    parser.add_argument("--replicas", type=int, default=default_replicas())
    args = parser.parse_args()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    os.environ.update(ray_process_environment())
    os.environ.update(serve_environment(args.mode, os.environ))
    import ray

    ray.init(include_dashboard=False, object_store_memory=100 * 1024 * 1024, configure_logging=False)
    for sig in (signal.SIGINT, signal.SIGTERM):  # ray.init installed its own
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.port})
        serve.run(NoopApi.options(num_replicas=args.replicas).bind(), name="noop", route_prefix="/")
        print("noop serve app is up", flush=True)
        stop.wait()
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
