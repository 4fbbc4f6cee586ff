-- Daytime relink (DPDD §3.2.2 step 4): DiaSources that orbit linking found to
-- belong to a Solar System object move from their DiaObject to the SSObject.
-- Run in one transaction by dpdb/prompt/relink.py, after the blocks params and
-- set_params of prompt_ingest.sql (visit_params: t = processing time, mjd = the
-- latest exposure midpoint held, cutoff = characterization window).
--
-- Nothing is overwritten: the DiaSource row as associated is withdrawn at t and
-- a new row, visible from t, carries the SSObject; a DiaObject left without
-- DiaSources is closed at t with no successor (deleted), its forced photometry
-- withdrawn; one that keeps others gets a new version aggregated without them.
-- Staged input (temporary): s_link (SSSource rows of the linkage file),
-- s_ssobject (SSObject rows, possibly none).

-- name: relink_params
CREATE TEMP TABLE relink_params (t double precision, load_link bigint, load_ssobject bigint) ON COMMIT DROP

-- name: set_relink_params
INSERT INTO relink_params VALUES ($1, $2, $3)

-- name: ssobject_versions
-- New and updated orbits: a new SSObject version from t, the previous one closed.
UPDATE prompt.ssobject o SET validityendmjdtai = p.t
FROM s_ssobject s, relink_params p
WHERE o.ssobjectid = s.ssobjectid AND o.validityendmjdtai IS NULL;
INSERT INTO prompt.ssobject ({ssobject_columns}, validitystartmjdtai, _load_id)
SELECT {s_ssobject_columns}, p.t, p.load_ssobject FROM s_ssobject s CROSS JOIN relink_params p

-- name: unknown_ssobject
SELECT l.ssobjectid FROM s_link l
WHERE NOT EXISTS (SELECT 1 FROM prompt.ssobject o WHERE o.ssobjectid = l.ssobjectid)
ORDER BY 1 LIMIT 1

-- name: moved
-- The current row of each DiaSource named by the linkage.
CREATE TEMP TABLE moved ON COMMIT DROP AS
SELECT l.diasourceid, l.ssobjectid, d.timeprocessedmjdtai AS previous_time, d._healpix_29 AS pixel,
       d.diaobjectid, d.ssobjectid AS previous_ssobjectid
FROM s_link l
LEFT JOIN prompt.diasource d ON d.diasourceid = l.diasourceid AND d.timewithdrawnmjdtai IS NULL

-- name: not_movable
-- A DiaSource the catalog does not hold, or one already attributed to another SSObject.
SELECT diasourceid, previous_time IS NULL AS missing, previous_ssobjectid FROM moved
WHERE previous_time IS NULL OR previous_ssobjectid IS DISTINCT FROM ssobjectid AND previous_ssobjectid IS NOT NULL
ORDER BY diasourceid LIMIT 1

-- name: drop_linked
-- DiaSources already carrying their SSObject (an overlapping linkage) stay as they are.
DELETE FROM moved WHERE previous_ssobjectid = ssobjectid

-- name: insert_moved_sources
INSERT INTO prompt.diasource ({source_columns}, diaobjectid, ssobjectid, ssobjectreassoctimemjdtai,
    timeprocessedmjdtai, _healpix_29, _load_id)
SELECT {s_source_columns}, NULL, m.ssobjectid, p.t, p.t, m.pixel, p.load_link
FROM moved m
JOIN prompt.diasource s
  ON s.diasourceid = m.diasourceid AND s.timeprocessedmjdtai = m.previous_time AND s._healpix_29 = m.pixel
CROSS JOIN relink_params p

-- name: withdraw_sources
UPDATE prompt.diasource d SET timewithdrawnmjdtai = p.t
FROM moved m, relink_params p
WHERE d.diasourceid = m.diasourceid AND d.timeprocessedmjdtai = m.previous_time AND d._healpix_29 = m.pixel

