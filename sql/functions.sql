-- Flux <-> magnitude functions (DPDD §2.3): fluxes are stored in nJy; AB
-- magnitudes are derived on the fly and are NULL for flux <= 0 (or NULL).
--
--   SELECT objectId, nanojanskyToAbMag(g_psfFlux) AS g_mag,
--          nanojanskyToAbMagSigma(g_psfFlux, g_psfFluxErr) AS g_magErr
--   FROM dr1.Object;
--
-- m_AB = -2.5 log10(f / 3631 Jy), with f in nJy: -2.5 log10(f / 3.631e12) (about 31.4 - 2.5 log10 f).
-- Names follow scisql's (used by Qserv) so Rubin users find them.

CREATE OR REPLACE FUNCTION public.nanojanskyToAbMag(flux double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN flux > 0 THEN -2.5 * log(flux / 3.631e12) END;

CREATE OR REPLACE FUNCTION public.nanojanskyToAbMagSigma(flux double precision, fluxErr double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN flux > 0 AND fluxErr >= 0 THEN 2.5 / ln(10) * fluxErr / flux END;

CREATE OR REPLACE FUNCTION public.abMagToNanojansky(mag double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 3.631e12 * power(10, -0.4 * mag);

COMMENT ON FUNCTION public.nanojanskyToAbMag(double precision) IS
  'AB magnitude of a flux in nJy; NULL when flux <= 0 (DPDD 2.3)';
COMMENT ON FUNCTION public.nanojanskyToAbMagSigma(double precision, double precision) IS
  'AB magnitude error from flux and flux error in nJy; NULL when flux <= 0';
COMMENT ON FUNCTION public.abMagToNanojansky(double precision) IS
  'Flux in nJy of an AB magnitude';

-- Angle wrapping, for averaging right ascensions across RA 0/360.
CREATE OR REPLACE FUNCTION public.dpdb_wrap180(deg double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN deg - 360 * floor((deg + 180) / 360);

CREATE OR REPLACE FUNCTION public.dpdb_wrap360(deg double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN deg - 360 * floor(deg / 360);

COMMENT ON FUNCTION public.dpdb_wrap180(double precision) IS 'Angle in degrees wrapped to [-180, 180)';
COMMENT ON FUNCTION public.dpdb_wrap360(double precision) IS 'Angle in degrees wrapped to [0, 360)';
