"""A reference CDP bulk profile import endpoint, to test the central service's push connector
against a real HTTP server.

    POST /api/v1/profiles/import   X-API-Key: <key>   {"segment": "...", "profiles": [{...}, ...]}
        -> 200 {"imported": n, "batch": k}; 401 bad key; 400 malformed; 413 over 10,000 profiles
    GET  /api/v1/profiles?segment=  X-API-Key        -> {"profiles": [...]} (what was received)
    GET  /api/v1/stats              X-API-Key        -> {"batches": k, "profiles": n, "failed": f}

``fail_first`` makes the first N imports answer 503, to exercise retries. Received profiles
are kept in memory and, with ``store``, appended to a JSON-lines file.

    python -m footfall.tools.reference_cdp --port 8099 --api-key-env CDP_KEY
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import threading
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

MAX_PROFILES = 10000


def create_app(api_key: str, *, store: str | Path | None = None, fail_first: int = 0) -> FastAPI:
    app = FastAPI(title="reference CDP", docs_url=None, redoc_url=None)
    lock = threading.Lock()
    state: dict[str, Any] = {"profiles": [], "batches": 0, "failed": 0, "fail_left": fail_first}
    app.state.cdp = state

    def authorised(request: Request) -> bool:
        return hmac.compare_digest(request.headers.get("x-api-key", "").encode(), api_key.encode())

    @app.post("/api/v1/profiles/import")
    async def import_profiles(request: Request) -> JSONResponse:
        if not authorised(request):
            return JSONResponse({"error": "bad api key"}, status_code=401)
        with lock:
            if state["fail_left"] > 0:
                state["fail_left"] -= 1
                state["failed"] += 1
                return JSONResponse({"error": "temporarily unavailable"}, status_code=503)
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"error": "body is not JSON"}, status_code=400)
        profiles = body.get("profiles") if isinstance(body, dict) else None
        if not isinstance(profiles, list) or not all(isinstance(p, dict) for p in profiles):
            return JSONResponse({"error": "profiles must be a list of objects"}, status_code=400)
        if len(profiles) > MAX_PROFILES:
            return JSONResponse({"error": f"at most {MAX_PROFILES} profiles per request"}, status_code=413)
        segment = str(body.get("segment", ""))
        with lock:
            state["batches"] += 1
            for p in profiles:
                state["profiles"].append({**p, "_segment": segment})
            if store:
                with open(store, "a", encoding="utf-8") as fh:
                    for p in profiles:
                        fh.write(json.dumps({**p, "_segment": segment}) + "\n")
            return JSONResponse({"imported": len(profiles), "batch": state["batches"]})

    @app.get("/api/v1/profiles")
    def profiles(request: Request, segment: str | None = None) -> JSONResponse:
        if not authorised(request):
            return JSONResponse({"error": "bad api key"}, status_code=401)
        with lock:
            items = [p for p in state["profiles"] if segment is None or p["_segment"] == segment]
        return JSONResponse({"profiles": items})

    @app.get("/api/v1/stats")
    def stats(request: Request) -> JSONResponse:
        if not authorised(request):
            return JSONResponse({"error": "bad api key"}, status_code=401)
        with lock:
            return JSONResponse(
                {"batches": state["batches"], "profiles": len(state["profiles"]), "failed": state["failed"]}
            )

    return app


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8099)
    p.add_argument("--api-key-env", default="CDP_API_KEY", help="environment variable holding the API key")
    p.add_argument("--store", help="append received profiles to this JSON-lines file")
    p.add_argument("--fail-first", type=int, default=0, help="answer 503 to the first N imports")
    args = p.parse_args(argv)
    key = os.environ.get(args.api_key_env, "")
    if not key:
        p.error(f"set the API key in ${args.api_key_env}")
    uvicorn.run(create_app(key, store=args.store, fail_first=args.fail_first), host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
