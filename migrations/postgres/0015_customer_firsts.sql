-- Each customer's first payment at each store of a merchant, and at the merchant as a whole
-- (store_id ''), so that analytics tell new customers from returning ones without searching a
-- customer's whole history on every request (issue 12). Folded from `payments` by
-- `merchants::analytics::fold`: every minute, and before each analytics answer.
CREATE TABLE customer_firsts (
    merchant_id  TEXT    NOT NULL REFERENCES merchants (id),
    customer_ref TEXT    NOT NULL,
    store_id     TEXT    NOT NULL,
    first_at     BIGINT  NOT NULL,
    payment_id   TEXT    NOT NULL,
    PRIMARY KEY (merchant_id, customer_ref, store_id)
);
CREATE INDEX customer_firsts_by_time ON customer_firsts (merchant_id, store_id, first_at);

-- How far each merchant's payments are folded (a fold rereads the two minutes before, for
-- payments that committed late).
CREATE TABLE customer_folds (
    merchant_id  TEXT    PRIMARY KEY REFERENCES merchants (id),
    folded_to    BIGINT  NOT NULL
);

-- A merchant's payments of a period, read from the index alone by analytics.
DROP INDEX payments_merchant;
CREATE INDEX payments_merchant ON payments (merchant_id, created_at, status, store_id, amount, refunded, customer_ref);
