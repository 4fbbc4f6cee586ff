-- Checks of `dpdb release validate` (dpdb/lifecycle/validate.py), one scan per table.
-- {release} is the release schema; {child}, {parent}, {key} name a measurement table,
-- its object table and the key column they share.

-- name: references
-- Measurements whose object is missing, whose object lives in another partition
-- (an object and its measurements share a partition: docs/architecture.md, decision 6), or whose
-- CcdVisit is missing.
SELECT count(*) FILTER (WHERE c.{key} IS NOT NULL AND p.{key} IS NULL) AS orphans,
       count(*) FILTER (WHERE p.{key} IS NOT NULL AND p._healpix_29 <> c._healpix_29) AS misplaced,
       count(*) FILTER (WHERE v.ccdvisitid IS NULL) AS no_ccdvisit
FROM {release}.{child} c
LEFT JOIN (SELECT DISTINCT ON ({key}) {key}, _healpix_29 FROM {release}.{parent}) p ON p.{key} = c.{key}
LEFT JOIN {release}.ccdvisit v ON v.ccdvisitid = c.ccdvisitid

-- name: coverage
-- The sky the release covers: objects per HEALPix pixel (nested) at order {order}.
SELECT _healpix_29 >> {shift} AS pixel, count(*) FROM {release}.{parent} GROUP BY 1 ORDER BY 1
