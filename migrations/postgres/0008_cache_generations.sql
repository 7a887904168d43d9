-- Generations of the read-mostly tables that instances keep in memory (src/store/cache.rs): every
-- insert, update or delete moves its group's generation in the writer's own transaction, so a
-- cached copy is known to be stale by every instance within a poll, and by the writer at once.
CREATE TABLE cache_generations (
    name        TEXT    PRIMARY KEY,
    generation  BIGINT  NOT NULL
);
INSERT INTO cache_generations (name, generation) VALUES ('switches', 1), ('risk_rules', 1), ('merchants', 1);
CREATE FUNCTION omamori_next_generation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE cache_generations SET generation = generation + 1 WHERE name = TG_ARGV[0];
    RETURN NULL;
END
$$;
CREATE TRIGGER switches_generation AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON switches
    FOR EACH STATEMENT EXECUTE FUNCTION omamori_next_generation('switches');
CREATE TRIGGER risk_rules_generation AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON risk_rules
    FOR EACH STATEMENT EXECUTE FUNCTION omamori_next_generation('risk_rules');
CREATE TRIGGER merchants_generation AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON merchants
    FOR EACH STATEMENT EXECUTE FUNCTION omamori_next_generation('merchants');
CREATE TRIGGER stores_generation AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON stores
    FOR EACH STATEMENT EXECUTE FUNCTION omamori_next_generation('merchants');
CREATE TRIGGER terminals_generation AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON terminals
    FOR EACH STATEMENT EXECUTE FUNCTION omamori_next_generation('merchants');
CREATE TRIGGER webhook_endpoints_generation AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON webhook_endpoints
    FOR EACH STATEMENT EXECUTE FUNCTION omamori_next_generation('merchants');
