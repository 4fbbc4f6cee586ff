-- Prompt ingest of one visit (DPDD §3.2.1), run in one transaction by dpdb/prompt/ingest.py.
--
-- Each "-- name:" block is one step. {placeholders} are filled before it runs:
-- column lists from the schema, and search radii (deg) as literals, which q3c
-- needs to use its indexes; every other value comes from the one-row table
-- visit_params, so the statements read like plain SQL.
-- Staged input (temporary, dropped at commit): s_src (DiaSource rows without the
-- columns the ingest assigns, plus own_pixel), s_forced (DiaForcedSource rows,
-- plus own_pixel), s_eph (predicted SSObject positions for this visit).

-- name: params
CREATE TEMP TABLE visit_params (
    t double precision, mjd double precision, cutoff double precision,
    field_ra double precision, field_dec double precision, field_radius double precision,
    load_src bigint, load_forced bigint, load_eph bigint
) ON COMMIT DROP

-- name: set_params
INSERT INTO visit_params VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)

-- name: match_tables
-- Candidate pairs (a, b) at distance d, and the matching chosen from them.
CREATE TEMP TABLE cand (a bigint NOT NULL, b bigint NOT NULL, d double precision NOT NULL) ON COMMIT DROP;
CREATE TEMP TABLE matched (a bigint PRIMARY KEY, b bigint UNIQUE NOT NULL, d double precision NOT NULL)
    ON COMMIT DROP

-- name: match_round
-- One round of greedy matching: every pair that is the best remaining choice of
-- both its ends (by distance, then IDs) is taken. Repeated until nothing is
-- taken, this gives exactly the matching of "take the globally closest pair,
-- drop its ends, repeat" under the order (d, a, b): each a and each b matched
-- at most once, conflicts resolved by distance, ties by ID.
INSERT INTO matched (a, b, d)
WITH free AS (
    SELECT c.a, c.b, c.d FROM cand c
    WHERE NOT EXISTS (SELECT 1 FROM matched m WHERE m.a = c.a)
      AND NOT EXISTS (SELECT 1 FROM matched m WHERE m.b = c.b)
),
best_of_a AS (SELECT DISTINCT ON (a) a, b, d FROM free ORDER BY a, d, b),
best_of_b AS (SELECT DISTINCT ON (b) a, b, d FROM free ORDER BY b, d, a)
SELECT a, b, d FROM best_of_a JOIN best_of_b USING (a, b, d)

-- name: match_reset
TRUNCATE cand, matched

-- name: ss_candidates
-- SSObject attribution: DiaSources near a known SSObject's predicted position.
INSERT INTO cand (a, b, d)
SELECT s.diasourceid, e.ssobjectid, q3c_dist(s.ra, s.dec, e.ra, e.dec)
FROM s_src s JOIN s_eph e ON q3c_join(s.ra, s.dec, e.ra, e.dec, {ss_radius})

-- name: ss_keep
CREATE TEMP TABLE ss_match ON COMMIT DROP AS
SELECT m.a AS diasourceid, m.b AS ssobjectid, m.d,
       1 + (SELECT count(*) FROM cand c WHERE c.b = m.b AND (c.d, c.a) < (m.d, m.a)) AS rank
FROM matched m

-- name: near_objects
-- Every (measurement, current DiaObject) pair within the association radius, for
-- the visit's DiaSources and forced measurements alike (all that association
-- and forced photometry can match), found from DiaObjectLast (one row per
-- DiaObject, whatever the length of its history) by one q3c index probe per
-- measurement; near_obj holds those DiaObjects. The cost follows the visit:
-- every DiaObject in the field's cone, as before, grew with the noise
-- detections that found new DiaObjects, night after night.
CREATE TEMP TABLE near_pair ON COMMIT DROP AS
SELECT s.is_src, s.id, q3c_dist(s.ra, s.dec, o.ra, o.dec) AS d,
       o.diaobjectid, o.validitystartmjdtai, o.ra, o.dec, o.healpix29 AS pixel,
       o.ndiasources, o.firstdiasourcemjdtai, o.lastdiasourcemjdtai
FROM (SELECT true AS is_src, diasourceid AS id, ra, dec FROM s_src
      UNION ALL
      SELECT false, diaforcedsourceid, ra, dec FROM s_forced) s
JOIN prompt.diaobjectlast o ON q3c_join(s.ra, s.dec, o.ra, o.dec, {radius});
CREATE TEMP TABLE near_obj ON COMMIT DROP AS
SELECT DISTINCT ON (n.diaobjectid) n.diaobjectid, n.validitystartmjdtai, n.ra, n.dec, n.pixel,
       n.ndiasources, n.firstdiasourcemjdtai, n.lastdiasourcemjdtai
