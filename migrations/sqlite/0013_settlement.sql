-- Settlement of merchants' days, their lines, bank accounts and payout confirmations.

-- Each merchant's fee rate in basis points (198 = 1.98 %).
ALTER TABLE merchants ADD COLUMN fee_bps BIGINT NOT NULL DEFAULT 198;

-- One settlement per merchant and Asia/Tokyo date; figures never change once written.
CREATE TABLE settlements (
    id            TEXT    PRIMARY KEY,
    merchant_id   TEXT    NOT NULL REFERENCES merchants (id),
    date          TEXT    NOT NULL,
    payments      BIGINT  NOT NULL,
    gross         BIGINT  NOT NULL,
    refunds       BIGINT  NOT NULL,
    fee_bps       BIGINT  NOT NULL,
    fee           BIGINT  NOT NULL,
    carried_over  BIGINT  NOT NULL,
    net           BIGINT  NOT NULL,
    currency      TEXT    NOT NULL CHECK (currency = 'JPY'),
    status        TEXT    NOT NULL CHECK (status IN ('closed', 'carried', 'paid')),
    entry_id      BIGINT,
    created_at    BIGINT  NOT NULL,
    paid_at       BIGINT,
    UNIQUE (merchant_id, date)
);
CREATE INDEX settlements_date ON settlements (date);

-- Every payment and refund a settlement closed; each is settled once.
CREATE TABLE settlement_lines (
    settlement_id  TEXT    NOT NULL REFERENCES settlements (id),
    kind           TEXT    NOT NULL CHECK (kind IN ('payment', 'refund')),
    item_id        TEXT    NOT NULL,
    store_id       TEXT    NOT NULL,
    amount         BIGINT  NOT NULL,
    created_at     BIGINT  NOT NULL,
    UNIQUE (kind, item_id)
);
CREATE INDEX settlement_lines_settlement ON settlement_lines (settlement_id);

-- The claim of a closed day: the instance that inserts it closes the day.
CREATE TABLE settlement_days (
    date       TEXT    PRIMARY KEY,
    closed_at  BIGINT  NOT NULL
);

-- A merchant's bank accounts, every one kept; the newest whose effective_at has passed is in effect.
CREATE TABLE bank_accounts (
    id              TEXT    PRIMARY KEY,
    merchant_id     TEXT    NOT NULL REFERENCES merchants (id),
    bank_code       TEXT    NOT NULL,
    branch_code     TEXT    NOT NULL,
    account_type    TEXT    NOT NULL CHECK (account_type IN ('ordinary', 'current')),
    account_number  TEXT    NOT NULL,
    holder_kana     TEXT    NOT NULL,
    set_by          TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,
    effective_at    BIGINT  NOT NULL
);
CREATE INDEX bank_accounts_merchant ON bank_accounts (merchant_id, effective_at);

-- Four-eyes confirmation of a day's payouts.
CREATE TABLE payout_confirmations (
    date            TEXT    PRIMARY KEY,
    requested_by    TEXT    NOT NULL,
    reason          TEXT    NOT NULL,
    requested_at    BIGINT  NOT NULL,
    confirmed_by    TEXT,
    confirmed_at    BIGINT
);
