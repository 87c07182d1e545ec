#!/usr/bin/env python3
"""Signs webhook deliveries with the sender's own library, for tests/gateway/webhook.rs.

Reads a JSON request (or a list of them) on stdin and prints (a list of) {"headers": {...}, "query": "..."}:
  {"scheme": "...", "secret": "...", "body": "...", "timestamp": 1700000000, "id": "msg_1",
   "url": "https://...", "form": [["name", "value"], ...]}

Schemes and the code that signs them:
  standard      standardwebhooks.Webhook(secret).sign (PyPI standardwebhooks)
  standard_v1a  Ed25519 over "id.timestamp.body" as the Standard Webhooks specification says,
                with PyPI cryptography (the Python reference library signs v1 only);
                "secret" is the base64 private key from "ed25519_keygen"
  ed25519_keygen  prints {"private": base64, "public": "whpk_..."}
  stripe        stripe.WebhookSignature._compute_signature (PyPI stripe; Stripe's Python library
                has no public signer, this is the function its verify_header checks with)
  slack         slack_sdk.signature.SignatureVerifier(secret).generate_signature (PyPI slack-sdk)
  twilio_form   twilio.request_validator.RequestValidator(token).compute_signature(url, params)
  twilio_json   the same over url?bodySHA256=compute_hash(body), as Twilio signs JSON bodies
  shopify       Shopify's published recipe (it ships no signer): base64 of HMAC-SHA256 of the
                body under the app's client secret, with Python's hmac and hashlib
"""
import base64
import datetime
import hashlib
import hmac
import json
import sys
import urllib.parse


def main():
    requests = json.load(sys.stdin)
    # A list of requests is answered with a list: one interpreter for many signatures.
    if isinstance(requests, list):
        json.dump([sign(r) for r in requests], sys.stdout)
    else:
        json.dump(sign(requests), sys.stdout)


def sign(req):
    scheme = req["scheme"]
    body = req.get("body", "")
    ts = int(req.get("timestamp", 0))
    msg_id = req.get("id", "msg_1")
    out = {"headers": {}, "query": ""}
    h = out["headers"]
    if scheme == "standard":
        from standardwebhooks.webhooks import Webhook

        when = datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc)
        h["webhook-id"] = msg_id
        h["webhook-timestamp"] = str(ts)
        h["webhook-signature"] = Webhook(req["secret"]).sign(msg_id, when, body)
    elif scheme == "ed25519_keygen":
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives import serialization

        key = Ed25519PrivateKey.generate()
        raw = lambda b: base64.b64encode(b).decode()
        private = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                    serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        out = {"private": raw(private), "public": "whpk_" + raw(public)}
    elif scheme == "standard_v1a":
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(req["secret"]))
        sig = key.sign(f"{msg_id}.{ts}.{body}".encode())
        h["webhook-id"] = msg_id
        h["webhook-timestamp"] = str(ts)
        h["webhook-signature"] = "v1a," + base64.b64encode(sig).decode()
    elif scheme == "stripe":
        import stripe

        sigs = [stripe.WebhookSignature._compute_signature(f"{ts}.{body}", s) for s in req["secrets"]]
        h["stripe-signature"] = f"t={ts}," + ",".join(f"v1={s}" for s in sigs)
    elif scheme == "slack":
        from slack_sdk.signature import SignatureVerifier

        h["x-slack-request-timestamp"] = str(ts)
        h["x-slack-signature"] = SignatureVerifier(req["secret"]).generate_signature(timestamp=str(ts), body=body)
    elif scheme == "twilio_form":
        from twilio.request_validator import RequestValidator

        params = {}
        for name, value in req["form"]:
            params.setdefault(name, []).append(value)
        flat = {k: v[0] if len(v) == 1 else v for k, v in params.items()}
        h["x-twilio-signature"] = RequestValidator(req["secret"]).compute_signature(req["url"], flat)
        h["content-type"] = "application/x-www-form-urlencoded"
    elif scheme == "twilio_json":
        from twilio.request_validator import RequestValidator

        validator = RequestValidator(req["secret"])
        query = urllib.parse.urlencode({"bodySHA256": validator.compute_hash(body)})
        h["x-twilio-signature"] = validator.compute_signature(req["url"] + "?" + query, {})
        h["content-type"] = "application/json"
        out["query"] = query
    elif scheme == "shopify":
        digest = hmac.new(req["secret"].encode(), body.encode(), hashlib.sha256).digest()
        h["x-shopify-hmac-sha256"] = base64.b64encode(digest).decode()
        h["x-shopify-webhook-id"] = msg_id
    else:
        sys.exit(f"sign.py: unknown scheme {scheme}")
    return out


if __name__ == "__main__":
    main()
