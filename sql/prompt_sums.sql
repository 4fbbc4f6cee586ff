-- Incremental aggregation of the prompt ingest (dpdb/prompt/sums.py explains the
-- running sums of prompt.DiaObjectSums and their invariant). Run by
-- dpdb/prompt/ingest.py in the visit's transaction, in place of the
-- window_sources and aggregate blocks of prompt_ingest.sql, after touched.
-- The window of the new versions is (visit_params.mjd - cutoff, mjd].
-- {placeholders} are filled from dpdb/prompt/sums.py.

-- name: sums_objects
-- Each touched DiaObject, and whether its sums can be brought forward ("slow":
-- no sums, or sums that start after the window or hold newer rows than it), and
-- whether some of them may hold rows that leave the window now (sums_expiring).
CREATE TEMP TABLE sums_obj ON COMMIT DROP AS
SELECT t.diaobjectid, t.pixel, t.is_new,
       NOT t.is_new AND (s.n = 0 OR s.max_start > p.mjd - p.cutoff OR s.max_last > p.mjd) AS slow,
       coalesce(s.expiring, false) AS expiring
FROM touched t CROSS JOIN visit_params p
CROSS JOIN LATERAL (
    SELECT count(*) AS n, max(x.windowstartmjdtai) AS max_start, max(x.lastmidpointmjdtai) AS max_last,
           bool_or(x.firstmidpointmjdtai <= p.mjd - p.cutoff) AS expiring
    FROM prompt.diaobjectsums x WHERE x.diaobjectid = t.diaobjectid
) s;
ALTER TABLE sums_obj ADD PRIMARY KEY (diaobjectid);
ANALYZE sums_obj;
CREATE TEMP TABLE sums_in (
    diaobjectid bigint NOT NULL, band text NOT NULL, sign integer NOT NULL, is_src boolean NOT NULL,
    id bigint NOT NULL, midpoint double precision NOT NULL, ra double precision, dec double precision,
    raerr double precision, decerr double precision, psfflux double precision, psffluxerr double precision,
    scienceflux double precision, sciencefluxerr double precision
) ON COMMIT DROP;
CREATE TEMP TABLE sums_drop (diaobjectid bigint PRIMARY KEY) ON COMMIT DROP