FROM near_pair n
ORDER BY n.diaobjectid

-- name: near_objects_index
ANALYZE near_obj (diaobjectid)

-- name: association_candidates
INSERT INTO cand (a, b, d)
SELECT n.id, n.diaobjectid, n.d
FROM near_pair n
WHERE n.is_src AND NOT EXISTS (SELECT 1 FROM ss_match m WHERE m.diasourceid = n.id)

-- name: source_links
-- Where each DiaSource goes: its SSObject, or the matched DiaObject, or a new
-- DiaObject that takes the DiaSource's ID and pixel.
CREATE TEMP TABLE src_link ON COMMIT DROP AS
SELECT s.diasourceid, ss.ssobjectid,
       CASE WHEN ss.ssobjectid IS NULL THEN coalesce(m.b, s.diasourceid) END AS diaobjectid,
       coalesce(o.pixel, s.own_pixel) AS pixel,
       ss.ssobjectid IS NULL AND m.b IS NULL AS is_new,
       coalesce(o.ra, s.ra) AS ref_ra
FROM s_src s
LEFT JOIN ss_match ss USING (diasourceid)
LEFT JOIN matched m ON m.a = s.diasourceid
LEFT JOIN near_obj o ON o.diaobjectid = m.b

-- name: insert_sources
INSERT INTO prompt.diasource ({source_columns}, diaobjectid, ssobjectid, timeprocessedmjdtai, _healpix_29, _load_id)
SELECT {s_source_columns}, l.diaobjectid, l.ssobjectid, p.t, l.pixel, p.load_src
FROM s_src s JOIN src_link l USING (diasourceid) CROSS JOIN visit_params p

-- name: insert_sssources
INSERT INTO prompt.sssource (diasourceid, ssobjectid, designation, ephra, ephdec, ephvmag, ephrate,
    ephratera, ephratedec, ephoffset, ephoffsetra, ephoffsetdec, diadistancerank, timeprocessedmjdtai, _load_id)
SELECT m.diasourceid, m.ssobjectid, so.designation, e.ra, e.dec, e.ephvmag, e.ephrate,
       e.ephratera, e.ephratedec, m.d * 3600,
       dpdb_wrap180(s.ra - e.ra) * cos(radians(e.dec)) * 3600, (s.dec - e.dec) * 3600, m.rank, p.t, p.load_eph
FROM ss_match m
JOIN s_src s USING (diasourceid)
JOIN s_eph e USING (ssobjectid)
LEFT JOIN prompt.ssobject so ON so.ssobjectid = m.ssobjectid AND so.validityendmjdtai IS NULL
CROSS JOIN visit_params p

-- name: field_objects
-- The DiaObjects this visit founds (indexed, to be matched with forced
-- measurements), and every DiaObject a forced measurement can be linked to.
CREATE TEMP TABLE new_obj ON COMMIT DROP AS
SELECT l.diaobjectid, s.ra, s.dec, l.pixel FROM src_link l JOIN s_src s USING (diasourceid) WHERE l.is_new;
CREATE INDEX ON new_obj (q3c_ang2ipix(ra, dec));
ANALYZE new_obj;
CREATE TEMP TABLE field_obj ON COMMIT DROP AS
SELECT diaobjectid, ra, dec, pixel FROM near_obj
UNION ALL
SELECT diaobjectid, ra, dec, pixel FROM new_obj;
ANALYZE field_obj (diaobjectid)

-- name: forced_candidates
-- (pairs with existing DiaObjects were found with near_obj)
INSERT INTO cand (a, b, d)
SELECT n.id, n.diaobjectid, n.d FROM near_pair n WHERE NOT n.is_src
UNION ALL
SELECT f.diaforcedsourceid, o.diaobjectid, q3c_dist(f.ra, f.dec, o.ra, o.dec)
FROM s_forced f JOIN new_obj o ON q3c_join(f.ra, f.dec, o.ra, o.dec, {radius})

-- name: insert_forced
INSERT INTO prompt.diaforcedsource ({forced_columns}, diaobjectid, timeprocessedmjdtai, _healpix_29, _load_id)
SELECT {f_forced_columns}, m.b, p.t, o.pixel, p.load_forced
FROM s_forced f JOIN matched m ON m.a = f.diaforcedsourceid
JOIN field_obj o ON o.diaobjectid = m.b
CROSS JOIN visit_params p

