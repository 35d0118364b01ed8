"""A Lambda step that calls baton with an AWS IAM outbound identity token.

No static secret anywhere: the function's execution role asks AWS STS for a
short-lived JWT (sts:GetWebIdentityToken) whose audience is the gateway, and
sends it as a Bearer token. baton verifies it against the account's issuer
(https://<uuid>.tokens.sts.global.api.aws, discovery + JWKS), matches `sub`
(the role ARN) and the https://sts.amazonaws.com/ claims against the step
policy (gateway/policies/cleanup-nightly.json), and forwards to Cloud Run
with a Google ID token.

Prerequisites (once per account):
    aws iam enable-outbound-web-identity-federation
and in the execution role's policy:
    {"Effect": "Allow", "Action": "sts:GetWebIdentityToken", "Resource": "*"}
narrowed, where your organisation requires it, with the audience and
lifetime condition keys IAM documents for outbound identity federation.
GetWebIdentityToken is not served by the global STS endpoint: use the
regional one. Package a boto3 recent enough to know the call.
"""
import json
import os
import urllib.request

import boto3

GATEWAY = os.environ.get("BATON_GATEWAY", "https://gateway.example.com")
AUDIENCE = os.environ.get("BATON_AUDIENCE", GATEWAY)  # an `audiences` entry of the aws issuer
REGION = os.environ["AWS_REGION"]

sts = boto3.client("sts", region_name=REGION, endpoint_url="https://sts.%s.amazonaws.com" % REGION)


def identity_token():
    resp = sts.get_web_identity_token(
        Audience=[AUDIENCE],
        SigningAlgorithm="ES384",  # or RS256; both are in the issuer's `algorithms`
        DurationSeconds=300,       # minimum use: one call, then the token expires
    )
    return resp["WebIdentityToken"]


def handler(event, context):
    body = json.dumps({"older_than_days": event.get("older_than_days", 30)}).encode()
    req = urllib.request.Request(
        GATEWAY + "/cleanup/run",
        data=body,
        method="POST",
        headers={
            "Authorization": "Bearer " + identity_token(),
            "Content-Type": "application/json",
            # carried into baton's audit record (record_headers)
            "X-Amzn-Trace-Id": os.environ.get("_X_AMZN_TRACE_ID", ""),
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=55) as r:
            return {"status": r.status, "body": r.read(65536).decode(errors="replace")}
    except urllib.error.HTTPError as e:
        # 401: token refused, 403: policy denied (final); 503: baton's own outage
        # (keys, identity or audit unavailable), retryable after its Retry-After;
        # baton's audit record says exactly why (search by the X-Request-Id header).
        return {"status": e.code, "request_id": e.headers.get("X-Request-Id")}