-- name: sums_expiring
-- Bands of the touched DiaObjects whose sums may hold rows that leave the window
-- now, and those rows (read by index in the object's partition), to subtract.
CREATE TEMP TABLE sums_expiring ON COMMIT DROP AS
SELECT x.diaobjectid, x.band, o.pixel, x.windowstartmjdtai AS lo, x.psffluxmin, x.psffluxmax
FROM sums_obj o JOIN prompt.diaobjectsums x USING (diaobjectid) CROSS JOIN visit_params p
WHERE NOT o.slow AND NOT o.is_new AND x.firstmidpointmjdtai <= p.mjd - p.cutoff

-- name: sums_expire
-- (A measurement without a band is kept under band '': it counts in the all-band sums, positions,
-- as in the full aggregation, and in no band's pivot.)
INSERT INTO sums_in
SELECT e.diaobjectid, e.band, -1, true, d.diasourceid, d.midpointmjdtai, d.ra, d.dec, d.raerr, d.decerr, d.psfflux, d.psffluxerr,
       NULL, NULL
FROM sums_expiring e CROSS JOIN visit_params p
CROSS JOIN LATERAL (
    SELECT * FROM prompt.diasource d
    WHERE d.diaobjectid = e.diaobjectid AND d._healpix_29 = e.pixel AND coalesce(d.band, '') = e.band
      AND d.midpointmjdtai > e.lo AND d.midpointmjdtai <= p.mjd - p.cutoff AND d.timewithdrawnmjdtai IS NULL
    OFFSET 0
) d;
INSERT INTO sums_in
SELECT e.diaobjectid, e.band, -1, false, f.diaforcedsourceid, f.midpointmjdtai, NULL, NULL, NULL, NULL, f.psfflux, f.psffluxerr,
       f.scienceflux, f.sciencefluxerr
FROM sums_expiring e CROSS JOIN visit_params p
CROSS JOIN LATERAL (
    SELECT * FROM prompt.diaforcedsource f
    WHERE f.diaobjectid = e.diaobjectid AND f._healpix_29 = e.pixel AND coalesce(f.band, '') = e.band
      AND f.midpointmjdtai > e.lo AND f.midpointmjdtai <= p.mjd - p.cutoff AND f.timewithdrawnmjdtai IS NULL
    OFFSET 0
) f;
-- A leaving DiaSource that held the band's minimum or maximum: the extremes of
-- what stays are not in the sums, so the object is recomputed from its rows.
UPDATE sums_obj o SET slow = true
FROM sums_in i JOIN sums_expiring e USING (diaobjectid, band)
WHERE o.diaobjectid = i.diaobjectid AND i.is_src AND (i.psfflux <= e.psffluxmin OR i.psfflux >= e.psffluxmax)

-- name: sums_delta
-- (the join columns only: a full ANALYZE of these wide tables cost ~0.3 s a visit)
ANALYZE sums_in (diaobjectid, band);
-- Counts and sums of the rows in sums_in per (DiaObject, band), signed, against
-- the references of the stored row (or, for a new row, its oldest values);
-- rows at or before the stored window start are not in the sums and stay out.
CREATE TEMP TABLE sums_delta ON COMMIT DROP AS
WITH first AS (
    SELECT i.diaobjectid, i.band,
           (array_agg(i.ra ORDER BY i.midpoint, i.ra) FILTER (WHERE i.is_src))[1] AS raref,
           (array_agg(i.psfflux ORDER BY i.midpoint, i.psfflux)
                FILTER (WHERE i.is_src AND i.psfflux IS NOT NULL))[1] AS pref,
           (array_agg(i.scienceflux ORDER BY i.midpoint, i.scienceflux)
                FILTER (WHERE NOT i.is_src AND i.scienceflux IS NOT NULL))[1] AS sref
    FROM sums_in i GROUP BY i.diaobjectid, i.band
),
r AS (
    -- in a fixed order (the sums are then the same to the last bit whatever the
    -- physical order of the stored rows, so reruns are identical)
    SELECT i.*, coalesce(x.windowstartmjdtai, p.mjd - p.cutoff) AS lo,
           coalesce(x.raref, f.raref) AS raref,
           coalesce(x.psffluxref, f.pref, 0) AS pref,
           coalesce(x.sciencefluxref, f.sref, 0) AS sref
    FROM sums_in i JOIN first f USING (diaobjectid, band) CROSS JOIN visit_params p
    -- OFFSET 0: one index probe per row, not a join over the whole (growing) table
    LEFT JOIN LATERAL (
        SELECT * FROM prompt.diaobjectsums x WHERE x.diaobjectid = i.diaobjectid AND x.band = i.band OFFSET 0
    ) x ON true
    WHERE i.sign < 0 OR i.midpoint > coalesce(x.windowstartmjdtai, p.mjd - p.cutoff)
    ORDER BY i.diaobjectid, i.band, i.midpoint, i.is_src, i.id
)
SELECT r.diaobjectid, r.band, min(r.lo) AS lo, min(r.raref) AS raref, min(r.pref) AS pref, min(r.sref) AS sref,
       min(r.midpoint) AS first, max(r.midpoint) AS last,
       min(r.psfflux) FILTER (WHERE r.is_src) AS fmin, max(r.psfflux) FILTER (WHERE r.is_src) AS fmax,
       {delta_sums}
FROM r
GROUP BY r.diaobjectid, r.band

-- name: sums_subtract
-- The leaving rows subtracted; the window start moves to the new one.
UPDATE prompt.diaobjectsums x SET
    windowstartmjdtai = p.mjd - p.cutoff,
    firstmidpointmjdtai = CASE WHEN {emptied} THEN NULL ELSE p.mjd - p.cutoff END,
    psffluxmin = CASE WHEN x.psffluxn + coalesce(d.psffluxn, 0) = 0 THEN NULL ELSE x.psffluxmin END,
    psffluxmax = CASE WHEN x.psffluxn + coalesce(d.psffluxn, 0) = 0 THEN NULL ELSE x.psffluxmax END,
    {subtract_set}
FROM sums_expiring e
JOIN sums_obj o USING (diaobjectid)
CROSS JOIN visit_params p
LEFT JOIN sums_delta d ON d.diaobjectid = e.diaobjectid AND d.band = e.band
WHERE x.diaobjectid = e.diaobjectid AND x.band = e.band AND NOT o.slow;
TRUNCATE sums_in;
DROP TABLE sums_delta

-- name: sums_visit_rows
-- The visit's DiaSources and forced measurements of every DiaObject whose sums
-- are brought forward: touched ones (not slow) and others that have sums.
INSERT INTO sums_in
SELECT l.diaobjectid, coalesce(s.band, ''), 1, true, s.diasourceid, s.midpointmjdtai, s.ra, s.dec, s.raerr, s.decerr, s.psfflux, s.psffluxerr,
       NULL, NULL
FROM src_link l JOIN s_src s USING (diasourceid) JOIN sums_obj o ON o.diaobjectid = l.diaobjectid
WHERE NOT o.slow;
INSERT INTO sums_in
SELECT m.b, coalesce(f.band, ''), 1, false, f.diaforcedsourceid, f.midpointmjdtai, NULL, NULL, NULL, NULL, f.psfflux, f.psffluxerr,
       f.scienceflux, f.sciencefluxerr
FROM s_forced f JOIN matched m ON m.a = f.diaforcedsourceid
LEFT JOIN sums_obj o ON o.diaobjectid = m.b
WHERE CASE WHEN o.diaobjectid IS NOT NULL THEN NOT o.slow
           ELSE EXISTS (SELECT 1 FROM prompt.diaobjectsums x WHERE x.diaobjectid = m.b) END

-- name: sums_rebuild_rows
-- DiaObjects without usable sums: their sums recomputed from every stored row
-- after the window start. Those with rows after the window end (a visit older
-- than some of their measurements) get this version from the window, and no sums.
DELETE FROM prompt.diaobjectsums x USING sums_obj o WHERE o.slow AND x.diaobjectid = o.diaobjectid;
CREATE TEMP TABLE sums_rebuild ON COMMIT DROP AS
SELECT o.diaobjectid, coalesce(d.band, '') AS band, true AS is_src, d.diasourceid AS id, d.midpointmjdtai AS midpoint, d.ra, d.dec,
       d.raerr::float8 AS raerr, d.decerr::float8 AS decerr, d.psfflux::float8 AS psfflux,
       d.psffluxerr::float8 AS psffluxerr, NULL::float8 AS scienceflux, NULL::float8 AS sciencefluxerr
FROM sums_obj o CROSS JOIN visit_params p
CROSS JOIN LATERAL (
    SELECT * FROM prompt.diasource d
    WHERE d.diaobjectid = o.diaobjectid AND d._healpix_29 = o.pixel
      AND d.midpointmjdtai > p.mjd - p.cutoff AND d.timewithdrawnmjdtai IS NULL
    OFFSET 0
) d
WHERE o.slow;
INSERT INTO sums_rebuild
SELECT o.diaobjectid, coalesce(f.band, ''), false, f.diaforcedsourceid, f.midpointmjdtai, NULL, NULL, NULL, NULL, f.psfflux, f.psffluxerr,
       f.scienceflux, f.sciencefluxerr
FROM sums_obj o CROSS JOIN visit_params p
CROSS JOIN LATERAL (
    SELECT * FROM prompt.diaforcedsource f
    WHERE f.diaobjectid = o.diaobjectid AND f._healpix_29 = o.pixel
      AND f.midpointmjdtai > p.mjd - p.cutoff AND f.timewithdrawnmjdtai IS NULL
    OFFSET 0
) f
WHERE o.slow;
INSERT INTO sums_drop
SELECT DISTINCT r.diaobjectid FROM sums_rebuild r, visit_params p WHERE r.midpoint > p.mjd;
INSERT INTO sums_in
SELECT r.diaobjectid, r.band, 1, r.is_src, r.id, r.midpoint, r.ra, r.dec, r.raerr, r.decerr, r.psfflux, r.psffluxerr,
       r.scienceflux, r.sciencefluxerr
FROM sums_rebuild r, visit_params p WHERE r.midpoint <= p.mjd

-- name: sums_add
-- Add the rows of sums_in (counts, sums, extremes and time span).
INSERT INTO prompt.diaobjectsums AS x (diaobjectid, band, windowstartmjdtai, firstmidpointmjdtai,
    lastmidpointmjdtai, raref, psffluxref, sciencefluxref, psffluxmin, psffluxmax, {sum_columns})
SELECT diaobjectid, band, lo, first, last, raref, pref, sref, fmin, fmax, {sum_columns}
FROM sums_delta
ON CONFLICT (diaobjectid, band) DO UPDATE SET
    firstmidpointmjdtai = least(x.firstmidpointmjdtai, excluded.firstmidpointmjdtai),
    lastmidpointmjdtai = greatest(x.lastmidpointmjdtai, excluded.lastmidpointmjdtai),
    raref = coalesce(x.raref, excluded.raref),
    psffluxmin = least(x.psffluxmin, excluded.psffluxmin),
    psffluxmax = greatest(x.psffluxmax, excluded.psffluxmax),
    {add_set};
TRUNCATE sums_in;
DROP TABLE sums_delta

-- name: sums_version
-- One new version per touched DiaObject from its sums (the same quantities as the
-- aggregate block of prompt_ingest.sql computes from the window's rows). Built in
-- steps through analyzed temporary tables: as one statement over CTEs the planner,
-- blind to their sizes, joined them by nested loops (quadratic in the visit).
CREATE TEMP TABLE sums_cur ON COMMIT DROP AS
SELECT x.*, t.ref_ra, coalesce(dpdb_wrap180(x.raref - t.ref_ra), 0) AS off
FROM touched t
CROSS JOIN LATERAL (SELECT * FROM prompt.diaobjectsums x WHERE x.diaobjectid = t.diaobjectid OFFSET 0) x;
ANALYZE sums_cur (diaobjectid, band);
CREATE TEMP TABLE sums_out ON COMMIT DROP AS
WITH b AS (
    -- the all-band sums add an object's bands in a fixed order, guaranteed by the window's
    -- ORDER BY (window aggregates take their rows in that order): in whatever order sums_cur
    -- holds them (its plan, the physical order of DiaObjectSums after an aborted visit), a
    -- rerun's version is then the same to the last bit. One sort serves every sum; an
    -- aggregate ORDER BY would sort once per sum and object (+50 % for this statement).
    SELECT x.diaobjectid, x.band, x.ref_ra,
           sum(x.ndiasources) OVER w AS n, sum(x.sumdra + x.ndiasources * x.off) OVER w AS sdra,
           sum(x.sumdec) OVER w AS sdec, sum(x.summidpoint) OVER w AS smid,
           sum(x.nraweights) OVER w AS nwra, sum(x.sumraweights) OVER w AS wra,
           sum(x.sumraweighteddra + x.sumraweights * x.off) OVER w AS wdra,
           sum(x.sumraweightedmidpoint) OVER w AS wmid, sum(x.ndecweights) OVER w AS nwdec,
           sum(x.sumdecweights) OVER w AS wdec, sum(x.sumdecweighteddec) OVER w AS wddec,
           {band_outputs}
    FROM sums_cur x
    WINDOW w AS (PARTITION BY x.diaobjectid ORDER BY x.band
                 ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
)
-- (every row of an object holds the same window sums: min() picks that value)
SELECT b.diaobjectid, min(b.ref_ra) AS ref_ra,
       min(b.n) AS n, min(b.sdra) AS sdra, min(b.sdec) AS sdec, min(b.smid) AS smid,
       min(b.nwra) AS nwra, min(b.wra) AS wra, min(b.wdra) AS wdra, min(b.wmid) AS wmid,
       min(b.nwdec) AS nwdec, min(b.wdec) AS wdec, min(b.wddec) AS wddec,
       {psf_pivot},
       {forced_pivot}
FROM b GROUP BY b.diaobjectid;
ALTER TABLE sums_out ADD PRIMARY KEY (diaobjectid);
ANALYZE sums_out (diaobjectid);
CREATE TEMP TABLE new_version ON COMMIT DROP AS
SELECT t.diaobjectid, p.t AS validitystartmjdtai, t.pixel AS _healpix_29,
       dpdb_wrap360(b.ref_ra + CASE WHEN b.nwra > 0 THEN b.wdra / b.wra ELSE b.sdra / b.n END) AS ra,
       CASE WHEN b.nwdec > 0 THEN b.wddec / b.wdec ELSE b.sdec / b.n END AS dec,
       CASE WHEN b.nwra > 0 THEN sqrt(1 / b.wra) END AS raerr,
       CASE WHEN b.nwdec > 0 THEN sqrt(1 / b.wdec) END AS decerr,
       CASE WHEN b.nwra > 0 THEN b.wmid / b.wra ELSE b.smid / b.n END AS radecmjdtai,
       t.ndiasources, t.firstdiasourcemjdtai, t.lastdiasourcemjdtai,
       {band_columns},
       {nearby_columns}
FROM touched t
JOIN sums_out b USING (diaobjectid)
JOIN sums_out f USING (diaobjectid)  -- the pivots' two names in band_columns
CROSS JOIN visit_params p
WHERE b.n > 0

-- name: sums_forget
-- Sums that no longer hold their invariant are dropped (rebuilt at the next version).
DELETE FROM prompt.diaobjectsums x USING sums_drop d WHERE x.diaobjectid = d.diaobjectid

-- name: sums_forget_visit
-- A visit aggregated in full (not from the sums): every DiaObject it measured loses its sums.
DELETE FROM prompt.diaobjectsums x
WHERE x.diaobjectid IN (SELECT diaobjectid FROM touched UNION SELECT b FROM matched)
