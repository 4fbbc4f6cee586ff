-- Time travel (DPDD §2.5): every prompt table read as it was at an instant.
--
-- A row is visible at instant t (MJD TAI) when
--   versioned tables (DiaObject, SSObject):  validityStartMjdTai <= t < validityEndMjdTai (open end: now)
--   other tables:                            timeProcessedMjdTai <= t < timeWithdrawnMjdTai (NULL start:
--                                            loaded before times were recorded, visible at every instant)
-- Rows are never deleted or changed except to close these intervals, so a query
-- as of a past instant gives the same rows forever after.
--
-- Function form, one per table, taking MJD TAI, a timestamptz or text (either):
--   SELECT count(*) FROM prompt.DiaObject_as_of(61001.5);
--   SELECT * FROM prompt.DiaSource_as_of(timestamptz '2026-03-01 12:00Z') WHERE diaObjectId = 123;
--   SELECT * FROM prompt.DiaObject_as_of('2026-03-01T12:00:00Z')
--   WHERE q3c_radial_query(ra, dec, 150.0, 2.0, 10 / 60.0);
-- Session form: the views of schema prompt_as_of read dpdb.as_of (once per query, as an InitPlan), so
-- existing SQL runs unchanged against the past:
--   SET dpdb.as_of = '2026-03-01T12:00:00Z';     -- or an MJD TAI: SET dpdb.as_of = '61001.5'
--   SET search_path = prompt_as_of, public;
--   SELECT count(*) FROM DiaObject;
--
-- These are plain SQL functions that PostgreSQL inlines into the calling query,
-- so conditions on their output reach the indexes; the positional index of a
-- versioned table carries (validityStartMjdTai, coalesce(validityEndMjdTai,
-- infinity)) to skip invalid versions inside the index.

CREATE OR REPLACE FUNCTION public.dpdb_mjd_tai(ts timestamptz)
RETURNS double precision
LANGUAGE sql STABLE PARALLEL SAFE
RETURN extract(epoch FROM ts) / 86400 + 40587
       + coalesce((SELECT l.tai_minus_utc FROM dpdb_meta.leap_second l
                   WHERE l.utc_from <= ts ORDER BY l.utc_from DESC LIMIT 1), 0) / 86400;

COMMENT ON FUNCTION public.dpdb_mjd_tai(timestamptz) IS
  'MJD TAI of an instant (TAI - UTC from dpdb_meta.leap_second, filled from astropy/ERFA)';

CREATE OR REPLACE FUNCTION public.dpdb_instant(t text)
RETURNS double precision
LANGUAGE sql STABLE PARALLEL SAFE
RETURN CASE WHEN t ~ '^\s*[0-9]+(\.[0-9]*)?\s*$' THEN t::double precision
            ELSE dpdb_mjd_tai(t::timestamptz) END;

COMMENT ON FUNCTION public.dpdb_instant(text) IS
  'MJD TAI of an instant written as a number (MJD TAI) or as a timestamptz literal';

CREATE OR REPLACE FUNCTION public.dpdb_as_of()
RETURNS double precision
LANGUAGE sql STABLE PARALLEL SAFE
RETURN dpdb_instant(current_setting('dpdb.as_of'));

COMMENT ON FUNCTION public.dpdb_as_of() IS
  'The instant (MJD TAI) of setting dpdb.as_of, which the views of schema prompt_as_of read';

-- One function per table, at an instant in MJD TAI, generated below from this list:
-- (table, column a row becomes visible at, column it stops being visible at).
-- The function returns the table's columns in order, except that the closing
-- column is NULL: as of t, no visible row had been closed yet, and rows read as
-- of t must stay the same after later closes. For example prompt.diaobject_as_of:
--
--   SELECT diaobjectid, validitystartmjdtai, NULL::double precision AS validityendmjdtai, ra, dec, ...
--   FROM prompt.diaobject
--   WHERE validitystartmjdtai <= t AND coalesce(validityendmjdtai, 'Infinity'::double precision) > t
--
-- The same at a timestamptz or a text instant, and the session views, follow.
DROP SCHEMA IF EXISTS prompt_as_of CASCADE;
CREATE SCHEMA prompt_as_of;
COMMENT ON SCHEMA prompt_as_of IS 'The prompt tables as of the instant in setting dpdb.as_of';