-- name: touched
-- DiaObjects that got a DiaSource in this visit: each gets a new version, with
-- these counts and first/last times (the aggregate step computes the rest).
CREATE TEMP TABLE touched ON COMMIT DROP AS
SELECT l.diaobjectid, l.pixel, l.is_new, l.ref_ra, n.validitystartmjdtai AS previous_start,
       coalesce(n.ndiasources, 0) + 1 AS ndiasources,
       least(n.firstdiasourcemjdtai, s.midpointmjdtai) AS firstdiasourcemjdtai,
       greatest(n.lastdiasourcemjdtai, s.midpointmjdtai) AS lastdiasourcemjdtai
FROM src_link l JOIN s_src s USING (diasourceid)
LEFT JOIN near_obj n ON n.diaobjectid = l.diaobjectid
WHERE l.diaobjectid IS NOT NULL;
ALTER TABLE touched ADD PRIMARY KEY (diaobjectid);
ANALYZE touched

-- name: window_sources
-- The DiaSources and forced measurements of the touched objects within the
-- characterization window (diaCharacterizationCutoff) ending at visit_params.mjd,
-- in a fixed order: floating-point sums then come out the same to the last
-- bit whatever the physical order of the stored rows (reruns are identical).
CREATE TEMP TABLE win_src ON COMMIT DROP AS
SELECT t.diaobjectid, d.band, d.ra, d.dec, d.raerr::float8 AS raerr, d.decerr::float8 AS decerr,
       d.midpointmjdtai, d.psfflux::float8 AS psfflux, d.psffluxerr::float8 AS psffluxerr
FROM touched t CROSS JOIN visit_params p
CROSS JOIN LATERAL (
    -- OFFSET 0 keeps this a per-object index lookup in the object's partition; a
    -- flattened join would hash the whole DiaSource table and grow with it.
    SELECT * FROM prompt.diasource d
    WHERE d.diaobjectid = t.diaobjectid AND d._healpix_29 = t.pixel
      AND d.midpointmjdtai > p.mjd - p.cutoff AND d.midpointmjdtai <= p.mjd AND d.timewithdrawnmjdtai IS NULL
    OFFSET 0
) d
ORDER BY t.diaobjectid, d.midpointmjdtai, d.diasourceid;
CREATE TEMP TABLE win_forced ON COMMIT DROP AS
SELECT t.diaobjectid, f.band, f.psfflux::float8 AS psfflux, f.psffluxerr::float8 AS psffluxerr,
       f.scienceflux::float8 AS scienceflux, f.sciencefluxerr::float8 AS sciencefluxerr
FROM touched t CROSS JOIN visit_params p
CROSS JOIN LATERAL (
    SELECT * FROM prompt.diaforcedsource f
    WHERE f.diaobjectid = t.diaobjectid AND f._healpix_29 = t.pixel
      AND f.midpointmjdtai > p.mjd - p.cutoff AND f.midpointmjdtai <= p.mjd AND f.timewithdrawnmjdtai IS NULL
    OFFSET 0
) f
ORDER BY t.diaobjectid, f.midpointmjdtai, f.diaforcedsourceid

