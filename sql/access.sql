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
    -- dpdb_inspector: a reader that also reads the loaded release schemas and the registry
    -- tables (not the audit log): what plots and provenance run as (dpdb/readers.py).
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dpdb_inspector') THEN
        CREATE ROLE dpdb_inspector NOLOGIN IN ROLE dpdb_reader;
    END IF;
    -- dpdb_published: a reader that also reads the release schemas that were validated or
    -- activated (as-of queries of a restored release): what user SQL runs as (dpdb/readers.py).
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dpdb_published') THEN
        CREATE ROLE dpdb_published NOLOGIN IN ROLE dpdb_reader;
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
    FOREACH s IN ARRAY ARRAY['current', 'previous', 'samples', 'prompt', 'prompt_as_of', 'tap_schema'] LOOP
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

-- Least privilege (dpdb/readers.py). Readers see the registry through the read-only views of
-- schema dpdb_registry (no audit log, no archive paths, no validation reports).
CREATE SCHEMA IF NOT EXISTS dpdb_registry;
COMMENT ON SCHEMA dpdb_registry IS 'Read-only views of the dpdb_meta registry for readers';
REVOKE ALL ON SCHEMA dpdb_registry FROM PUBLIC;
DO $$
DECLARE
    wanted text[] := ARRAY['name', 'state', 'origin', 'schema_version', 'created_at', 'loaded_at',
                           'validated_at', 'activated_at', 'superseded_at', 'archived_at'];
    cols text;
BEGIN
    -- Dropped and made anew: the registry tables gain columns with the schema versions.
    DROP VIEW IF EXISTS dpdb_registry.catalog, dpdb_registry.release, dpdb_registry.prompt_visit,
        dpdb_registry.prompt_latest, dpdb_registry.release_activation;
    EXECUTE 'CREATE VIEW dpdb_registry.catalog AS '
            'SELECT name, kind, schema_version, partition_order, created_at FROM dpdb_meta.catalog';
    SELECT string_agg(quote_ident(w), ', ' ORDER BY k) INTO cols
    FROM unnest(wanted) WITH ORDINALITY AS u(w, k)
    WHERE EXISTS (SELECT 1 FROM information_schema.columns c WHERE c.table_schema = 'dpdb_meta'
                  AND c.table_name = 'release' AND c.column_name = w);
    EXECUTE format('CREATE VIEW dpdb_registry.release AS SELECT %s FROM dpdb_meta.release', cols);
    IF to_regclass('dpdb_meta.prompt_visit') IS NOT NULL THEN
        EXECUTE 'CREATE VIEW dpdb_registry.prompt_visit AS '
                'SELECT visit, processing_time_mjd_tai, midpoint_mjd_tai, ingested_at FROM dpdb_meta.prompt_visit';
    END IF;
    IF to_regclass('dpdb_meta.prompt_visit') IS NOT NULL AND to_regclass('dpdb_meta.prompt_relink') IS NOT NULL THEN
        -- The latest committed processing time: as-of instants up to it give repeatable answers.
        EXECUTE 'CREATE VIEW dpdb_registry.prompt_latest AS SELECT greatest('
                '(SELECT max(processing_time_mjd_tai) FROM dpdb_meta.prompt_visit), '
                '(SELECT max(processing_time_mjd_tai) FROM dpdb_meta.prompt_relink)) AS latest_mjd_tai';
    END IF;
    IF to_regclass('dpdb_meta.release_activation') IS NOT NULL THEN
        EXECUTE 'CREATE VIEW dpdb_registry.release_activation AS SELECT * FROM dpdb_meta.release_activation';
    END IF;
END $$;
GRANT USAGE ON SCHEMA dpdb_registry TO dpdb_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA dpdb_registry TO dpdb_reader;

-- The inspector reads the registry tables (but the audit log) and every release schema
-- (dpdb/access.py grants each new release).
GRANT SELECT ON ALL TABLES IN SCHEMA dpdb_meta TO dpdb_inspector;
REVOKE SELECT ON dpdb_meta.audit_log FROM dpdb_inspector;
DO $$
DECLARE
    s text;
BEGIN
    FOR s IN SELECT name FROM dpdb_meta.catalog WHERE kind = 'release' AND to_regnamespace(quote_ident(name)) IS NOT NULL
    LOOP
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO dpdb_inspector', s);
        EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO dpdb_inspector', s);
    END LOOP;
    FOR s IN SELECT c.name FROM dpdb_meta.catalog c JOIN dpdb_meta.release r USING (name)
             WHERE (r.validated_at IS NOT NULL OR r.activated_at IS NOT NULL)
               AND to_regnamespace(quote_ident(c.name)) IS NOT NULL
    LOOP
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO dpdb_published', s);
        EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO dpdb_published', s);
    END LOOP;
END $$;

-- Advisory locks serialize dpdb's writers (prompt ingest, lifecycle, loads): a reader holding
-- one could stall them, so only loaders may take them.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
             WHERE p.pronamespace = 'pg_catalog'::regnamespace
               AND (p.proname LIKE 'pg\_advisory\_%' OR p.proname LIKE 'pg\_try\_advisory\_%')
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO dpdb_loader', f);
    END LOOP;
END $$;
