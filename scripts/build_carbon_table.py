"""Regenerate greencompress/resources/carbon_intensity.csv from the data files CodeCarbon ships.

    pip download --no-deps codecarbon==3.3.2 -d /tmp/cc && unzip -q /tmp/cc/codecarbon-*.whl -d /tmp/cc
    python scripts/build_carbon_table.py /tmp/cc/codecarbon 3.3.2

CodeCarbon (MIT licence, https://github.com/mlco2/codecarbon) collects grid carbon intensities per
country (data/private_infra/global_energy_mix.json, one year per country), a world average
(data/private_infra/carbon_intensity_per_source.json), Google Cloud regions (data/cloud/impact.csv,
from Google's region-carbon page) and sub-national grids (data/private_infra/2023/: US states from
EPA eGRID2023, Chinese provinces from the MEE's 2023 factors; data/private_infra/nordic_emissions.json:
Nordic bidding zones). This script keeps, per row, the value, its year where the file gives one, and
where it came from. AWS and Azure publish no per-region grid figure there: their regions get the
grid of the state, province, bidding zone or country the provider says each region is in
(CLOUD_LOCATIONS below, from the providers' region lists), and say so.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

OUTPUT = Path(__file__).resolve().parents[1] / "greencompress" / "resources" / "carbon_intensity.csv"
COLUMNS = ["key", "name", "g_co2e_per_kwh", "year", "source"]
POUNDS_PER_MWH_TO_GRAMS_PER_KWH = 0.45359237  # 1 lb = 453.59237 g; 1 MWh = 1,000 kWh
AWS_REGIONS = "https://docs.aws.amazon.com/global-infrastructure/latest/regions/aws-regions.html"
AZURE_REGIONS = "https://learn.microsoft.com/en-us/azure/reliability/regions-list"
# Where each cloud region is, by the key of the grid it draws from (a US state or Chinese province in ISO 3166-2,
# a Nordic bidding zone, else the country's ISO alpha-3 code), and the place the provider names.
CLOUD_LOCATIONS = {
    "aws": (
        AWS_REGIONS,
        {
            "us-east-1": ("US-VA", "N. Virginia"),
            "us-east-2": ("US-OH", "Ohio"),
            "us-west-1": ("US-CA", "N. California"),
            "us-west-2": ("US-OR", "Oregon"),
            "ca-central-1": ("CAN", "Canada Central"),
            "ca-west-1": ("CAN", "Calgary"),
            "eu-west-1": ("IRL", "Ireland"),
            "eu-west-2": ("GBR", "London"),
            "eu-west-3": ("FRA", "Paris"),
            "eu-central-1": ("DEU", "Frankfurt"),
            "eu-central-2": ("CHE", "Zurich"),
            "eu-north-1": ("SE3", "Stockholm"),
            "eu-south-1": ("ITA", "Milan"),
            "eu-south-2": ("ESP", "Spain"),
            "ap-northeast-1": ("JPN", "Tokyo"),
            "ap-northeast-2": ("KOR", "Seoul"),
            "ap-northeast-3": ("JPN", "Osaka"),
            "ap-southeast-1": ("SGP", "Singapore"),
            "ap-southeast-2": ("AUS", "Sydney"),
            "ap-southeast-3": ("IDN", "Jakarta"),
            "ap-southeast-4": ("AUS", "Melbourne"),
            "ap-south-1": ("IND", "Mumbai"),
            "ap-south-2": ("IND", "Hyderabad"),
            "ap-east-1": ("HKG", "Hong Kong"),
            "sa-east-1": ("BRA", "Sao Paulo"),
            "me-south-1": ("BHR", "Bahrain"),
            "me-central-1": ("ARE", "UAE"),
            "af-south-1": ("ZAF", "Cape Town"),
            "il-central-1": ("ISR", "Tel Aviv"),
            "cn-north-1": ("CN-BJ", "Beijing"),
            "cn-northwest-1": ("CN-NX", "Ningxia"),
        },
    ),
    "azure": (
        AZURE_REGIONS,
        {
            "eastus": ("US-VA", "Virginia"),
            "eastus2": ("US-VA", "Virginia"),
            "centralus": ("US-IA", "Iowa"),
            "northcentralus": ("US-IL", "Illinois"),
            "southcentralus": ("US-TX", "Texas"),
            "westus": ("US-CA", "California"),
            "westus2": ("US-WA", "Washington"),
            "westus3": ("US-AZ", "Phoenix"),
            "westcentralus": ("US-WY", "Wyoming"),
            "canadacentral": ("CAN", "Toronto"),
            "canadaeast": ("CAN", "Quebec City"),
            "northeurope": ("IRL", "Ireland"),
            "westeurope": ("NLD", "Netherlands"),
            "uksouth": ("GBR", "London"),
            "ukwest": ("GBR", "Cardiff"),
            "francecentral": ("FRA", "Paris"),
            "germanywestcentral": ("DEU", "Frankfurt"),
            "switzerlandnorth": ("CHE", "Zurich"),
            "norwayeast": ("NO1", "Oslo"),
            "swedencentral": ("SE3", "Gavle"),
            "polandcentral": ("POL", "Warsaw"),
            "italynorth": ("ITA", "Milan"),
            "spaincentral": ("ESP", "Madrid"),
            "japaneast": ("JPN", "Tokyo, Saitama"),
            "japanwest": ("JPN", "Osaka"),
            "koreacentral": ("KOR", "Seoul"),
            "southeastasia": ("SGP", "Singapore"),
            "eastasia": ("HKG", "Hong Kong"),
            "australiaeast": ("AUS", "New South Wales"),
            "australiasoutheast": ("AUS", "Victoria"),
            "centralindia": ("IND", "Pune"),
            "southindia": ("IND", "Chennai"),
            "brazilsouth": ("BRA", "Sao Paulo State"),
            "southafricanorth": ("ZAF", "Johannesburg"),
            "uaenorth": ("ARE", "Dubai"),
            "qatarcentral": ("QAT", "Doha"),
            "israelcentral": ("ISR", "Israel"),
        },
    ),
}
PROVIDER_NAMES = {"aws": "Amazon Web Services", "azure": "Microsoft Azure"}


def main(codecarbon_dir: Path, version: str) -> None:
    packaged = f"CodeCarbon {version}"
    rows = []
    average = json.loads((codecarbon_dir / "data/private_infra/carbon_intensity_per_source.json").read_text())
    rows.append(
        [
            "world",
            "World average",
            average["world_average"],
            2019,
            f"{average['world_average_source']} (via {packaged})",
        ]
    )
    mix = json.loads((codecarbon_dir / "data/private_infra/global_energy_mix.json").read_text())
    for iso_code, country in sorted(mix.items()):
        rows.append(
            [
                iso_code,
                country["country_name"],
                round(country["carbon_intensity"], 1),
                country["year"],
                f"{packaged} data/private_infra/global_energy_mix.json",
            ]
        )
    with open(codecarbon_dir / "data/cloud/impact.csv", encoding="utf-8-sig") as file:
        for region in csv.DictReader(file):
            place = ", ".join(part for part in (region["city"], region["country_name"]) if part)
            rows.append(
                [
                    f"{region['provider']}:{region['region']}",
                    f"{region['providerName']} {region['region']} ({place})",
                    region["impact"],
                    "",
                    f"{region['source']} (via {packaged} data/cloud/impact.csv)",
                ]
            )
    rows += sub_national_rows(codecarbon_dir, packaged)
    rows += cloud_rows(rows)
    with open(OUTPUT, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    print(f"wrote {len(rows)} rows to {OUTPUT}")


def sub_national_rows(codecarbon_dir: Path, packaged: str) -> list[list]:
    """US states (ISO 3166-2 keys, `US-CA`), Chinese provinces (`CN-BJ`) and Nordic bidding zones (`SE3`)."""
    rows = []
    states = json.loads((codecarbon_dir / "data/private_infra/2023/usa_emissions.json").read_text())
    source = states["_source"]
    for name, state in sorted(states.items()):
        if name.startswith("_") or state["regionCode"] == "usa":
            continue
        rows.append(
            [
                f"US-{state['regionCode']}",
                f"{name.title().replace(' Of ', ' of ')}, USA",
                round(state["emissions"] * POUNDS_PER_MWH_TO_GRAMS_PER_KWH, 1),
                source["year"],
                f"{source['name']} ({source['field']}, {source['url']}; via {packaged} "
                f"data/private_infra/2023/usa_emissions.json)",
            ]
        )
    provinces = json.loads((codecarbon_dir / "data/private_infra/2023/china_provincial_emissions.json").read_text())
    for key, province in provinces["data"].items():
        rows.append(
            [
                key,
                f"{province['description']}, China",
                province["emission_factor"],
                province["year"],
                f"{provinces['metadata']['source']} CO2 only ({provinces['metadata']['source_url']}; via {packaged} "
                f"data/private_infra/2023/china_provincial_emissions.json)",
            ]
        )
    nordic = json.loads((codecarbon_dir / "data/private_infra/nordic_emissions.json").read_text())
    for key, zone in nordic["data"].items():
        if key == "FI":  # the country row (FIN) already holds Finland
            continue
        rows.append(
            [
                key,
                zone["description"],
                zone["emission_factor"],
                zone["year"],
                f"{nordic['metadata']['source']} Production-based mix (via {packaged} "
                f"data/private_infra/nordic_emissions.json)",
            ]
        )
    return rows


def cloud_rows(rows: list[list]) -> list[list]:
    """AWS and Azure regions: the grid row of the place each provider says the region is in."""
    by_key = {row[0]: row for row in rows}
    made = []
    for provider, (regions_page, regions) in CLOUD_LOCATIONS.items():
        for region, (grid, place) in regions.items():
            key, name, value, year, source = by_key[grid]
            made.append(
                [
                    f"{provider}:{region}",
                    f"{PROVIDER_NAMES[provider]} {region} ({place}): the grid of {name}",
                    value,
                    year,
                    f"{source}; region location: {regions_page}",
                ]
            )
    return made


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
