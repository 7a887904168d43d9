-- Money: merchants, stores, terminals; cards and top-ups; payment codes, payments, refunds; limits.
-- Amounts are BIGINT yen with their currency; times BIGINT milliseconds (UTC).

CREATE TABLE merchants (
    id          TEXT    PRIMARY KEY,
    name        TEXT    NOT NULL,
    category    TEXT    NOT NULL,
    account_id  BIGINT  NOT NULL REFERENCES accounts (id),
    created_at  BIGINT  NOT NULL
);

CREATE TABLE stores (
    id           TEXT    PRIMARY KEY,
    merchant_id  TEXT    NOT NULL REFERENCES merchants (id),
    name         TEXT    NOT NULL,
    city         TEXT    NOT NULL,
    postal_code  TEXT,
    category     TEXT,
    created_at   BIGINT  NOT NULL
);
CREATE INDEX stores_merchant ON stores (merchant_id);

CREATE TABLE terminals (
    id          TEXT    PRIMARY KEY,
    store_id    TEXT    NOT NULL REFERENCES stores (id),
    key_hash    TEXT    NOT NULL UNIQUE,
    created_at  BIGINT  NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX terminals_store ON terminals (store_id);

-- A card fingerprint belongs to the first wallet that linked it, for good.
CREATE TABLE card_fingerprints (
    fingerprint  TEXT    PRIMARY KEY,
    user_id      TEXT    NOT NULL REFERENCES users (id),
    created_at   BIGINT  NOT NULL
);

CREATE TABLE cards (
    id                TEXT    PRIMARY KEY,
    user_id           TEXT    NOT NULL REFERENCES users (id),
    processor_token   TEXT    NOT NULL,
    brand             TEXT    NOT NULL,
    last4             TEXT    NOT NULL,
    fingerprint       TEXT    NOT NULL,
    status            TEXT    NOT NULL CHECK (status IN ('pending_challenge', 'held', 'active', 'removed')),
    challenge_id      TEXT,
    created_at        BIGINT  NOT NULL,
    removed_at        BIGINT
);
CREATE INDEX cards_user ON cards (user_id, status);

CREATE TABLE topups (
    id               TEXT    PRIMARY KEY,
    user_id          TEXT    NOT NULL REFERENCES users (id),
    card_id          TEXT    NOT NULL REFERENCES cards (id),
    amount           BIGINT  NOT NULL CHECK (amount > 0),
    currency         TEXT    NOT NULL CHECK (currency = 'JPY'),
    status           TEXT    NOT NULL CHECK (status IN ('pending', 'succeeded', 'declined', 'held', 'abandoned', 'charged_back', 'reversed')),
    processor_ref    TEXT,
    idem_key         TEXT    NOT NULL,
    device_id        TEXT    NOT NULL,
    created_at       BIGINT  NOT NULL,
    settled_at       BIGINT,
    UNIQUE (user_id, idem_key)
);
CREATE INDEX topups_user ON topups (user_id, created_at);
CREATE INDEX topups_pending ON topups (status, created_at);

CREATE TABLE payment_codes (
    code_hash   TEXT    PRIMARY KEY,
    user_id     TEXT    NOT NULL REFERENCES users (id),
    device_id   TEXT    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('active', 'used', 'replaced')),
    created_at  BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL
);
CREATE INDEX payment_codes_device ON payment_codes (user_id, device_id, state);

CREATE TABLE payments (
    id           TEXT    PRIMARY KEY,
    user_id      TEXT    NOT NULL REFERENCES users (id),
    merchant_id  TEXT    NOT NULL REFERENCES merchants (id),
    store_id     TEXT    NOT NULL REFERENCES stores (id),
    terminal_id  TEXT,
    code_hash    TEXT    UNIQUE,
    source       TEXT    NOT NULL CHECK (source IN ('code', 'store_qr')),
    amount       BIGINT  NOT NULL CHECK (amount > 0),
    refunded     BIGINT  NOT NULL DEFAULT 0,
    currency     TEXT    NOT NULL CHECK (currency = 'JPY'),
    status       TEXT    NOT NULL CHECK (status IN ('succeeded', 'reversed')),
    order_ref    TEXT,
    idem_key     TEXT,
    created_at   BIGINT  NOT NULL,
    CHECK (refunded >= 0 AND refunded <= amount)
);
CREATE INDEX payments_user ON payments (user_id, created_at);
CREATE INDEX payments_merchant ON payments (merchant_id, created_at);
-- A terminal's Idempotency-Key names at most one charge (store-QR payments have no terminal).
CREATE UNIQUE INDEX payments_terminal_key ON payments (terminal_id, idem_key);

CREATE TABLE refunds (
    id          TEXT    PRIMARY KEY,
    payment_id  TEXT    NOT NULL REFERENCES payments (id),
    amount      BIGINT  NOT NULL CHECK (amount > 0),
    currency    TEXT    NOT NULL CHECK (currency = 'JPY'),
    created_at  BIGINT  NOT NULL
);
CREATE INDEX refunds_payment ON refunds (payment_id);

CREATE TABLE wallet_limits (
    user_id      TEXT    PRIMARY KEY REFERENCES users (id),
    per_payment  BIGINT  NOT NULL,
    daily        BIGINT  NOT NULL,
    monthly      BIGINT  NOT NULL,
    updated_at   BIGINT  NOT NULL
);
