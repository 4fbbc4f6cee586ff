-- Cone searches and light curves for hand-written SQL that read only the HEALPix partitions they need
-- (docs/architecture.md, decisions 1 and 6; dpdb/pruning.py does the same for `dpdb query`, the Python
-- API and TAP). A q3c predicate alone says nothing about `_healpix_29`, so PostgreSQL plans it on every
-- partition; these functions name the partitions' `_healpix_29` ranges as constants in the statement
-- they run, so the planner prunes the others before planning them:
--
--   SELECT * FROM prompt.DiaObject_cone(150.0, 2.0, 10/60.);                 -- current versions
--   SELECT * FROM prompt.DiaObject_cone(150.0, 2.0, 10/60., 60500);          -- as of an MJD TAI
--   SELECT * FROM prompt.DiaSource_cone(150.0, 2.0, 10/60., '2026-03-01T12:00:00Z');
--   SELECT * FROM prompt.DiaSource_lightcurve(1234567890123);               -- one DiaObject's DiaSources
--   SELECT * FROM prompt.DiaForcedSource_lightcurve(1234567890123, 60500);
--
-- The instant is optional: NULL (the default) reads the present (current DiaObject versions,
-- measurements not withdrawn); else the rows as of it, exactly as prompt.<table>_as_of (sql/as_of.sql).
-- Functions run as the caller (SECURITY INVOKER): the reader role dpdb_query reads what it may read.

