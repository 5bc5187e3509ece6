"""A real webhook receiver that verifies bigpeer's signatures with the Standard Webhooks library.

Usage: webhook_check.py BASE_URL ADMIN_KEY API_KEY

Registers a webhook pointing at an HTTP server on a loopback port, writes a document through the
API, and checks that the event arrives signed the Standard Webhooks way: the `standardwebhooks`
package (PyPI) verifies `webhook-id`, `webhook-timestamp` and `webhook-signature` against the
webhook's `whsec_` secret. A forged body must fail the same check. Exits 0 when all is well.
"""

import http.server
import json
import sys
import threading
import time
import urllib.request

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

base, admin_key, api_key = sys.argv[1], sys.argv[2], sys.argv[3]
received = []


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        received.append((dict(self.headers.items()), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def call(method, path, key, payload=None):
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + key)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:
        text = resp.read()
        return json.loads(text) if text else None


server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
url = "http://127.0.0.1:%d/hook" % server.server_address[1]

hook = call("POST", "/api/v4/admin/webhooks", admin_key, {"url": url, "collections": ["signed"]})
try:
    call(
        "POST",
        "/api/v4/store/execute",
        api_key,
        {"statement": "INSERT INTO signed DOCUMENTS ({'_id': 'w1', 'n': 1})"},
    )
    deadline = time.time() + 30
    while not received and time.time() < deadline:
        time.sleep(0.1)
    if not received:
        sys.exit("webhook_check: no webhook request within 30 s")
    headers, body = received[0]
    headers = {k.lower(): v for k, v in headers.items()}
    payload = Webhook(hook["secret"]).verify(body, headers)
    events = payload["events"]
    assert events[0]["type"] == "documentChanged", events
    assert events[0]["collection"] == "signed", events
    assert events[0]["documentId"] == "w1", events
    assert events[0]["change"]["method"] == "upsert", events
    assert events[0]["change"]["newValue"] == {"_id": "w1", "n": 1}, events
    try:
        Webhook(hook["secret"]).verify(body.replace(b'"n":1', b'"n":2'), headers)
        sys.exit("webhook_check: a forged body verified")
    except WebhookVerificationError:
        pass
    print("webhook_check: the standardwebhooks library verifies the signature of", headers["webhook-id"])
finally:
    call("DELETE", "/api/v4/admin/webhooks/" + hook["id"], admin_key)
    server.shutdown()
