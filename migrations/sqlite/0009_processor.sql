-- A real card processor (Stripe). A card whose issuer asks for 3-D Secure keeps the processor's
-- reference of that check (a SetupIntent id), to ask the processor whether it passed. A top-up's
-- processor_ref is now recorded before the charge is confirmed (a PaymentIntent id), so that a
-- repeat or the sweeper finds that very charge. Processor events (webhooks) are kept by id, once.
ALTER TABLE cards ADD COLUMN processor_setup TEXT;
CREATE INDEX topups_processor_ref ON topups (processor_ref);

CREATE TABLE processor_events (
    id           TEXT    PRIMARY KEY,
    kind         TEXT    NOT NULL,
    received_at  BIGINT  NOT NULL
);