-- The partitions (nested HEALPix pixels at order k) that a cone overlaps: every order-k pixel with a
-- point within `radius` degrees of (ra, dec), maybe a neighbour more, never one less. It refines from
-- the 12 base pixels down, keeping each pixel whose centre (pg_sphere's center_of_healpix_nest, which
-- is healpy's pix2ang) lies within radius + the pixel's largest centre-corner distance (healpy's
-- max_pixrad per order, +1 %) of the cone's centre. IMMUTABLE: with constant arguments the planner
-- evaluates it once, while planning.
CREATE OR REPLACE FUNCTION public.dpdb_cone_partitions(k integer, ra0 double precision,
                                                       dec0 double precision, radius double precision)
RETURNS bigint[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
AS $f$
WITH RECURSIVE
  maxrad(r) AS (SELECT ARRAY[48.671581956264, 27.861509549137, 14.717952977779, 7.547555268256,
      3.820190888802, 1.921627879612, 0.963689542346, 0.482562820737, 0.241460822209, 0.120775252171,
      0.060398835215, 0.030202220077, 0.015101811008, 0.007551081118, 0.003775584837, 0.001887803863,
      0.000943905168, 0.000471953768, 0.000235977555, 0.00011798932, 5.8995171e-05, 2.9498088e-05,
      1.4749545e-05, 7.375273e-06, 3.688136e-06, 1.844568e-06, 9.22784e-07, 4.61892e-07, 2.31446e-07,
      1.16223e-07]::double precision[]),
  -- refine to the finest order (at most k + 5) whose pixels are still about the cone's size
  depth(d) AS (SELECT max(l) FROM maxrad, generate_series(k, least(k + 5, 29)) l
               WHERE l = k OR maxrad.r[l + 1] >= radius / 2),
  centre(c) AS (SELECT spoint(radians(ra0), radians(dec0))),
  cover(lvl, pix) AS (
    SELECT 0, p FROM generate_series(0::bigint, 11) p, maxrad, centre
    WHERE degrees(center_of_healpix_nest(0, p) <-> centre.c) <= radius + maxrad.r[1]
    UNION ALL
    SELECT cover.lvl + 1, ch FROM cover, depth, maxrad, centre,
         generate_series(4 * cover.pix, 4 * cover.pix + 3) ch
    WHERE cover.lvl < depth.d
      AND degrees(center_of_healpix_nest(cover.lvl + 1, ch) <-> centre.c) <= radius + maxrad.r[cover.lvl + 2])
SELECT coalesce(array_agg(DISTINCT cover.pix >> (2 * (depth.d - k)) ORDER BY cover.pix >> (2 * (depth.d - k))),
                '{}')
FROM cover, depth WHERE cover.lvl = depth.d
$f$;

COMMENT ON FUNCTION public.dpdb_cone_partitions(integer, double precision, double precision, double precision) IS
  'Nested HEALPix pixels at order k (partition numbers) that a cone (degrees) overlaps, maybe one more';

-- `_healpix_29 BETWEEN ... OR ...` of partitions (merged runs) at order k, as SQL text of constants.
CREATE OR REPLACE FUNCTION public.dpdb_partition_ranges_sql(k integer, partitions bigint[], col text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
AS $f$
WITH p(n) AS (SELECT unnest(partitions)),
  runs AS (SELECT n, n - row_number() OVER (ORDER BY n) AS run FROM p)
SELECT coalesce('(' || string_agg(format('%s BETWEEN %s AND %s', col, lo << (2 * (29 - k)),
                                         ((hi + 1) << (2 * (29 - k))) - 1), ' OR ') || ')', 'false')
FROM (SELECT min(n) AS lo, max(n) AS hi FROM runs GROUP BY run ORDER BY 1) r
$f$;

DO $$
DECLARE
    k integer;
    spec text[];
    tab text;
    present text;
BEGIN
    IF to_regclass('dpdb_meta.catalog') IS NULL THEN
        RETURN;
    END IF;
    SELECT partition_order INTO k FROM dpdb_meta.catalog WHERE name = 'prompt';
    IF k IS NULL OR to_regprocedure('prompt.diaobject_as_of(double precision)') IS NULL THEN
        RETURN;  -- no prompt catalog (yet), or no time travel: installed again by `dpdb db migrate`
    END IF;
    FOREACH spec SLICE 1 IN ARRAY ARRAY[
        ['diaobject', 'validityendmjdtai IS NULL'],
        ['diasource', 'timewithdrawnmjdtai IS NULL'],
        ['diaforcedsource', 'timewithdrawnmjdtai IS NULL']
    ] LOOP
        tab := spec[1];
        present := spec[2];
        -- Cone: the q3c predicate and the constant ranges of the partitions the cone (widened by 1',
        -- as dpdb/pruning.py: a row's pixel is its object's at first detection) overlaps.
        EXECUTE format($d$
            CREATE OR REPLACE FUNCTION prompt.%1$I(ra0 double precision, dec0 double precision,
                                                  radius double precision, t double precision DEFAULT NULL)
            RETURNS SETOF prompt.%2$I
            LANGUAGE plpgsql STABLE PARALLEL SAFE
            AS $f$
            BEGIN
                RETURN QUERY EXECUTE format(
                    'SELECT * FROM %%s q3c_radial_query(ra, dec, %%s, %%s, %%s) AND %%s',
                    CASE WHEN t IS NULL THEN 'prompt.%2$I WHERE %4$s AND'
                         ELSE format('prompt.%3$I(%%s::double precision) WHERE', t) END,
                    ra0, dec0, radius,
                    public.dpdb_partition_ranges_sql(%5$s,
                        public.dpdb_cone_partitions(%5$s, ra0, dec0, radius + 1 / 60.0), '_healpix_29'));
            END $f$ $d$,
            tab || '_cone', tab, tab || '_as_of', present, k);
        EXECUTE format($d$
            CREATE OR REPLACE FUNCTION prompt.%1$I(ra0 double precision, dec0 double precision,
                                                  radius double precision, t text)
            RETURNS SETOF prompt.%2$I
            LANGUAGE sql STABLE PARALLEL SAFE
            AS $f$ SELECT * FROM prompt.%1$I(ra0, dec0, radius, public.dpdb_instant(t)) $f$ $d$,
            tab || '_cone', tab);
        EXECUTE format('COMMENT ON FUNCTION prompt.%I(double precision, double precision, double precision, '
                       'double precision) IS %L', tab || '_cone',
                       'prompt.' || tab || ' rows within radius degrees of (ra, dec), at the present '
                       '(t NULL) or as of MJD TAI t; reads only the HEALPix partitions the cone overlaps');
    END LOOP;
    -- Light curves: the DiaObject's partition (its pixel, kept by every version and measurement, from
    -- DiaObjectLast's primary key) as a constant range, so only that partition is planned and read.
    FOREACH spec SLICE 1 IN ARRAY ARRAY[
        ['diasource', 'timewithdrawnmjdtai IS NULL'],
        ['diaforcedsource', 'timewithdrawnmjdtai IS NULL']
    ] LOOP
        tab := spec[1];
        present := spec[2];
        EXECUTE format($d$
            CREATE OR REPLACE FUNCTION prompt.%1$I(diaobjectid bigint, t double precision DEFAULT NULL)
            RETURNS SETOF prompt.%2$I
            LANGUAGE plpgsql STABLE PARALLEL SAFE
            AS $f$
            DECLARE
                part bigint;
            BEGIN
                SELECT l.healpix29 >> (2 * (29 - %5$s)) INTO part
                FROM prompt.diaobjectlast l WHERE l.diaobjectid = %1$I.diaobjectid;
                IF part IS NULL THEN
                    RETURN;
                END IF;
                RETURN QUERY EXECUTE format(
                    'SELECT * FROM %%s diaobjectid = %%s AND %%s ORDER BY midpointmjdtai',
                    CASE WHEN t IS NULL THEN 'prompt.%2$I WHERE %4$s AND'
                         ELSE format('prompt.%3$I(%%s::double precision) WHERE', t) END,
                    diaobjectid, public.dpdb_partition_ranges_sql(%5$s, ARRAY[part], '_healpix_29'));
            END $f$ $d$,
            tab || '_lightcurve', tab, tab || '_as_of', present, k);
        EXECUTE format($d$
            CREATE OR REPLACE FUNCTION prompt.%1$I(diaobjectid bigint, t text)
            RETURNS SETOF prompt.%2$I
            LANGUAGE sql STABLE PARALLEL SAFE
            AS $f$ SELECT * FROM prompt.%1$I(diaobjectid, public.dpdb_instant(t)) $f$ $d$,
            tab || '_lightcurve', tab);
        EXECUTE format('COMMENT ON FUNCTION prompt.%I(bigint, double precision) IS %L', tab || '_lightcurve',
                       'prompt.' || tab || ' rows of one DiaObject by time, at the present (t NULL) or as of '
                       'MJD TAI t; reads only the DiaObject''s HEALPix partition');
    END LOOP;
END
$$;