DO $$
DECLARE
    spec text[];
    tab text;
    opened text;
    closed text;
    cols text;
    visible text;
BEGIN
    FOREACH spec SLICE 1 IN ARRAY ARRAY[
        ['diaobject', 'validitystartmjdtai', 'validityendmjdtai'],
        ['ssobject', 'validitystartmjdtai', 'validityendmjdtai'],
        ['diasource', 'timeprocessedmjdtai', 'timewithdrawnmjdtai'],
        ['diaforcedsource', 'timeprocessedmjdtai', 'timewithdrawnmjdtai'],
        ['sssource', 'timeprocessedmjdtai', 'timewithdrawnmjdtai'],
        ['visit', 'timeprocessedmjdtai', NULL],
        ['ccdvisit', 'timeprocessedmjdtai', NULL]
    ] LOOP
        tab := spec[1];
        opened := spec[2];
        closed := spec[3];
        SELECT string_agg(CASE WHEN a.attname = closed
                               THEN format('NULL::double precision AS %I', a.attname)
                               ELSE format('%I', a.attname) END, ', ' ORDER BY a.attnum)
        INTO cols
        FROM pg_attribute a
        WHERE a.attrelid = format('prompt.%I', tab)::regclass AND a.attnum > 0 AND NOT a.attisdropped;
        -- A NULL opening time (rows loaded before times were recorded) is visible at every instant;
        -- a NOT NULL one is compared bare, so that the index on it serves.
        IF (SELECT a.attnotnull FROM pg_attribute a
            WHERE a.attrelid = format('prompt.%I', tab)::regclass AND a.attname = opened) THEN
            visible := format('%I <= t', opened);
        ELSE
            visible := format('coalesce(%I, ''-Infinity''::double precision) <= t', opened);
        END IF;
        IF closed IS NOT NULL THEN
            visible := visible || format(' AND coalesce(%I, ''Infinity''::double precision) > t', closed);
        END IF;
        EXECUTE format(
            'CREATE OR REPLACE FUNCTION prompt.%1$I(t double precision) RETURNS SETOF prompt.%2$I '
            'LANGUAGE sql STABLE PARALLEL SAFE AS $f$ SELECT %3$s FROM prompt.%2$I WHERE %4$s $f$',
            tab || '_as_of', tab, cols, visible);
        EXECUTE format(
            'CREATE OR REPLACE FUNCTION prompt.%1$I(t timestamptz) RETURNS SETOF prompt.%2$I '
            'LANGUAGE sql STABLE PARALLEL SAFE AS $f$ SELECT * FROM prompt.%1$I(public.dpdb_mjd_tai(t)) $f$',
            tab || '_as_of', tab);
        EXECUTE format(
            'CREATE OR REPLACE FUNCTION prompt.%1$I(t text) RETURNS SETOF prompt.%2$I '
            'LANGUAGE sql STABLE PARALLEL SAFE AS $f$ SELECT * FROM prompt.%1$I(public.dpdb_instant(t)) $f$',
            tab || '_as_of', tab);
        EXECUTE format(
            'COMMENT ON FUNCTION prompt.%1$I(double precision) IS %2$L',
            tab || '_as_of', 'prompt.' || tab || ' as of an instant in MJD TAI (DPDD 2.5)');
        -- The session views compare with the instant as an InitPlan, (SELECT dpdb_as_of()): evaluated once
        -- per query, and still an index condition ($0), instead of the setting parsed in every row test.
        EXECUTE format(
            'CREATE VIEW prompt_as_of.%1$I AS SELECT %2$s FROM prompt.%1$I WHERE %3$s',
            tab, cols, regexp_replace(visible, '\mt\M', '(SELECT public.dpdb_as_of())', 'g'));
    END LOOP;
END
$$;
