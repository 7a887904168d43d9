#!/usr/bin/env python3
"""kill -9 under load: no acknowledged payment or top-up is lost, the ledger balances, repeats replay.

Starts a sandbox server on DATABASE_URL (a fresh SQLite file by default), signs up shoppers with a
card, and from several threads charges their payment codes at a till of its own while they top up.
At a random moment it kills the server with SIGKILL and starts it again on the same database, ROUNDS
times. Then it checks that
  * every payment the till was answered 201 for exists, and every top-up answered 201 is in its
    wallet's history exactly once;
  * repeating every charge and top-up with its Idempotency-Key (answered or not) gives an answered
    one the same payment or top-up back;
  * `omamori admin verify` finds every balance equal to its postings, and `omamori admin audit
    verify` finds the audit chain intact.
Usage: bench/crash.py PATH_TO_OMAMORI [DATABASE_URL] [--rounds N]
"""

import importlib.util
import json
import os
import random
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


def credentials(i):
    return f"+8170{i:08d}", f"crash{i}@example.jp", "a long sandbox passphrase 42"


def log_in(base, i):
    """A fresh session for shopper `i` (SMS second step)."""
    phone, _, password = credentials(i)
    _, login = call(base, "POST", "/v1/login", {"login": phone, "password": password, "device_id": f"crash{i}"})
    call(base, "POST", f"/v1/challenges/{login['challenge_id']}/send", {"method": "sms"})
    _, verified = call(base, "POST", f"/v1/challenges/{login['challenge_id']}/verify",
                       {"method": "sms", "code": st.latest_code(base, phone)})
    return verified["session_token"]


def shopper(base, i):
    phone, email, password = credentials(i)
    _, started = call(base, "POST", "/v1/signup", {"phone": phone, "email": email, "password": password})
    call(base, "POST", f"/v1/signup/{started['signup_id']}/verify",
         {"phone_code": st.latest_code(base, phone), "email_code": st.latest_code(base, email)})
    token = log_in(base, i)
    card_body = {"number": luhn(f"42424242{i:07d}"), "exp_month": 12, "exp_year": 2030, "cvc": "123"}
    status, card = call(base, "POST", "/v1/cards", card_body, token)
    assert status == 201, card
    status, top = post_key(base, "/v1/topups", {"card_id": card["card_id"], "amount": 40_000}, token, f"top-{i}-0")
    assert status == 201, top
    return [token, card["card_id"]]


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


def pay_loop(base, token, terminal, i, acked, sent, stop, tag):
    n = 0
    while not stop.is_set():
        try:
            status, code = call(base, "POST", "/v1/payment-codes", None, token)
        except OSError:
            return
        if status != 201:
            return
        key = f"pay-{i}-{tag}-{n}"
        sent.append((key, code["code"]))
        status, paid = post_key(base, "/v1/pos/payments", {"code": code["code"], "amount": 100}, terminal, key)
        if status == 201:
            acked[key] = paid["payment_id"]
        elif status is None:
            return
        n += 1


ANSWERS = {}  # how the top-ups under load were answered, for the summary


def topup_loop(base, token, card, i, acked, sent, stop, tag):
    """Small top-ups, one every few payments: held or refused ones (the risk rules) are fine."""
    n = 0
    while not stop.is_set():
        key = f"top-{i}-{tag}-{n}"
        body = {"card_id": card, "amount": 300}
        sent.append((key, i, body))
        status, top = post_key(base, "/v1/topups", body, token, key)
        ANSWERS[f"{status} {(top or {}).get('code', '')}".strip()] = ANSWERS.get(f"{status} {(top or {}).get('code', '')}".strip(), 0) + 1
        if status == 201:
            acked[key] = top["topup_id"]
        elif status is None:
            return
        n += 1
        time.sleep(0.05)


def load_then_kill(binary, data_dir, database_url, server, base, ctx, tag):
    """Runs the load until a random moment, then kills the server with SIGKILL."""
    stop = threading.Event()
    threads = []
    for i, (token, card) in enumerate(ctx["shoppers"]):
        threads.append(threading.Thread(target=pay_loop, args=(base, token, ctx["terminal"], i, ctx["paid"], ctx["pays"], stop, tag)))
        threads.append(threading.Thread(target=topup_loop, args=(base, token, card, i, ctx["topped"], ctx["tops"], stop, tag)))
    for t in threads:
        t.start()
    time.sleep(random.uniform(0.5, 2.0))
    os.kill(server.pid, signal.SIGKILL)
    server.wait()
    stop.set()
    for t in threads:
        t.join()


