-- Roles and privileges (installed on every `dpdb db migrate`; idempotent).
--
--   dpdb_reader  reads current, previous, samples, prompt (and prompt_as_of): SELECT only,
--                plus the public reference tables a client needs (schema version, catalog
--                list, leap seconds, activation history). No writes, no DDL, no operational bookkeeping
--                (audit log, load manifest, release registry, ingest registers).
--   dpdb_loader  a reader that also loads: the prompt tables and the bookkeeping a load
--                writes; each release that is not frozen gets its own grant
--                (dpdb/access.py: granted at create, revoked when validated).
--   dpdb_admin   everything dpdb keeps (the lifecycle CLI).
-- Logins are made with `dpdb db grant-reader NAME` (member of dpdb_reader).
-- Release tables are read through the views of current/previous, which run with their
-- owner's rights, so readers never need rights on the release schemas themselves.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dpdb_reader') THEN
        CREATE ROLE dpdb_reader NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dpdb_loader') THEN
        CREATE ROLE dpdb_loader NOLOGIN IN ROLE dpdb_reader;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dpdb_admin') THEN
        CREATE ROLE dpdb_admin NOLOGIN IN ROLE dpdb_loader;
    END IF;
END $$;

CREATE SCHEMA IF NOT EXISTS current;
CREATE SCHEMA IF NOT EXISTS previous;
CREATE SCHEMA IF NOT EXISTS samples;
COMMENT ON SCHEMA current IS 'Views on the active data release (dpdb release activate)';
COMMENT ON SCHEMA previous IS 'Views on the penultimate data release';
COMMENT ON SCHEMA samples IS 'A fixed sky region of every activated data release, kept after archiving';

REVOKE ALL ON SCHEMA dpdb_meta FROM PUBLIC;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

DO $$
DECLARE
    s text;
BEGIN
    FOREACH s IN ARRAY ARRAY['current', 'previous', 'samples', 'prompt', 'prompt_as_of'] LOOP
        CONTINUE WHEN to_regnamespace(s) IS NULL;
        EXECUTE format('REVOKE ALL ON SCHEMA %I FROM PUBLIC', s);
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO dpdb_reader', s);
        EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO dpdb_reader', s);
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT ON TABLES TO dpdb_reader', s);
        EXECUTE format('GRANT ALL ON SCHEMA %I TO dpdb_admin', s);
        EXECUTE format('GRANT ALL ON ALL TABLES IN SCHEMA %I TO dpdb_admin', s);
    END LOOP;
    IF to_regnamespace('prompt') IS NOT NULL THEN
        GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA prompt TO dpdb_loader;
    END IF;
END $$;

GRANT USAGE ON SCHEMA dpdb_meta TO dpdb_reader;
GRANT SELECT ON dpdb_meta.schema_version, dpdb_meta.catalog TO dpdb_reader;
DO $$
BEGIN
    IF to_regclass('dpdb_meta.leap_second') IS NOT NULL THEN
        GRANT SELECT ON dpdb_meta.leap_second TO dpdb_reader;
    END IF;
    IF to_regclass('dpdb_meta.release_activation') IS NOT NULL THEN
        GRANT SELECT ON dpdb_meta.release_activation TO dpdb_reader;  -- which release was current when
    END IF;
    IF to_regclass('dpdb_meta.citation') IS NOT NULL THEN
        GRANT SELECT ON dpdb_meta.citation TO dpdb_reader;  -- citations are public metadata (landing pages)
    END IF;
    IF to_regclass('dpdb_meta.prompt_visit') IS NOT NULL THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON dpdb_meta.prompt_visit TO dpdb_loader;
    END IF;
    IF to_regclass('dpdb_meta.prompt_relink') IS NOT NULL THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON dpdb_meta.prompt_relink TO dpdb_loader;
    END IF;
END $$;
GRANT SELECT, INSERT, UPDATE, DELETE ON dpdb_meta.load_manifest TO dpdb_loader;
GRANT SELECT, UPDATE ON dpdb_meta.release TO dpdb_loader;
GRANT INSERT ON dpdb_meta.audit_log TO dpdb_loader;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA dpdb_meta TO dpdb_loader;
GRANT ALL ON SCHEMA dpdb_meta TO dpdb_admin;
GRANT ALL ON ALL TABLES IN SCHEMA dpdb_meta TO dpdb_admin;
GRANT ALL ON ALL SEQUENCES IN SCHEMA dpdb_meta TO dpdb_admin;
