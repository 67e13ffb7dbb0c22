"""From joules to kWh, grams of CO2e and money: grid intensity from a shipped table or the recipe, times PUE."""

from __future__ import annotations

import csv
import difflib
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

JOULES_PER_KWH = 3.6e6


@dataclass(frozen=True)
class GridIntensity:
    """Grams of CO2e per kWh drawn from a grid, with where the figure comes from."""

    key: str
    name: str
    g_co2e_per_kwh: float
    year: int | None
    source: str


@dataclass(frozen=True)
class CarbonSettings:
    """What turns energy into emissions and cost for a report."""

    intensity: GridIntensity
    pue: float  # data-centre power usage effectiveness; 1.0 counts the IT equipment alone
    price_per_kwh: float | None
    currency: str


@dataclass(frozen=True)
class Carbon:
    """Per million inferences: facility energy (IT energy x PUE), emissions and cost."""

    kwh_per_million: float
    g_co2e_per_million: float
    cost_per_million: float | None


@lru_cache(maxsize=1)
def intensity_table() -> dict[str, GridIntensity]:
    """The shipped table (greencompress/resources/carbon_intensity.csv), keyed by lower-case key."""
    text = resources.files("greencompress.resources").joinpath("carbon_intensity.csv").read_text()
    table = {}
    for row in csv.DictReader(text.splitlines()):
        table[row["key"].lower()] = GridIntensity(
            row["key"],
            row["name"],
            float(row["g_co2e_per_kwh"]),
            int(row["year"]) if row["year"] else None,
            row["source"],
        )
    return table


def lookup_region(region: str) -> GridIntensity:
    """The table's row for `region`: `world`, an ISO alpha-3 code or a country's name, a sub-national grid (a US
    state or Chinese province by ISO 3166-2 code or name, `US-CA` or `California`; a Nordic bidding zone, `SE3`),
    or a cloud region (`aws:us-east-1`, `azure:westeurope`, `gcp:europe-west1`).

    Raises ValueError with the closest keys when there is no such row.
    """
    table = intensity_table()
    # Keys, names and a place's name before its country ("California" of "California, USA") find a row,
    # case-insensitively; a country's own name comes first ("Georgia" is the country, "US-GA" the state).
    spellings = {row.name.split(",")[0].lower(): key for key, row in table.items() if re.match(r"[a-z]{2}-", key)}
    spellings.update({row.name.lower(): key for key, row in table.items()})
    spellings.update({key: key for key in table})
    key = spellings.get(region.lower())
    if key is not None:
        return table[key]
    close = difflib.get_close_matches(region.lower(), list(spellings), n=3, cutoff=0.6)
    suggested = dict.fromkeys(table[spellings[c]].key for c in close)  # two spellings of one row: named once
    hint = f"; did you mean {', '.join(map(repr, suggested))}?" if close else ""
    raise ValueError(
        f"unknown region {region!r}{hint} (keys: 'world', ISO alpha-3 codes such as 'FRA', US states and Chinese "
        f"provinces such as 'US-CA', Nordic bidding zones such as 'SE3', or cloud regions such as 'aws:us-east-1', "
        f"'azure:westeurope', 'gcp:europe-west1'; see greencompress/resources/carbon_intensity.csv)"
    )


def carbon_settings(
    region: str, carbon_intensity: float | None, pue: float, price_per_kwh: float | None, currency: str
) -> CarbonSettings:
    """Settings from recipe fields: an explicit intensity overrides the region's row."""
    if carbon_intensity is not None:
        intensity = GridIntensity(
            "recipe", "set in the recipe", carbon_intensity, None, "energy.carbon_intensity in the recipe"
        )
    else:
        intensity = lookup_region(region)
    return CarbonSettings(intensity, pue, price_per_kwh, currency)


def carbon_per_million(joules_per_inference: float, settings: CarbonSettings) -> Carbon:
    """Energy, CO2e and cost of a million inferences at `joules_per_inference`."""
    kwh = joules_per_inference * 1e6 / JOULES_PER_KWH * settings.pue
    cost = kwh * settings.price_per_kwh if settings.price_per_kwh is not None else None
    return Carbon(
        kwh_per_million=kwh, g_co2e_per_million=kwh * settings.intensity.g_co2e_per_kwh, cost_per_million=cost
    )
