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
-- Session form: the views of schema prompt_as_of read dpdb.as_of, so existing
-- SQL runs unchanged against the past:
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

-- One function per table, at an instant in MJD TAI.

CREATE OR REPLACE FUNCTION prompt.diaobject_as_of(t double precision)
RETURNS SETOF prompt.diaobject LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT * FROM prompt.diaobject
    WHERE validitystartmjdtai <= t AND coalesce(validityendmjdtai, 'Infinity'::double precision) > t
$$;

CREATE OR REPLACE FUNCTION prompt.ssobject_as_of(t double precision)
RETURNS SETOF prompt.ssobject LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT * FROM prompt.ssobject
    WHERE validitystartmjdtai <= t AND coalesce(validityendmjdtai, 'Infinity'::double precision) > t
$$;

CREATE OR REPLACE FUNCTION prompt.diasource_as_of(t double precision)
RETURNS SETOF prompt.diasource LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT * FROM prompt.diasource
    WHERE timeprocessedmjdtai <= t AND coalesce(timewithdrawnmjdtai, 'Infinity'::double precision) > t
$$;

CREATE OR REPLACE FUNCTION prompt.diaforcedsource_as_of(t double precision)
RETURNS SETOF prompt.diaforcedsource LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT * FROM prompt.diaforcedsource
    WHERE timeprocessedmjdtai <= t AND coalesce(timewithdrawnmjdtai, 'Infinity'::double precision) > t
$$;

CREATE OR REPLACE FUNCTION prompt.sssource_as_of(t double precision)
RETURNS SETOF prompt.sssource LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT * FROM prompt.sssource
    WHERE coalesce(timeprocessedmjdtai, '-Infinity'::double precision) <= t
      AND coalesce(timewithdrawnmjdtai, 'Infinity'::double precision) > t
$$;

CREATE OR REPLACE FUNCTION prompt.visit_as_of(t double precision)
RETURNS SETOF prompt.visit LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT * FROM prompt.visit WHERE coalesce(timeprocessedmjdtai, '-Infinity'::double precision) <= t
$$;

CREATE OR REPLACE FUNCTION prompt.ccdvisit_as_of(t double precision)
RETURNS SETOF prompt.ccdvisit LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT * FROM prompt.ccdvisit WHERE coalesce(timeprocessedmjdtai, '-Infinity'::double precision) <= t
$$;

-- The same at a timestamptz or a text instant, and the session views, for every table above.
DROP SCHEMA IF EXISTS prompt_as_of CASCADE;
CREATE SCHEMA prompt_as_of;
COMMENT ON SCHEMA prompt_as_of IS 'The prompt tables as of the instant in setting dpdb.as_of';

DO $$
DECLARE
    tab text;
BEGIN
    FOREACH tab IN ARRAY ARRAY['diaobject', 'ssobject', 'diasource', 'diaforcedsource', 'sssource',
                               'visit', 'ccdvisit'] LOOP
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
        EXECUTE format(
            'CREATE VIEW prompt_as_of.%1$I AS SELECT * FROM prompt.%2$I(dpdb_as_of())', tab, tab || '_as_of');
    END LOOP;
END
$$;