-- name: aggregate
-- One new version per touched DiaObject (DPDD §3.2.1 step 6). Weighted means use
-- w = 1/err² over rows with a positive error; the position is averaged as offsets
-- from a reference RA so that objects at RA 0/360 come out right.
CREATE TEMP TABLE new_version ON COMMIT DROP AS
WITH src AS (
    SELECT w.*,
           CASE WHEN w.raerr > 0 THEN 1 / (w.raerr * w.raerr) END AS w_ra,
           CASE WHEN w.decerr > 0 THEN 1 / (w.decerr * w.decerr) END AS w_dec,
           dpdb_wrap180(w.ra - t.ref_ra) AS dra,
           t.ref_ra
    FROM win_src w JOIN touched t USING (diaobjectid)
),
pos AS (
    SELECT diaobjectid,
           dpdb_wrap360(min(ref_ra) + coalesce(sum(w_ra * dra) / sum(w_ra), avg(dra))) AS ra,
           coalesce(sum(w_dec * dec) / sum(w_dec), avg(dec)) AS dec,
           sqrt(1 / sum(w_ra)) AS raerr,
           sqrt(1 / sum(w_dec)) AS decerr,
           coalesce(sum(w_ra * midpointmjdtai) / sum(w_ra), avg(midpointmjdtai)) AS radecmjdtai
    FROM src GROUP BY diaobjectid
),
psf AS (
    SELECT *, sum(w * psfflux) OVER k / sum(w) OVER k AS mean
    FROM (SELECT diaobjectid, band, psfflux, psffluxerr,
                 CASE WHEN psffluxerr > 0 AND psfflux IS NOT NULL THEN 1 / (psffluxerr * psffluxerr) END AS w
          FROM win_src) x
    WINDOW k AS (PARTITION BY diaobjectid, band)
),
psf_band AS (
    SELECT diaobjectid, band,
           min(mean) AS mean,
           sqrt(1 / sum(w)) AS meanerr,
           stddev_samp(psfflux) AS sigma,
           sum(w * (psfflux - mean) * (psfflux - mean)) AS chi2,
           count(psfflux) AS ndata,
           min(psfflux) AS fmin,
           max(psfflux) AS fmax,
           avg(psffluxerr) AS errmean
    FROM psf GROUP BY diaobjectid, band
),
forced_band AS (
    SELECT diaobjectid, band,
           sum(wf * psfflux) / sum(wf) AS fpmean,
           sqrt(1 / sum(wf)) AS fpmeanerr,
           sum(ws * scienceflux) / sum(ws) AS scimean,
           sqrt(1 / sum(ws)) AS scimeanerr,
           stddev_samp(scienceflux) AS scisigma
    FROM (SELECT diaobjectid, band, psfflux, scienceflux,
                 CASE WHEN psffluxerr > 0 AND psfflux IS NOT NULL THEN 1 / (psffluxerr * psffluxerr) END AS wf,
                 CASE WHEN sciencefluxerr > 0 AND scienceflux IS NOT NULL
                      THEN 1 / (sciencefluxerr * sciencefluxerr) END AS ws
          FROM win_forced) x
    GROUP BY diaobjectid, band
),
psf_pivot AS (
    SELECT b.diaobjectid, {psf_pivot} FROM psf_band b GROUP BY b.diaobjectid
),
forced_pivot AS (
    SELECT f.diaobjectid, {forced_pivot} FROM forced_band f GROUP BY f.diaobjectid
)
SELECT t.diaobjectid, p.t AS validitystartmjdtai, t.pixel AS _healpix_29,
       pos.ra, pos.dec, pos.raerr, pos.decerr, pos.radecmjdtai,
       t.ndiasources, t.firstdiasourcemjdtai, t.lastdiasourcemjdtai,
       {band_columns},
       {nearby_columns}
FROM touched t
JOIN pos USING (diaobjectid)
JOIN psf_pivot b USING (diaobjectid)
LEFT JOIN forced_pivot f USING (diaobjectid)
CROSS JOIN visit_params p

-- name: release_objects
-- Objects of the active data release around the field (DPDD §3.2.1 step 8);
-- refExtendedness >= 0.5 counts as a galaxy.
CREATE TEMP TABLE near_rel ON COMMIT DROP AS
SELECT o.objectid, o.coord_ra AS ra, o.coord_dec AS dec, o.refextendedness >= 0.5 AS galaxy
FROM {release}.object o
WHERE o.refextendedness IS NOT NULL
  AND q3c_radial_query(o.coord_ra, o.coord_dec, {field_ra}, {field_dec}, {field_radius} + {nearby_radius});
CREATE INDEX ON near_rel (q3c_ang2ipix(ra, dec));
ANALYZE near_rel

-- name: nearby
-- The 3 nearest stars and 3 nearest galaxies of each new version (distance, then objectId).
UPDATE new_version v SET {nearby_set}
FROM (
    SELECT v.diaobjectid, st.ids AS star_ids, st.dists AS star_dists, ga.ids AS galaxy_ids, ga.dists AS galaxy_dists
    FROM new_version v
    CROSS JOIN LATERAL (
        SELECT array_agg(objectid ORDER BY d, objectid) AS ids, array_agg(d ORDER BY d, objectid) AS dists
        FROM (SELECT o.objectid, q3c_dist(v.ra, v.dec, o.ra, o.dec) * 3600 AS d
              FROM near_rel o
              WHERE NOT o.galaxy AND q3c_join(v.ra, v.dec, o.ra, o.dec, {nearby_radius})
              ORDER BY d, o.objectid LIMIT 3) x
    ) st
    CROSS JOIN LATERAL (
        SELECT array_agg(objectid ORDER BY d, objectid) AS ids, array_agg(d ORDER BY d, objectid) AS dists
        FROM (SELECT o.objectid, q3c_dist(v.ra, v.dec, o.ra, o.dec) * 3600 AS d
              FROM near_rel o
              WHERE o.galaxy AND q3c_join(v.ra, v.dec, o.ra, o.dec, {nearby_radius})
              ORDER BY d, o.objectid LIMIT 3) x
    ) ga
) n
WHERE n.diaobjectid = v.diaobjectid

