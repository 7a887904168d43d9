-- Generations of the read-mostly tables that instances keep in memory (src/store/cache.rs): every
-- insert, update or delete moves its group's generation in the writer's own transaction, so a
-- cached copy is known to be stale by every instance within a poll, and by the writer at once.
CREATE TABLE cache_generations (
    name        TEXT    PRIMARY KEY,
    generation  BIGINT  NOT NULL
);
INSERT INTO cache_generations (name, generation) VALUES ('switches', 1), ('risk_rules', 1), ('merchants', 1);
CREATE TRIGGER switches_generation_insert AFTER INSERT ON switches
    BEGIN UPDATE cache_generations SET generation = generation + 1 WHERE name = 'switches'; END;
CREATE TRIGGER switches_generation_update AFTER UPDATE ON switches
    BEGIN UPDATE cache_generations SET generation = generation + 1 WHERE name = 'switches'; END;
CREATE TRIGGER switches_generation_delete AFTER DELETE ON switches
    BEGIN UPDATE cache_generations SET generation = generation + 1 WHERE name = 'switches'; END;
CREATE TRIGGER risk_rules_generation_insert AFTER INSERT ON risk_rules
    BEGIN UPDATE cache_generations SET generation = generation + 1 WHERE name = 'risk_rules'; END;
CREATE TRIGGER risk_rules_generation_update AFTER UPDATE ON risk_rules
    BEGIN UPDATE cache_generations SET generation = generation + 1 WHERE name = 'risk_rules'; END;
CREATE TRIGGER risk_rules_generation_delete AFTER DELETE ON risk_rules
    BEGIN UPDATE cache_generations SET generation = generation + 1 WHERE name = 'risk_rules'; END;
CREATE TRIGGER merchants_generation_insert AFTER INSERT ON merchants
    BEGIN UPDATE cache_generations SET generation = generation + 1 WHERE name = 'merchants'; END;
CREATE TRIGGER merchants_generation_update AFTER UPDATE ON merchants
    BEGIN UPDATE cache_generations SET generation = generation + 1 WHERE name = 'merchants'; END;
CREATE TRIGGER merchants_generation_delete AFTER DELETE ON merchants
    BEGIN UPDATE cache_generations SET generation = generation + 1 WHERE name = 'merchants'; END;
CREATE TRIGGER stores_generation_insert AFTER INSERT ON stores
    BEGIN UPDATE cache_generations SET generation = generation + 1 WHERE name = 'merchants'; END;
CREATE TRIGGER stores_generation_update AFTER UPDATE ON stores
    BEGIN UPDATE cache_generations SET generation = generation + 1 WHERE name = 'merchants'; END;
CREATE TRIGGER stores_generation_delete AFTER DELETE ON stores
    BEGIN UPDATE cache_generations SET generation = generation + 1 WHERE name = 'merchants'; END;
CREATE TRIGGER terminals_generation_insert AFTER INSERT ON terminals
    BEGIN UPDATE cache_generations SET generation = generation + 1 WHERE name = 'merchants'; END;
CREATE TRIGGER terminals_generation_update AFTER UPDATE ON terminals
    BEGIN UPDATE cache_generations SET generation = generation + 1 WHERE name = 'merchants'; END;
CREATE TRIGGER terminals_generation_delete AFTER DELETE ON terminals
    BEGIN UPDATE cache_generations SET generation = generation + 1 WHERE name = 'merchants'; END;
CREATE TRIGGER webhook_endpoints_generation_insert AFTER INSERT ON webhook_endpoints
    BEGIN UPDATE cache_generations SET generation = generation + 1 WHERE name = 'merchants'; END;
CREATE TRIGGER webhook_endpoints_generation_update AFTER UPDATE ON webhook_endpoints
    BEGIN UPDATE cache_generations SET generation = generation + 1 WHERE name = 'merchants'; END;
CREATE TRIGGER webhook_endpoints_generation_delete AFTER DELETE ON webhook_endpoints
    BEGIN UPDATE cache_generations SET generation = generation + 1 WHERE name = 'merchants'; END;