-- name: insert_sssources
INSERT INTO prompt.sssource ({link_columns}, timeprocessedmjdtai, _load_id)
SELECT {l_link_columns}, p.t, p.load_link
FROM s_link l JOIN moved m USING (diasourceid) CROSS JOIN relink_params p;
UPDATE prompt.sssource x SET designation = o.designation
FROM moved m, prompt.ssobject o
WHERE x.diasourceid = m.diasourceid AND x.designation IS NULL
  AND o.ssobjectid = x.ssobjectid AND o.validityendmjdtai IS NULL

-- name: affected
-- The DiaObjects that lost DiaSources, with what they keep.
CREATE TEMP TABLE affected ON COMMIT DROP AS
SELECT l.diaobjectid, l.validitystartmjdtai AS previous_start, l.healpix29 AS pixel, l.ra AS ref_ra,
       k.n, k.first, k.last
FROM (SELECT DISTINCT diaobjectid FROM moved WHERE diaobjectid IS NOT NULL) a
JOIN prompt.diaobjectlast l USING (diaobjectid)
CROSS JOIN LATERAL (
    SELECT count(*) AS n, min(d.midpointmjdtai) AS first, max(d.midpointmjdtai) AS last
    FROM prompt.diasource d
    WHERE d.diaobjectid = l.diaobjectid AND d._healpix_29 = l.healpix29 AND d.timewithdrawnmjdtai IS NULL
) k

-- name: forget_sums
-- The running sums of these DiaObjects held the withdrawn DiaSources: dropped, so
-- that their next version is recomputed from the rows they keep (dpdb/prompt/sums.py).
DELETE FROM prompt.diaobjectsums x USING affected a WHERE x.diaobjectid = a.diaobjectid

-- name: delete_orphans
-- DiaObjects left with no DiaSource: closed without a successor.
UPDATE prompt.diaobject o SET validityendmjdtai = p.t
FROM affected a, relink_params p
WHERE a.n = 0 AND o.diaobjectid = a.diaobjectid AND o.validitystartmjdtai = a.previous_start
  AND o._healpix_29 = a.pixel;
UPDATE prompt.diaforcedsource f SET timewithdrawnmjdtai = p.t
FROM affected a, relink_params p
WHERE a.n = 0 AND f.diaobjectid = a.diaobjectid AND f._healpix_29 = a.pixel AND f.timewithdrawnmjdtai IS NULL;
DELETE FROM prompt.diaobjectlast l USING affected a WHERE a.n = 0 AND l.diaobjectid = a.diaobjectid

-- name: touched
-- The DiaObjects that keep DiaSources: re-aggregated by the aggregate block of prompt_ingest.sql.
CREATE TEMP TABLE touched ON COMMIT DROP AS
SELECT diaobjectid, pixel, false AS is_new, ref_ra, previous_start,
       n AS ndiasources, first AS firstdiasourcemjdtai, last AS lastdiasourcemjdtai
FROM affected WHERE n > 0;
ALTER TABLE touched ADD PRIMARY KEY (diaobjectid);
ANALYZE touched

-- name: keep_nearby
-- The relinked DiaObject has not moved on the sky: its neighbours stay those of its previous version.
UPDATE new_version v SET {nearby_copy}
FROM touched t, prompt.diaobject o
WHERE t.diaobjectid = v.diaobjectid AND o.diaobjectid = t.diaobjectid
  AND o.validitystartmjdtai = t.previous_start AND o._healpix_29 = t.pixel

-- name: close_versions
UPDATE prompt.diaobject o SET validityendmjdtai = p.t
FROM touched t, new_version v, relink_params p
WHERE v.diaobjectid = t.diaobjectid AND o.diaobjectid = t.diaobjectid
  AND o.validitystartmjdtai = t.previous_start AND o._healpix_29 = t.pixel

-- name: record_relink
INSERT INTO dpdb_meta.prompt_relink (sha256, path, processing_time_mjd_tai, relinked_at, n_ssobjects,
    n_diasources, n_diaobjects_deleted, n_diaobjects_updated, seconds)
VALUES ($1, $2, $3, now(), $4, $5, $6, $7, $8)
