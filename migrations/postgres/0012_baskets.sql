-- Baskets and pseudonymous customers for merchants' analytics (issue 12).
-- customer_ref: a keyed pseudonym of (merchant, user), written with the payment; NULL on rows
-- older than this migration.
ALTER TABLE payments ADD COLUMN customer_ref TEXT;

-- The line items of a POS payment (none when the till sent no basket).
CREATE TABLE payment_items (
    payment_id   TEXT    NOT NULL REFERENCES payments (id),
    line_no      BIGINT  NOT NULL,
    sku          TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    category     TEXT,
    quantity     BIGINT  NOT NULL CHECK (quantity > 0),
    unit_amount  BIGINT  NOT NULL CHECK (unit_amount >= 0),
    currency     TEXT    NOT NULL CHECK (currency = 'JPY'),
    PRIMARY KEY (payment_id, line_no)
);

-- The items a refund returns (none when the refund named none).
CREATE TABLE refund_items (
    refund_id    TEXT    NOT NULL REFERENCES refunds (id),
    payment_id   TEXT    NOT NULL REFERENCES payments (id),
    sku          TEXT    NOT NULL,
    quantity     BIGINT  NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (refund_id, sku)
);
CREATE INDEX refund_items_payment ON refund_items (payment_id);

-- Analytics read one merchant's payments of a date range, and a customer's first visit.
CREATE INDEX payments_merchant_customer ON payments (merchant_id, customer_ref, created_at);