def history_topups(base, token):
    """How many top-up lines a wallet's history holds."""
    count, cursor = 0, None
    while True:
        path = "/v1/transactions" + (f"?cursor={cursor}" if cursor else "")
        status, page = call(base, "GET", path, None, token)
        assert status == 200, page
        count += sum(1 for t in page["items"] if t["kind"] == "topup")
        cursor = page.get("next_cursor")
        if not cursor:
            return count


def check(base, ctx):
    """What must hold after the crashes; answers a list of problems."""
    problems = []
    terminal = ctx["terminal"]
    for key, pid in ctx["paid"].items():
        if call(base, "GET", f"/v1/pos/payments/{pid}", None, terminal)[0] != 200:
            problems.append(f"lost payment {key} {pid}")
    for key, code in ctx["pays"]:
        status, body = post_key(base, "/v1/pos/payments", {"code": code, "amount": 100}, terminal, key)
        if key in ctx["paid"] and (status != 201 or body["payment_id"] != ctx["paid"][key]):
            problems.append(f"payment repeat {key} answered {status} {body}")
    # Every top-up key, repeated: an answered one gets its top-up back, and the ones credited are
    # then exactly those answered 201, each once in its wallet's history (with the first, setup top-up).
    credited = {i: set() for i in range(len(ctx["shoppers"]))}
    for key, i, body in ctx["tops"]:
        status, answer = post_key(base, "/v1/topups", body, ctx["shoppers"][i][0], key)
        if status == 201:
            credited[i].add(answer["topup_id"])
        if key in ctx["topped"] and (status != 201 or answer["topup_id"] != ctx["topped"][key]):
            problems.append(f"top-up repeat {key} answered {status} {answer}")
    for i, (token, _) in enumerate(ctx["shoppers"]):
        lines = history_topups(base, token)
        if lines != len(credited[i]) + 1:
            problems.append(f"a wallet shows {lines} top-ups, {len(credited[i]) + 1} were credited")
    return problems


def admin(binary, data_dir, database_url, *args):
    env = dict(os.environ, OMAMORI_DATA_DIR=data_dir)
    if database_url:
        env["OMAMORI_DATABASE_URL"] = database_url
    return subprocess.run([binary, "admin", *args], env=env, capture_output=True, text=True)


def setup(base, data_dir):
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
    # Top-ups in flight at the kill are what this tests, not the fraud rules: the rules that would
    # hold a new phone's repeated top-ups for review are switched off (an admin's own change).
    status, rules = call(base, "GET", "/v1/admin/rules", None, operator)
    assert status == 200, rules
    for rule in rules["items"]:
        if rule["event"] == "topup" and rule["enabled"]:
            status, changed = call(base, "PUT", f"/v1/admin/rules/{rule['id']}", {"enabled": False}, operator)
            assert status == 200, changed
    return {"terminal": made["key"], "shoppers": [shopper(base, i) for i in range(4)],
            "paid": {}, "pays": [], "topped": {}, "tops": []}


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 1
    if "--rounds" in sys.argv:
        args.remove(str(rounds))
    binary = args[0]
    database_url = args[1] if len(args) > 1 else None
    with tempfile.TemporaryDirectory() as data_dir:
        server, base = start(binary, data_dir, database_url)
        ctx = setup(base, data_dir)
        for r in range(rounds):
            load_then_kill(binary, data_dir, database_url, server, base, ctx, r)
            print(f"round {r + 1}/{rounds}: killed -9; so far {len(ctx['paid'])} payments and "
                  f"{len(ctx['topped'])} top-ups acknowledged ({len(ctx['pays'])} and {len(ctx['tops'])} sent)",
                  flush=True)
            server, base = start(binary, data_dir, database_url)
            # An hour on, so that the top-up velocity limit lets each round's top-ups through again.
            status, _ = call(base, "POST", "/v1/sandbox/clock", {"advance_seconds": 3601})
            assert status == 200, status
            for i, s in enumerate(ctx["shoppers"]):
                s[0] = log_in(base, i)  # the hour ended their sessions
        try:
            problems = check(base, ctx)
        finally:
            server.terminate()
            server.wait(timeout=30)
        verify = admin(binary, data_dir, database_url, "verify")
        audit = admin(binary, data_dir, database_url, "audit", "verify")
    print(f"{rounds} kills; acknowledged: {len(ctx['paid'])} payments, {len(ctx['topped'])} top-ups; "
          f"problems: {len(problems)}; admin verify exit {verify.returncode}; admin audit verify exit {audit.returncode}")
    print(f"top-ups under load were answered: {ANSWERS}")
    ok = not problems and verify.returncode == 0 and audit.returncode == 0
    print("crash test:", "passed" if ok else f"FAILED {problems[:5]} {verify.stdout[-300:]} {verify.stderr[-300:]} "
          f"{audit.stdout[-300:]} {audit.stderr[-300:]}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
