#!/usr/bin/env python3
"""kill -9 under load: no acknowledged payment is lost, the ledger balances, repeats replay.

Starts a sandbox server on DATABASE_URL (a fresh SQLite file by default), signs up shoppers who top
up, and charges their payment codes at the demo till from several threads. After a few seconds it
kills the server with SIGKILL, starts it again on the same database and checks that
  * every payment the till was answered 201 for exists, with its amount;
  * repeating every charge with its Idempotency-Key (answered or not) moves no more money: a
    repeat of an answered one gets the same payment back;
  * `omamori admin verify` finds every balance equal to its postings.
Usage: bench/crash.py PATH_TO_OMAMORI [DATABASE_URL]
"""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("st", os.path.join(HERE, "..", ".ci", "schemathesis.py"))
st = importlib.util.module_from_spec(spec)
spec.loader.exec_module(st)
call = st.call


def start(binary, data_dir, database_url):
    env = dict(os.environ, OMAMORI_LISTEN="127.0.0.1:0", OMAMORI_DATA_DIR=data_dir, OMAMORI_SANDBOX="true",
               RUST_LOG="warn")
    if database_url:
        env["OMAMORI_DATABASE_URL"] = database_url
    server = subprocess.Popen([binary, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in server.stdout:
        if line.startswith("listening on "):
            return server, line.split()[-1].replace("127.0.0.1", "localhost")
    sys.exit("the server did not start")


def shopper(base, i):
    phone, email, password = f"+8190{i:08d}", f"crash{i}@example.jp", "a long sandbox passphrase 42"
    _, started = call(base, "POST", "/v1/signup", {"phone": phone, "email": email, "password": password})
    call(base, "POST", f"/v1/signup/{started['signup_id']}/verify",
         {"phone_code": st.latest_code(base, phone), "email_code": st.latest_code(base, email)})
    _, login = call(base, "POST", "/v1/login", {"login": phone, "password": password, "device_id": f"crash{i}"})
    call(base, "POST", f"/v1/challenges/{login['challenge_id']}/send", {"method": "sms"})
    _, verified = call(base, "POST", f"/v1/challenges/{login['challenge_id']}/verify",
                       {"method": "sms", "code": st.latest_code(base, phone)})
    token = verified["session_token"]
    card_body = {"number": luhn(f"42424242{i:07d}"), "exp_month": 12, "exp_year": 2030, "cvc": "123"}
    status, card = call(base, "POST", "/v1/cards", card_body, token)
    assert status == 201, card
    for n in range(2):
        status, top = post_key(base, "/v1/topups", {"card_id": card["card_id"], "amount": 50_000}, token, f"top-{i}-{n}")
        assert status == 201, top
    return token


def luhn(digits):
    """`digits` with the check digit that makes the number Luhn-valid."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return digits + str((10 - total % 10) % 10)


def post_key(base, path, body, token, key):
    import urllib.request
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Idempotency-Key", key)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")
    except OSError:
        return None, None  # the server died under us


def pay_loop(base, token, terminal, i, acked, sent, stop):
    n = 0
    while not stop.is_set():
        try:
            status, code = call(base, "POST", "/v1/payment-codes", None, token)
        except OSError:
            return
        if status != 201:
            return
        key = f"pay-{i}-{n}"
        sent.append((key, code["code"]))
        status, paid = post_key(base, "/v1/pos/payments", {"code": code["code"], "amount": 100}, terminal, key)
        if status == 201:
            acked[key] = paid["payment_id"]
        elif status is None:
            return
        n += 1


def main():
    binary = sys.argv[1]
    database_url = sys.argv[2] if len(sys.argv) > 2 else None
    with tempfile.TemporaryDirectory() as data_dir:
        server, base = start(binary, data_dir, database_url)
        with open(os.path.join(data_dir, "sandbox.json")) as f:
            sandbox = json.load(f)
        # A store and till of our own: a sandbox restart revokes the demo store's terminals, and a
        # repeat must come from the same terminal to be a repeat.
        operator = st.operator_token(base, sandbox)
        status, store = call(base, "POST", f"/v1/admin/merchants/{sandbox['merchant_id']}/stores",
                             {"name": "Crash Test Till", "city": "Tokyo"}, operator)
        assert status == 201, store
        status, made = call(base, "POST", f"/v1/admin/stores/{store['store_id']}/terminals", None, operator)
        assert status == 201, made
        terminal = made["key"]
        tokens = [shopper(base, i) for i in range(4)]
        acked, sent, stop = {}, [], threading.Event()
        threads = [threading.Thread(target=pay_loop, args=(base, t, terminal, i, acked, sent, stop)) for i, t in
                   enumerate(tokens)]
        for t in threads:
            t.start()
        time.sleep(4)
        os.kill(server.pid, signal.SIGKILL)
        server.wait()
        stop.set()
        for t in threads:
            t.join()
        print(f"killed -9 after {len(acked)} acknowledged payments ({len(sent)} sent)")
        server, base = start(binary, data_dir, database_url)
        try:
            lost = [k for k, pid in acked.items() if call(base, "GET", f"/v1/pos/payments/{pid}", None, terminal)[0] != 200]
            wrong = []
            for key, code in sent:
                status, body = post_key(base, "/v1/pos/payments", {"code": code, "amount": 100}, terminal, key)
                if key in acked and (status != 201 or body["payment_id"] != acked[key]):
                    wrong.append((key, status, body))
        finally:
            server.terminate()
            server.wait(timeout=30)
        env = dict(os.environ, OMAMORI_DATA_DIR=data_dir)
        if database_url:
            env["OMAMORI_DATABASE_URL"] = database_url
        verify = subprocess.run([binary, "admin", "verify"], env=env, capture_output=True, text=True)
    print(f"lost acknowledged payments: {len(lost)}; repeats answered differently: {len(wrong)}; "
          f"admin verify exit {verify.returncode}: {verify.stdout.strip().splitlines()[-1] if verify.stdout.strip() else ''}")
    ok = not lost and not wrong and verify.returncode == 0
    print("crash test:", "passed" if ok else f"FAILED {lost[:3]} {wrong[:3]} {verify.stderr[-300:]}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
