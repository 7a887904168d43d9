-- Notifications: the dispatcher's bookkeeping on the outbox, and merchant webhook endpoints.

-- event_id: a merchant webhook event's id, the same on every retry (receivers deduplicate on it);
-- claim: which dispatcher pass holds the row while it delivers; delivered_via: the channel that
-- took it (smtp, sms_gateway, webhook, oncall, sandbox); last_error: why the last attempt failed.
ALTER TABLE outbox ADD COLUMN event_id TEXT;
ALTER TABLE outbox ADD COLUMN claim TEXT;
ALTER TABLE outbox ADD COLUMN delivered_via TEXT;
ALTER TABLE outbox ADD COLUMN last_error TEXT;
CREATE UNIQUE INDEX outbox_event ON outbox (event_id, recipient);

-- A merchant's webhook endpoint. Its signing secret is not stored: it is derived from the
-- configured webhook_signing_key (key_id names which) and the endpoint's salt, shown once.
CREATE TABLE webhook_endpoints (
    id           TEXT    PRIMARY KEY,
    merchant_id  TEXT    NOT NULL REFERENCES merchants (id),
    url          TEXT    NOT NULL,
    salt         TEXT    NOT NULL,
    key_id       TEXT    NOT NULL,
    created_at   BIGINT  NOT NULL,
    disabled_at  BIGINT
);
CREATE INDEX webhook_endpoints_merchant ON webhook_endpoints (merchant_id);
