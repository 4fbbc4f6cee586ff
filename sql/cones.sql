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

-- The functions, generated for each table from this list: (table, the present's condition, whether
-- it has a light curve). A cone runs one statement (PL/pgSQL EXECUTE, so that the partitions' ranges
-- are constants the planner prunes with) that joins q3c's 100 ipix ranges of the cone (q3c_radial_query_it,
-- disjoint ranges: the same ranges and distance test as q3c_radial_query) with one parameterized index
-- scan each: planning it costs a tenth of planning q3c_radial_query's OR of 100 ranges, and execution the
-- same index probes. A light curve reads the partitions within 1' of its DiaObject (as dpdb/pruning.py:
-- a DiaObject's rows sit in the partition of its pixel at first detection): its position from
-- DiaObjectLast, or from its last version for a DiaObject closed without successor; an identifier
-- neither holds reads every partition.
DO $$
DECLARE
    k integer;
    spec text[];
    tab text;
    present text;
    fn text;
    args text;
BEGIN
    IF to_regclass('dpdb_meta.catalog') IS NULL THEN
        RETURN;
    END IF;
    SELECT partition_order INTO k FROM dpdb_meta.catalog WHERE name = 'prompt';
    IF k IS NULL OR to_regprocedure('prompt.diaobject_as_of(double precision)') IS NULL THEN
        RETURN;  -- no prompt catalog (yet), or no time travel: installed again by `dpdb db migrate`
    END IF;
    FOREACH spec SLICE 1 IN ARRAY ARRAY[
        ['diaobject', 'validityendmjdtai IS NULL', 'false'],
        ['diasource', 'timewithdrawnmjdtai IS NULL', 'true'],
        ['diaforcedsource', 'timewithdrawnmjdtai IS NULL', 'true']
    ] LOOP
        tab := spec[1];
        present := spec[2];
        -- %1$s: the function's name; %2$I the table; %3$I its as-of function; %4$s the present; %5$s k.
        EXECUTE format($d$
            CREATE OR REPLACE FUNCTION prompt.%1$I(ra0 double precision, dec0 double precision,
                                                  radius double precision, t double precision DEFAULT NULL)
            RETURNS SETOF prompt.%2$I
            LANGUAGE plpgsql STABLE PARALLEL SAFE
            AS $f$
            BEGIN
                RETURN QUERY EXECUTE format(
                    'SELECT o.* FROM generate_series(0, 98, 2) i CROSS JOIN (VALUES (0), (1)) f(fl), '
                    'LATERAL (SELECT * FROM %%s q3c_ang2ipix(ra, dec) >= q3c_radial_query_it(%%s, %%s, %%s, i, fl) '
                    'AND q3c_ang2ipix(ra, dec) < q3c_radial_query_it(%%2$s, %%3$s, %%4$s, i + 1, fl) '
                    'AND q3c_sindist(ra, dec, %%2$s, %%3$s) < pow(sin(radians(%%4$s) / 2), 2) AND %%5$s '
                    'OFFSET 0) o',
                    CASE WHEN t IS NULL THEN 'prompt.%2$I WHERE %4$s AND'
                         ELSE format('prompt.%3$I(%%s::double precision) WHERE', t) END,
                    ra0, dec0, radius,
                    public.dpdb_partition_ranges_sql(%5$s,
                        public.dpdb_cone_partitions(%5$s, ra0, dec0, radius + 1 / 60.0), '_healpix_29'));
            END $f$ $d$,
            tab || '_cone', tab, tab || '_as_of', present, k);
        IF spec[3]::boolean THEN
            EXECUTE format($d$
                CREATE OR REPLACE FUNCTION prompt.%1$I(diaobjectid bigint, t double precision DEFAULT NULL)
                RETURNS SETOF prompt.%2$I
                LANGUAGE plpgsql STABLE PARALLEL SAFE
                AS $f$
                DECLARE
                    ra1 double precision;
                    dec1 double precision;
                BEGIN
                    SELECT l.ra, l.dec INTO ra1, dec1
                    FROM prompt.diaobjectlast l WHERE l.diaobjectid = %1$I.diaobjectid;
                    IF NOT FOUND THEN
                        SELECT o.ra, o.dec INTO ra1, dec1 FROM prompt.diaobject o
                        WHERE o.diaobjectid = %1$I.diaobjectid ORDER BY o.validitystartmjdtai DESC LIMIT 1;
                    END IF;
                    RETURN QUERY EXECUTE format(
                        'SELECT * FROM %%s diaobjectid = %%s AND %%s ORDER BY midpointmjdtai',
                        CASE WHEN t IS NULL THEN 'prompt.%2$I WHERE %4$s AND'
                             ELSE format('prompt.%3$I(%%s::double precision) WHERE', t) END,
                        diaobjectid,
                        CASE WHEN ra1 IS NULL OR dec1 IS NULL THEN 'true'
                             ELSE public.dpdb_partition_ranges_sql(%5$s,
                                 public.dpdb_cone_partitions(%5$s, ra1, dec1, 1 / 60.0), '_healpix_29') END);
                END $f$ $d$,
                tab || '_lightcurve', tab, tab || '_as_of', present, k);
        END IF;
        -- The same at an instant written as text (a number, MJD TAI, or a timestamptz literal), and comments.
        FOREACH fn IN ARRAY CASE WHEN spec[3]::boolean THEN ARRAY['cone', 'lightcurve'] ELSE ARRAY['cone'] END
        LOOP
            args := CASE fn WHEN 'cone' THEN 'ra0 double precision, dec0 double precision, radius double precision'
                            ELSE 'diaobjectid bigint' END;
            EXECUTE format($d$
                CREATE OR REPLACE FUNCTION prompt.%1$I(%3$s, t text)
                RETURNS SETOF prompt.%2$I
                LANGUAGE sql STABLE PARALLEL SAFE
                AS $f$ SELECT * FROM prompt.%1$I(%4$s, public.dpdb_instant(t)) $f$ $d$,
                tab || '_' || fn, tab, args, regexp_replace(args, ' (double precision|bigint)', '', 'g'));
            EXECUTE format('COMMENT ON FUNCTION prompt.%I(%s, double precision) IS %L', tab || '_' || fn,
                           regexp_replace(args, '\m(ra0|dec0|radius|diaobjectid) ', '', 'g'),
                           CASE fn WHEN 'cone' THEN
                               'prompt.' || tab || ' rows within radius degrees of (ra, dec), at the present '
                               '(t NULL) or as of MJD TAI t; reads only the HEALPix partitions the cone overlaps'
                           ELSE 'prompt.' || tab || ' rows of one DiaObject by time, at the present (t NULL) '
                                'or as of MJD TAI t; reads only the partitions around the DiaObject' END);
        END LOOP;
    END LOOP;
END
$$;
