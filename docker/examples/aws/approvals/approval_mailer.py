"""The approval-mailer Lambda: Step Functions invokes it with a task token
(`.waitForTaskToken`, see approval.asl.json); it mints an approve and a reject
link through baton and e-mails them. Nobody who clicks needs a token: the link
is the credential, good for one GET of one path, for 24 hours.

1. PUT /approval-requests/{id} through baton with the function's own AWS IAM
   outbound identity token (policy approval-requests.json): the approvals
   service stores the task token under {id}. The links never carry the task
   token, so it appears in no e-mail, browser history or audit record.
2. POST /.well-known/baton/sign twice, with the same token, for
   GET /approvals/{id}/approve and GET /approvals/{id}/reject (policy
   approvals.json grants this role exactly that in its "sign" section, for
   at most 86400 s). baton answers {"url", "expires_at", "uses", "link_id"};
   each mint is an audit record naming this role as the minter.
3. Sends both links with SES.

The approvals service (Cloud Run, behind baton) answers the click: on
GET /approvals/{id}/approve it calls states:SendTaskSuccess with the stored
task token and output {"decision": "approve", ...}; on .../reject,
states:SendTaskFailure with error "Rejected". The first decision wins (the
other link still works once: the service answers "already decided" and
calls nothing). It answers with a small HTML page, not JSON: a person reads
it. See README "Signed URLs".

Environment: BATON_GATEWAY (https://gateway.example.com), BATON_AUDIENCE (an
`audiences` entry of the aws issuer), MAIL_FROM (an SES-verified sender).
"""
import hashlib
import json
import os
import time
import urllib.error
import urllib.request

import boto3

GATEWAY = os.environ.get("BATON_GATEWAY", "https://gateway.example.com")
AUDIENCE = os.environ.get("BATON_AUDIENCE", GATEWAY)
MAIL_FROM = os.environ.get("MAIL_FROM", "approvals@example.com")
REGION = os.environ["AWS_REGION"]
LINK_TTL_S = 86400  # the state machine's TimeoutSeconds: a link never outlives the wait

sts = boto3.client("sts", region_name=REGION, endpoint_url="https://sts.%s.amazonaws.com" % REGION)
ses = boto3.client("sesv2", region_name=REGION)


def identity_token():
    return sts.get_web_identity_token(Audience=[AUDIENCE], SigningAlgorithm="ES384",
                                      DurationSeconds=300)["WebIdentityToken"]


def call(method, path, token, body, attempts=4):
    """One call through baton; 503 (identity, audit or single-use store
    unavailable: baton's own failures) and 502/504 are retried, the rest is
    an answer: 401/403 mean this role is not allowed, see baton's audit log."""
    data = json.dumps(body).encode()
    for i in range(attempts):
        req = urllib.request.Request(GATEWAY + path, data=data, method=method, headers={
            "Authorization": "Bearer " + token, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=25) as r:
                raw = r.read(65536)
                return json.loads(raw) if raw else {}
        except urllib.error.HTTPError as e:
            if e.code not in (502, 503, 504) or i == attempts - 1:
                raise
            time.sleep(int(e.headers.get("Retry-After", "1")) + i)
    raise RuntimeError("unreachable")


def handler(event, context):
    # a stable, non-secret id for this wait: the same execution and state
    # always get the same id (a retried invocation re-registers the same one)
    req_id = hashlib.sha256((event["execution"] + "\n" + event["task_token"]).encode()).hexdigest()[:32]
    token = identity_token()
    call("PUT", "/approval-requests/" + req_id, token, {
        "task_token": event["task_token"], "execution": event["execution"],
        "approver": event["approver"], "summary": event["summary"]})
    links = {}
    for decision in ("approve", "reject"):
        links[decision] = call("POST", "/.well-known/baton/sign", token, {
            "method": "GET", "path": "/approvals/%s/%s" % (req_id, decision),
            "ttl_s": LINK_TTL_S, "uses": 1})
    text = ("%s\n\nApprove: %s\nReject:  %s\n\nEach link works once, until %s UTC.\n" % (
        event["summary"], links["approve"]["url"], links["reject"]["url"],
        time.strftime("%Y-%m-%d %H:%M", time.gmtime(links["approve"]["expires_at"]))))
    ses.send_email(FromEmailAddress=MAIL_FROM,
                   Destination={"ToAddresses": [event["approver"]]},
                   Content={"Simple": {"Subject": {"Data": "Approval needed: " + event["summary"][:80]},
                                       "Body": {"Text": {"Data": text}}}})
    # never return or log the URLs: they are credentials until used or expired
    return {"request_id": req_id,
            "link_ids": {k: v["link_id"] for k, v in links.items()}}
