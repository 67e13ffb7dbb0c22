"""Joules to kWh, CO2e and cost; the shipped intensity table and its provenance."""

from __future__ import annotations

import pytest

from greencompress.measure.energy import EnergySpec
from greencompress.measure.energy.carbon import (
    carbon_per_million,
    carbon_settings,
    intensity_table,
    lookup_region,
)


def test_units_and_pue():
    settings = carbon_settings("world", carbon_intensity=400.0, pue=1.5, price_per_kwh=0.2, currency="USD")
    carbon = carbon_per_million(3.6, settings)  # 3.6 J x 1e6 = 3.6 MJ = 1 kWh at the chips
    assert carbon.kwh_per_million == pytest.approx(1.5)
    assert carbon.g_co2e_per_million == pytest.approx(600.0)
    assert carbon.cost_per_million == pytest.approx(0.3)
    assert settings.intensity.source == "energy.carbon_intensity in the recipe"


def test_every_row_has_a_value_and_a_source():
    table = intensity_table()
    assert len(table) > 200
    for row in table.values():
        assert row.g_co2e_per_kwh >= 0 and row.source
    assert table["world"].g_co2e_per_kwh == 475 and "iea.org" in table["world"].source
    assert all(row.year for key, row in table.items() if not key.startswith("gcp:"))  # Google gives none


def test_regions_by_key_or_name_and_suggestions():
    assert lookup_region("fra") == lookup_region("France") == intensity_table()["fra"]
    assert lookup_region("gcp:europe-west1").g_co2e_per_kwh > 0
    with pytest.raises(ValueError, match="unknown region 'Frnce'; did you mean 'FRA'"):
        lookup_region("Frnce")


def test_recipe_rejects_an_unknown_region_and_normalizes_a_known_one():
    assert EnergySpec(region="france").region == "FRA"
    with pytest.raises(ValueError, match="unknown region 'atlantis'"):
        EnergySpec(region="atlantis")
    assert carbon_per_million(1.0, carbon_settings("world", None, 1.0, None, "USD")).cost_per_million is None


def test_sub_national_grids_and_every_cloud_regions_grid_with_its_source():
    """A state, province or bidding zone by code or name; an AWS or Azure region takes the grid it sits in, says
    which, and keeps that grid's source and year beside where the provider places the region."""
    california = lookup_region("California")
    assert california == lookup_region("US-CA") and california.year == 2023 and "eGRID2023" in california.source
    assert lookup_region("Georgia").key == "GEO" and lookup_region("US-GA").name == "Georgia, USA"  # country first
    virginia = lookup_region("US-VA")
    us_east = lookup_region("aws:us-east-1")
    assert us_east.g_co2e_per_kwh == virginia.g_co2e_per_kwh and "the grid of Virginia, USA" in us_east.name
    assert "docs.aws.amazon.com" in us_east.source and virginia.source in us_east.source
    assert lookup_region("azure:westeurope").g_co2e_per_kwh == lookup_region("NLD").g_co2e_per_kwh
    assert lookup_region("azure:swedencentral").g_co2e_per_kwh == lookup_region("SE3").g_co2e_per_kwh < 50
    assert "CO2 only" in lookup_region("Beijing").source
    with pytest.raises(ValueError, match=r"unknown region 'Californa'; did you mean 'US-CA'\? \(keys"):
        lookup_region("Californa")
    assert EnergySpec(region="aws:eu-west-1").region == "aws:eu-west-1"
