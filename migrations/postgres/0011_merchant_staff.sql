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

-- Sessions gain a third kind.
ALTER TABLE sessions DROP CONSTRAINT sessions_kind_check;
ALTER TABLE sessions ADD CONSTRAINT sessions_kind_check CHECK (kind IN ('user', 'operator', 'merchant'));
ALTER TABLE sessions ADD COLUMN merchant_user_id TEXT;
CREATE INDEX sessions_merchant_user ON sessions (merchant_user_id);
