#!/usr/bin/env python3
"""Runs schemathesis against a real sandbox server, as an operator, a POS terminal and a shopper.

The checks are the ones that judge the server by its own document: no 5xx, and every answer's
status, content type, headers and body as `/v1/openapi.json` declares them. Usage:
    .ci/schemathesis.py PATH_TO_OMAMORI_BINARY [MAX_EXAMPLES]
Exit status 0 when every run passed, 1 otherwise (and 2 when the server would not start).
"""

import base64
import hashlib
import hmac
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
])


def call(base, method, path, body=None, token=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def totp(secret_b32, at=None):
    key = base64.b32decode(secret_b32.upper() + "=" * (-len(secret_b32) % 8))
    counter = int((at or time.time()) // 30)
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    return "%06d" % ((struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF) % 1_000_000)


def start(binary, data_dir):
    env = dict(os.environ, OMAMORI_LISTEN="127.0.0.1:0", OMAMORI_DATA_DIR=data_dir, OMAMORI_SANDBOX="true",
               RUST_LOG="warn")
    server = subprocess.Popen([binary, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        line = server.stdout.readline()
        if line.startswith("listening on "):
            return server, line.split()[-1].replace("127.0.0.1", "localhost")
        if server.poll() is not None:
            break
    server.kill()
    sys.exit("the server did not start")


def operator_token(base, sandbox):
    op = sandbox["operators"][0]
    _, challenge = call(base, "POST", "/v1/admin/login", {"email": op["email"], "password": op["password"]})
    status, verified = call(base, "POST", f"/v1/challenges/{challenge['challenge_id']}/verify",
                            {"method": "totp", "code": totp(op["totp_secret"])})
    assert status == 200, verified
    return verified["session_token"]


def latest_code(base, to):
    _, messages = call(base, "GET", "/v1/sandbox/messages?to=" + urllib.parse.quote(to))
    return next(m["code"] for m in messages["items"] if m["code"])


def shopper_token(base):
    phone, email, password = "+819099887766", "schemathesis@example.jp", "a long sandbox passphrase 42"
    _, started = call(base, "POST", "/v1/signup", {"phone": phone, "email": email, "password": password})
    status, created = call(base, "POST", f"/v1/signup/{started['signup_id']}/verify",
                           {"phone_code": latest_code(base, phone), "email_code": latest_code(base, email)})
    assert status == 201, created
    _, login = call(base, "POST", "/v1/login", {"login": phone, "password": password, "device_id": "schemathesis"})
    call(base, "POST", f"/v1/challenges/{login['challenge_id']}/send", {"method": "sms"})
    status, verified = call(base, "POST", f"/v1/challenges/{login['challenge_id']}/verify",
                            {"method": "sms", "code": latest_code(base, phone)})
    assert status == 200, verified
    return verified["session_token"]


def run(base, name, token, include, exclude, examples):
    cmd = ["schemathesis", "run", base + "/v1/openapi.json", "--checks", CHECKS, "--max-examples", str(examples),
           "--seed", "1", "--generation-allow-x00", "false", "--include-path-regex", include,
           "-H", f"Authorization: Bearer {token}"]
    if name == "a shopper":
        # The shopper's session is bound to the phone it logged in from.
        cmd += ["-H", "X-Device-Id: schemathesis"]
    if exclude:
        cmd += ["--exclude-path-regex", exclude]
    print(f"== schemathesis as {name}: {include}", flush=True)
    # Its example database stays out of the clone: each run starts from the seed alone.
    with tempfile.TemporaryDirectory() as scratch:
        return subprocess.run(cmd, cwd=scratch).returncode


def main():
    binary = sys.argv[1]
    examples = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    with tempfile.TemporaryDirectory() as data_dir:
        server, base = start(binary, data_dir)
        try:
            with open(os.path.join(data_dir, "sandbox.json")) as f:
                sandbox = json.load(f)
            # Logging in and out, or revoking a session found in GET /v1/sessions, would end the runs'
            # own sessions; those routes have black-box tests.
            sessions = r"^/v1/(logout|admin/logout|login|admin/login|sessions/[^/]+)$"
            runs = [
                ("an operator", operator_token(base, sandbox), r"^/v1/admin/", sessions),
                ("a POS terminal", sandbox["terminal_key"], r"^/v1/pos/", None),
                ("a shopper", shopper_token(base), r"^/v1/(?!admin/|pos/|sandbox/|processor/)", sessions),
            ]
            failed = [name for name, token, inc, exc in runs if run(base, name, token, inc, exc, examples) != 0]
        finally:
            server.terminate()
            server.wait(timeout=30)
    if failed:
        print("schemathesis found answers that break the document, as: " + ", ".join(failed))
        return 1
    print("schemathesis: every answer kept the document")
    return 0


if __name__ == "__main__":
    sys.exit(main())
