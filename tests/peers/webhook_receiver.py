#!/usr/bin/env python3
"""A webhook receiver that checks signatures the way the applications do: Pusher's webhooks
with Pusher's own server library (`pusher.Pusher.validate_webhook`), switchboard's with an
HMAC-SHA256 over the body. Prints one line per verified event, `EVENT <format> <json>`, and
`BADSIG <format>` for a POST whose signature does not verify (answered 401).

usage: webhook_receiver.py PORT_FILE PUSHER_APP_ID PUSHER_KEY PUSHER_SECRET HUB_SECRET
(writes the port it listens on to PORT_FILE; POST /pusher and POST /hub; with
FAIL_FIRST=N set, the first N POSTs get 503 so the sender must retry).
"""
import hashlib
import hmac
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

import pusher

PORT_FILE, APP_ID, KEY, SECRET, HUB_SECRET = sys.argv[1:6]
client = pusher.Pusher(app_id=APP_ID, key=KEY, secret=SECRET)
fail_first = int(os.environ.get("FAIL_FIRST", "0"))
posts = 0


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        global posts
        posts += 1
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if posts <= fail_first:
            print(f"REFUSED {posts}", flush=True)
            self.send_response(503)
            self.end_headers()
            return
        if self.path == "/pusher":
            data = client.validate_webhook(
                self.headers.get("X-Pusher-Key"), self.headers.get("X-Pusher-Signature"), body
            )
            fmt = "pusher"
        else:
            sig = self.headers.get("X-Switchboard-Signature", "")
            want = "sha256=" + hmac.new(HUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
            data = json.loads(body) if hmac.compare_digest(sig, want) else None
            fmt = "hub"
        if data is None:
            print(f"BADSIG {fmt}", flush=True)
            self.send_response(401)
            self.end_headers()
            return
        for e in data["events"]:
            print(f"EVENT {fmt} {json.dumps(e, sort_keys=True)}", flush=True)
        self.send_response(200)
        self.end_headers()


server = HTTPServer(("127.0.0.1", 0), Handler)
with open(PORT_FILE, "w") as f:
    f.write(str(server.server_address[1]))
print("READY", flush=True)
server.serve_forever()
