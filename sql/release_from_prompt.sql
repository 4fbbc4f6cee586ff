-- Reprocessing of the prompt catalog for a data release (DPDD §3.3.5), run by
-- processing/release_from_prompt.py in one read-only transaction. The DiaObjects are
-- re-aggregated by the prompt ingest's own window_sources and aggregate blocks
-- (sql/prompt_ingest.sql), with the characterization window opened to the whole
-- history (visit_params.cutoff = Infinity): a release has no 12-month window.

-- name: touched
-- Every current DiaObject, in the shape the aggregate step reads. JIT off (as in the
-- ingest): the per-object lookups of window_sources are cheap, but their estimated
-- cost crosses jit_above_cost, and compiling them takes seconds.
SET LOCAL jit = off;
CREATE TEMP TABLE touched ON COMMIT DROP AS
SELECT l.diaobjectid, l.healpix29 AS pixel, false AS is_new, l.ra AS ref_ra,
       l.validitystartmjdtai AS previous_start, l.ndiasources,
       l.firstdiasourcemjdtai, l.lastdiasourcemjdtai
FROM prompt.diaobjectlast l;
ALTER TABLE touched ADD PRIMARY KEY (diaobjectid);
ANALYZE touched

-- name: release_time
-- The release's processing time: the latest the prompt catalog holds, so the same
-- prompt catalog always gives the same release.
SELECT greatest((SELECT max(processing_time_mjd_tai) FROM dpdb_meta.prompt_visit),
                (SELECT max(processing_time_mjd_tai) FROM dpdb_meta.prompt_relink)) AS t,
       (SELECT max(midpointmjdtai) FROM prompt.diasource) AS last_midpoint
