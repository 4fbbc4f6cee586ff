"""A sky map as JSON: each occupied HEALPix pixel's outline, centre, count and density, and the cone
(centre and radius) that covers it, for the portal's map to draw and to cone-search on a click."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..plots.sky import SkyMap, pixel_outlines

__all__ = ["sky_json"]


def sky_json(sky: SkyMap) -> dict[str, Any]:
    """``sky`` with pixel outlines (RA kept in one piece around the footprint's centre), in degrees."""
    import healpy

    nside = 1 << sky.order
    outline = pixel_outlines(sky, step=1 if sky.order >= 6 else 4)  # large pixels have curved edges
    ra, dec, c_ra_unwrapped, c_dec, corners = outline
    c_ra = c_ra_unwrapped % 360.0
    # radius of the cone around the centre that holds the whole pixel: its farthest corner
    centre_vec = np.stack(healpy.pix2vec(nside, sky.pixels, nest=True), axis=-1)  # (pixels, 3)
    cos = np.einsum("pk,pkn->pn", centre_vec, corners).min(axis=1)
    radius = np.rad2deg(np.arccos(np.clip(cos, -1.0, 1.0)))
    density = sky.density
    return {
        "release": sky.release,
        "catalog": sky.catalog,
        "table": sky.table,
        "order": sky.order,
        "total": sky.total,
        "pixel_area": sky.pixel_area,
        "max_density": float(density.max()),
        "pixels": [
            {
                "pixel": int(p),
                "count": int(n),
                "density": round(float(d), 3),
                "ra": round(float(r0 % 360.0), 6),
                "x": round(float(x0), 6),
                "dec": round(float(d0), 6),
                "radius": round(float(rad), 6),
                "outline": [[round(float(a), 5), round(float(b), 5)] for a, b in zip(rr, dd, strict=True)],
            }
            for p, n, d, r0, x0, d0, rad, rr, dd in zip(
                sky.pixels, sky.counts, density, c_ra, c_ra_unwrapped, c_dec, radius, ra, dec, strict=True
            )
        ],
    }
