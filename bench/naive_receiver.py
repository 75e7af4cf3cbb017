"""The webhook receiver a user would write by hand with FastAPI + SQLite.

POST /V1/Data/{guid}: check the guid against one configured token, json.loads
the body, INSERT (token, body, received_at) and commit per request (default
rollback journal, synchronous=FULL), answer 200 {"status":"accepted"}.

    NAIVE_TOKEN=<guid> NAIVE_DB=/tmp/naive.db \
        uvicorn bench.naive_receiver:app --no-access-log --log-level warning
"""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import UTC, datetime

from fastapi import FastAPI, HTTPException, Request

TOKEN = os.environ.get("NAIVE_TOKEN", "00000000-0000-0000-0000-000000000000")
DB_PATH = os.environ.get("NAIVE_DB", "naive.db")

db = sqlite3.connect(DB_PATH, check_same_thread=False)
db.execute("PRAGMA synchronous=FULL")
db.execute(
    "CREATE TABLE IF NOT EXISTS requests ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " token TEXT NOT NULL,"
    " body TEXT NOT NULL,"
    " received_at TEXT NOT NULL)"
)
db.commit()

app = FastAPI()


@app.post("/V1/Data/{guid}")
async def ingest(guid: str, request: Request):
    if guid != TOKEN:
        raise HTTPException(status_code=404, detail="unknown source")
    raw = await request.body()
    try:
        json.loads(raw)
    except ValueError:
        raise HTTPException(status_code=400, detail="invalid JSON") from None
    db.execute(
        "INSERT INTO requests (token, body, received_at) VALUES (?, ?, ?)",
        (guid, raw.decode("utf-8"), datetime.now(UTC).isoformat()),
    )
    db.commit()
    return {"status": "accepted"}
