"""The demo network's distance bands against the official USPS 3-digit ZIP zone chart.

The chart sample (2018) lives in ../shared/data/us; it is read in place and
the test skips where it is absent (and fails where OMS_REQUIRE_REAL_DATA is set,
as in CI). ZIP3 centroids come from the `zipcodes` package. DESIGN section 3
maps great-circle distance to zones by band; this checks that the bands the
demo rate card uses reproduce real carrier zones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zipcodes

from sourcing.costs import zone_of
from sourcing.demo import demo_network

from support import REQUIRE_REAL_DATA, unavailable

CHART = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "us"
    / "usps_zone_chart_sample.parquet"
)


def test_demo_zone_bands_reproduce_usps_zones() -> None:
    if not CHART.exists():
        unavailable(
            f"USPS zone chart not found at {CHART} (../shared/data is absent)", REQUIRE_REAL_DATA
        )
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    chart = pd.read_parquet(CHART, columns=["origin_zip", "dest_zip", "zone"]).dropna()
    chart = chart[chart["zone"].between(1, 8)]  # zone 9: territories, no distance band

    zips = pd.DataFrame([z for z in zipcodes.list_all() if z["active"] and z["lat"] and z["long"]])
    zips["zip3"] = zips["zip_code"].str[:3]
    zips["lat"] = zips["lat"].astype(float)
    zips["lon"] = zips["long"].astype(float)
    centroid = zips.groupby("zip3")[["lat", "lon"]].mean()
    pairs = chart.merge(centroid, left_on="origin_zip", right_index=True).merge(
        centroid, left_on="dest_zip", right_index=True, suffixes=("_o", "_d")
    )
    assert len(pairs) > 100_000

    lat1, lon1, lat2, lon2 = (
        np.radians(pairs[c].to_numpy()) for c in ("lat_o", "lon_o", "lat_d", "lon_d")
    )
    a = (
        np.sin((lat2 - lat1) / 2) ** 2
        + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    )
    km = 2 * 6371.0 * np.arcsin(np.sqrt(a))
    network = demo_network()
    ours = np.array([int(z) for z in network.zone_ids])[zone_of(network, km)]
    usps = pairs["zone"].to_numpy().astype(int)

    exact = float(np.mean(ours == usps))
    within_one = float(np.mean(np.abs(ours - usps) <= 1))
    # shared/data/README.md reports ~82% exact and ~97% within one zone for these bands.
    assert exact >= 0.80, exact
    assert within_one >= 0.96, within_one
