-- Merchant staff: owners and staff of one merchant, who log in with password and authenticator
-- code to the dashboard (/merchant); staff are scoped to the stores they are given.
CREATE TABLE merchant_users (
    id              TEXT    PRIMARY KEY,
    merchant_id     TEXT    NOT NULL REFERENCES merchants (id),
    email           TEXT    NOT NULL UNIQUE,
    password_hash   TEXT    NOT NULL,
    totp_secret     TEXT    NOT NULL,
    totp_last_step  BIGINT  NOT NULL DEFAULT 0,
    role            TEXT    NOT NULL CHECK (role IN ('owner', 'staff')),
    created_at      BIGINT  NOT NULL,
    created_by      TEXT    NOT NULL
);
CREATE INDEX merchant_users_merchant ON merchant_users (merchant_id);

CREATE TABLE merchant_user_stores (
    user_id   TEXT  NOT NULL REFERENCES merchant_users (id),
    store_id  TEXT  NOT NULL REFERENCES stores (id),
    PRIMARY KEY (user_id, store_id)
);

-- Sessions gain a third kind. SQLite cannot change a CHECK constraint in place: the table is
-- rebuilt (no other table refers to it).
CREATE TABLE sessions_new (
    id                TEXT    PRIMARY KEY,
    token_hash        TEXT    NOT NULL UNIQUE,
    kind              TEXT    NOT NULL CHECK (kind IN ('user', 'operator', 'merchant')),
    user_id           TEXT,
    operator_id       TEXT,
    role              TEXT,
    device_id         TEXT    NOT NULL,
    ip                TEXT,
    country           TEXT,
    created_at        BIGINT  NOT NULL,
    last_seen_at      BIGINT  NOT NULL,
    expires_at        BIGINT  NOT NULL,
    step_up_at        BIGINT  NOT NULL DEFAULT 0,
    revoked_at        BIGINT,
    merchant_user_id  TEXT
);
INSERT INTO sessions_new (id, token_hash, kind, user_id, operator_id, role, device_id, ip, country, created_at,
    last_seen_at, expires_at, step_up_at, revoked_at)
    SELECT id, token_hash, kind, user_id, operator_id, role, device_id, ip, country, created_at, last_seen_at,
        expires_at, step_up_at, revoked_at FROM sessions;
DROP TABLE sessions;
ALTER TABLE sessions_new RENAME TO sessions;
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_operator ON sessions (operator_id);
CREATE INDEX sessions_user_created ON sessions (user_id, created_at);
CREATE INDEX sessions_merchant_user ON sessions (merchant_user_id);
