"""Verifies webhook requests with the Standard Webhooks reference library.

Reads JSON lines {"secret", "headers": {name: value}, "body"} on stdin and
prints one line per request: "ok", or "refused: <the library's error>".
Run by gateway/tests/webhook.rs with OPAL_STANDARDWEBHOOKS_PYTHON.
"""

import json
import sys

from standardwebhooks import Webhook

for line in sys.stdin:
    request = json.loads(line)
    try:
        Webhook(request["secret"]).verify(request["body"], request["headers"])
        print("ok", flush=True)
    except Exception as e:  # the library's WebhookVerificationError, or a parse error
        print(f"refused: {type(e).__name__}: {e}", flush=True)
