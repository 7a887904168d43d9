-- The foundation: ledger, idempotency, outbox, service clock.
-- Times are BIGINT milliseconds since the Unix epoch (UTC); amounts are BIGINT yen.

CREATE TABLE accounts (
    id          INTEGER PRIMARY KEY,
    kind        TEXT    NOT NULL CHECK (kind IN ('wallet', 'merchant', 'funding_clearing', 'fees', 'suspense', 'losses')),
    currency    TEXT    NOT NULL CHECK (currency = 'JPY'),
    owner_ref   TEXT,
    balance     BIGINT  NOT NULL DEFAULT 0,
    created_at  BIGINT  NOT NULL,
    CONSTRAINT wallet_balance_not_negative CHECK (kind <> 'wallet' OR balance >= 0)
);
CREATE INDEX accounts_owner_ref ON accounts (owner_ref);

CREATE TABLE journal_entries (
    id          INTEGER PRIMARY KEY,
    kind        TEXT    NOT NULL,
    reference   TEXT    NOT NULL,
    currency    TEXT    NOT NULL CHECK (currency = 'JPY'),
    created_at  BIGINT  NOT NULL
);
CREATE INDEX journal_entries_reference ON journal_entries (reference);

CREATE TABLE postings (
    id             INTEGER PRIMARY KEY,
    entry_id       BIGINT  NOT NULL REFERENCES journal_entries (id),
    account_id     BIGINT  NOT NULL REFERENCES accounts (id),
    amount         BIGINT  NOT NULL CHECK (amount <> 0),
    balance_after  BIGINT  NOT NULL,
    currency       TEXT    NOT NULL CHECK (currency = 'JPY'),
    created_at     BIGINT  NOT NULL
);
CREATE INDEX postings_entry ON postings (entry_id);
CREATE INDEX postings_account ON postings (account_id, id);

-- Entries are never updated or deleted: corrections are new entries.
CREATE TRIGGER journal_entries_no_update BEFORE UPDATE ON journal_entries
BEGIN SELECT RAISE(ABORT, 'journal entries are immutable'); END;
CREATE TRIGGER journal_entries_no_delete BEFORE DELETE ON journal_entries
BEGIN SELECT RAISE(ABORT, 'journal entries are immutable'); END;
CREATE TRIGGER postings_no_update BEFORE UPDATE ON postings
BEGIN SELECT RAISE(ABORT, 'postings are immutable'); END;
CREATE TRIGGER postings_no_delete BEFORE DELETE ON postings
BEGIN SELECT RAISE(ABORT, 'postings are immutable'); END;

CREATE TABLE idempotency_keys (
    caller        TEXT    NOT NULL,
    idem_key      TEXT    NOT NULL,
    fingerprint   TEXT    NOT NULL,
    claim         TEXT    NOT NULL,
    state         TEXT    NOT NULL CHECK (state IN ('running', 'done')),
    status        BIGINT,
    content_type  TEXT,
    body          TEXT,
    lease_until   BIGINT  NOT NULL,
    created_at    BIGINT  NOT NULL,
    PRIMARY KEY (caller, idem_key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY,
    channel          TEXT    NOT NULL CHECK (channel IN ('sms', 'email', 'webhook')),
    recipient        TEXT    NOT NULL,
    kind             TEXT    NOT NULL,
    subject          TEXT,
    body             TEXT    NOT NULL,
    code             TEXT,
    status           TEXT    NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT  NOT NULL,
    created_at       BIGINT  NOT NULL,
    delivered_at     BIGINT
);
CREATE INDEX outbox_recipient ON outbox (recipient, id);
CREATE INDEX outbox_pending ON outbox (status, next_attempt_at);

CREATE TABLE service_clock (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    offset_ms  BIGINT  NOT NULL DEFAULT 0 CHECK (offset_ms >= 0)
);
INSERT INTO service_clock (id, offset_ms) VALUES (1, 0);
