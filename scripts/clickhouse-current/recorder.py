"""Records what teleguard sends a ClickHouse server, answering as ClickHouse 18.16 would.

    python3 recorder.py PORT FOLDER

Every request becomes FOLDER/NNNNN.json ({"query", "body_file"}) and, for an insert,
FOLDER/NNNNN.bin (its RowBinary body). `SELECT version()` answers 18.16.1, other SELECTs
nothing, so `clickhouse init`, the sink and a hunt run their whole course. replay.py then runs
the recording on a current ClickHouse engine. Part of scripts/clickhouse-current; never run by
tests.
"""
import http.server
import itertools
import json
import os
import sys
import urllib.parse

PORT, FOLDER = int(sys.argv[1]), sys.argv[2]
os.makedirs(FOLDER, exist_ok=True)
COUNTER = itertools.count()


def read_body(handler):
    if handler.headers.get("Transfer-Encoding") == "chunked":
        body = b""
        while True:
            size = int(handler.rfile.readline().strip(), 16)
            if size == 0:
                handler.rfile.readline()
                return body
            body += handler.rfile.read(size)
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


class Recorder(http.server.BaseHTTPRequestHandler):
    def record(self):
        url = urllib.parse.urlparse(self.path)
        body = read_body(self)
        query = urllib.parse.parse_qs(url.query).get("query", [""])[0]
        if not query:
            query, body = body.decode("utf-8", "replace"), b""
        number = next(COUNTER)
        body_file = f"{number:05d}.bin" if body else None
        with open(os.path.join(FOLDER, f"{number:05d}.json"), "w") as f:
            json.dump({"query": query, "body_file": body_file}, f)
        if body:
            with open(os.path.join(FOLDER, body_file), "wb") as f:
                f.write(body)
        reply = b"18.16.1\n" if "version()" in query else b""
        self.send_response(200)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_GET = record
    do_POST = record

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Recorder).serve_forever()