-- name: close_versions
-- Close the current version of every touched DiaObject that existed before: the
-- one DiaObjectLast named (touched.previous_start), found by its whole primary key
-- (one index probe a DiaObject, whatever its history; the relink closes versions
-- the same way). The keys and their pixel range are handed to the UPDATE as
-- parameter values (EXECUTE ... USING), so that it is planned knowing them: only
-- the partitions of that pixel range are opened, and the unnested keys are
-- counted right. Closing by ID alone (o.diaobjectid = ANY (ids) AND
-- validityendmjdtai IS NULL) was planned as a bitmap AND of the primary key
-- (every version of each DiaObject: grows with the history) and of the partial
-- q3c index of the current versions (every current DiaObject of the partition:
-- 1.5M entries at 1.8M DiaObjects, ~0.3 s of CPU), so the step grew with the
-- catalog (benchmarks/README.md, bench_prompt). Should DiaObjectLast ever name
-- a version that is not open, the DiaObjects left open are closed by ID as before.
-- (The semicolons of the DO block stay inside its lines: the block is one statement.)
DO $$
DECLARE ids bigint[]; starts double precision[]; pixels bigint[]; lo bigint; hi bigint
        ; t double precision; closed bigint; BEGIN
    SELECT array_agg(diaobjectid), array_agg(previous_start), array_agg(pixel), min(pixel), max(pixel)
      INTO ids, starts, pixels, lo, hi FROM touched WHERE NOT is_new
    ; SELECT p.t INTO t FROM visit_params p
    ; IF ids IS NOT NULL THEN
        EXECUTE 'UPDATE prompt.diaobject o SET validityendmjdtai = $1 '
                'FROM unnest($2, $3, $4) AS k (diaobjectid, start, pixel) '
                'WHERE o.diaobjectid = k.diaobjectid AND o.validitystartmjdtai = k.start '
                'AND o._healpix_29 = k.pixel AND o._healpix_29 BETWEEN $5 AND $6 '
                'AND o.validityendmjdtai IS NULL'
            USING t, ids, starts, pixels, lo, hi
        ; GET DIAGNOSTICS closed = ROW_COUNT
        ; IF closed < cardinality(ids) THEN
            EXECUTE 'UPDATE prompt.diaobject o SET validityendmjdtai = $1 WHERE o.diaobjectid = ANY ($2) '
                    'AND o._healpix_29 BETWEEN $3 AND $4 AND o.validityendmjdtai IS NULL'
                USING t, ids, lo, hi
        ; END IF
    ; END IF
; END $$

-- name: insert_versions
INSERT INTO prompt.diaobject ({version_columns})
SELECT {version_columns} FROM new_version

-- name: update_last
INSERT INTO prompt.diaobjectlast AS l (diaobjectid, validitystartmjdtai, ra, dec, ndiasources,
    firstdiasourcemjdtai, lastdiasourcemjdtai, healpix29)
SELECT diaobjectid, validitystartmjdtai, ra, dec, ndiasources,
       firstdiasourcemjdtai, lastdiasourcemjdtai, _healpix_29
FROM new_version
ON CONFLICT (diaobjectid) DO UPDATE SET
    validitystartmjdtai = excluded.validitystartmjdtai, ra = excluded.ra, dec = excluded.dec,
    ndiasources = excluded.ndiasources, firstdiasourcemjdtai = excluded.firstdiasourcemjdtai,
    lastdiasourcemjdtai = excluded.lastdiasourcemjdtai

-- name: cited_time
-- The latest instant a citation of the prompt catalog is pinned to: a write before it would change
-- the cited result, so the processing time must come after it too (docs/citations.md).
SELECT max(as_of_mjd_tai) FROM dpdb_meta.citation WHERE catalogs::jsonb ? 'prompt'

-- name: record_visit
INSERT INTO dpdb_meta.prompt_visit (visit, processing_time_mjd_tai, midpoint_mjd_tai, ingested_at,
    n_diasources, n_ss_attributed, n_associated, n_new_diaobjects, n_forced, n_forced_unlinked,
    step_seconds, seconds)
VALUES ($1, $2, $3, now(), $4, $5, $6, $7, $8, $9, $10, $11)
