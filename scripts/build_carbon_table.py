"""Regenerate greencompress/resources/carbon_intensity.csv from the data files CodeCarbon ships.

    pip download --no-deps codecarbon==3.3.2 -d /tmp/cc && unzip -q /tmp/cc/codecarbon-*.whl -d /tmp/cc
    python scripts/build_carbon_table.py /tmp/cc/codecarbon 3.3.2

CodeCarbon (MIT licence, https://github.com/mlco2/codecarbon) collects grid carbon intensities per
country (data/private_infra/global_energy_mix.json, one year per country), a world average
(data/private_infra/carbon_intensity_per_source.json) and Google Cloud regions
(data/cloud/impact.csv, from Google's region-carbon page). This script keeps, per row, the value,
its year where the file gives one, and where it came from.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

OUTPUT = Path(__file__).resolve().parents[1] / "greencompress" / "resources" / "carbon_intensity.csv"
COLUMNS = ["key", "name", "g_co2e_per_kwh", "year", "source"]


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
    with open(OUTPUT, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    print(f"wrote {len(rows)} rows to {OUTPUT}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
