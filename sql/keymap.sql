-- Keys unique across a whole spatially partitioned table (dpdb/keymap.py).
--
-- PostgreSQL cannot put a unique index on a partitioned table that leaves out the
-- partition key, so each partitioned catalog table <t> has a key map <schema>._keys_<t>
-- (its primary key without _healpix_29, unique, and the row's _healpix_29), kept by
-- these statement-level triggers from the rows a statement inserted, deleted or
-- updated (transition tables). A second row with a key the table already holds, in
-- any partition, violates the map's primary key and the whole statement fails.
-- TG_ARGV[0] is the comma-separated list of key columns. SECURITY DEFINER: whoever may
-- write the table keeps its map, without rights on the map itself.
--
-- A map may be deferred: empty while its table holds rows. A release loaded with deferred
-- indexes checks its keys once, in memory, when it loads (dpdb/lifecycle/bulk.py) and leaves
-- its maps empty; the first statement that then writes a key into the table fills the map
-- from the whole table first (keymap_fill), so a repeat of any key held is refused as ever.

-- Fill the deferred map of sch.tbl from the table (its rows as this statement sees them,
-- the calling statement's own included) and return true; return false, doing nothing, if
-- the map holds keys or the table holds no row. Concurrent fillers queue on the map's lock
-- and the later ones find it filled.
CREATE OR REPLACE FUNCTION dpdb_meta.keymap_fill(sch text, tbl text, keys text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cols text := (SELECT string_agg(quote_ident(c), ', ') FROM unnest(string_to_array(keys, ',')) c);
    map text := format('%I.%I', sch, '_keys_' || tbl);
    deferred text := format('SELECT NOT EXISTS (SELECT 1 FROM %s) AND EXISTS (SELECT 1 FROM %I.%I)',
                            map, sch, tbl);
    yes boolean;
BEGIN
    EXECUTE deferred INTO yes;
    IF NOT yes THEN
        RETURN false;
    END IF;
    EXECUTE format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', map);
    EXECUTE deferred INTO yes;  -- a new snapshot: another filler may have committed meanwhile
    IF NOT yes THEN
        RETURN false;
    END IF;
    -- In key order: the unique index fills page after page instead of at random places. (Not
    -- unkeyed and then keyed: that needs an ACCESS EXCLUSIVE lock, which deadlocks with a
    -- concurrent first writer holding the check's ACCESS SHARE while it waits above.)
    EXECUTE format('INSERT INTO %s (%s, _healpix_29) SELECT %s, _healpix_29 FROM %I.%I ORDER BY %s',
                   map, cols, cols, sch, tbl, cols);
    RETURN true;
END $$;

CREATE OR REPLACE FUNCTION dpdb_meta.keymap_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cols text := (SELECT string_agg(quote_ident(c), ', ') FROM unnest(string_to_array(TG_ARGV[0], ',')) c);
BEGIN
    IF dpdb_meta.keymap_fill(TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_ARGV[0]) THEN
        RETURN NULL;  -- the map was deferred: now filled, these rows included
    END IF;
    EXECUTE format('INSERT INTO %I.%I (%s, _healpix_29) SELECT %s, _healpix_29 FROM new_rows',
                   TG_TABLE_SCHEMA, '_keys_' || TG_TABLE_NAME, cols, cols);
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION dpdb_meta.keymap_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    same text := (SELECT string_agg(format('m.%1$I = o.%1$I', c), ' AND ')
                  FROM unnest(string_to_array(TG_ARGV[0], ',')) c);
BEGIN
    EXECUTE format('DELETE FROM %I.%I m USING old_rows o WHERE %s AND m._healpix_29 = o._healpix_29',
                   TG_TABLE_SCHEMA, '_keys_' || TG_TABLE_NAME, same);
    RETURN NULL;
END $$;

-- An update that keeps each row's key and pixel (most do: validity ends, aggregates)
-- leaves the map alone; a changed key or pixel moves the map entry. Whether any key
-- changed is found first, from the two transition tables alone (a hash anti-join:
-- enable_nestloop off, since the planner cannot see that these joins are large), so
-- the usual update neither scans the map nor compares every row with every other.
CREATE OR REPLACE FUNCTION dpdb_meta.keymap_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET enable_nestloop = off AS $$
DECLARE
    keys text[] := string_to_array(TG_ARGV[0], ',');
    cols text := (SELECT string_agg(quote_ident(c), ', ') FROM unnest(keys) c);
    mo text := (SELECT string_agg(format('m.%1$I = o.%1$I', c), ' AND ') FROM unnest(keys) c);
    no text := (SELECT string_agg(format('n.%1$I = o.%1$I', c), ' AND ') FROM unnest(keys) c);
    map text := format('%I.%I', TG_TABLE_SCHEMA, '_keys_' || TG_TABLE_NAME);
    changed boolean;
BEGIN
    -- an UPDATE gives one new row per old row: if every old key is among the new
    -- ones, the two key sets are equal and the map stays as it is
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM old_rows o WHERE NOT EXISTS '
                   '(SELECT 1 FROM new_rows n WHERE %s AND n._healpix_29 = o._healpix_29))', no)
        INTO changed;
    IF NOT changed OR dpdb_meta.keymap_fill(TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_ARGV[0]) THEN
        RETURN NULL;
    END IF;
    EXECUTE format('DELETE FROM %s m USING old_rows o WHERE %s AND m._healpix_29 = o._healpix_29 '
                   'AND NOT EXISTS (SELECT 1 FROM new_rows n WHERE %s AND n._healpix_29 = o._healpix_29)',
                   map, mo, no);
    EXECUTE format('INSERT INTO %s (%s, _healpix_29) SELECT %s, _healpix_29 FROM new_rows n '
                   'WHERE NOT EXISTS (SELECT 1 FROM old_rows o WHERE %s AND n._healpix_29 = o._healpix_29)',
                   map, cols, (SELECT string_agg('n.' || quote_ident(c), ', ') FROM unnest(keys) c), no);
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION dpdb_meta.keymap_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('TRUNCATE %I.%I', TG_TABLE_SCHEMA, '_keys_' || TG_TABLE_NAME);
    RETURN NULL;
END $$;

REVOKE ALL ON FUNCTION dpdb_meta.keymap_insert(), dpdb_meta.keymap_delete(), dpdb_meta.keymap_update(),
    dpdb_meta.keymap_truncate(), dpdb_meta.keymap_fill(text, text, text) FROM PUBLIC;
-- A file load that writes a map itself (etl/partitions.py) fills a deferred one first.
DO $$ BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dpdb_loader') THEN
        GRANT EXECUTE ON FUNCTION dpdb_meta.keymap_fill(text, text, text) TO dpdb_loader;
    END IF;
END $$;
