"""Synthetic product catalog and messy customer item list with known right answers.

A matcher can only be measured, demonstrated and benchmarked against data whose truth is known,
and real customer lists cannot be shipped. So this module fabricates both sides: a reference
catalog full of near-identical siblings (64GB next to 128GB, 2-pack next to 4-pack, v2 next to
v3) and an item list carrying the defects real ERP exports have (abbreviations, typos, truncated
text, missing or mangled part numbers, UPC/EAN confusion), plus items that are simply not in
the catalog, so that a matcher that always answers something is penalised.

Everything is drawn from one ``numpy.random.default_rng(seed)`` stream and every table below is
an ordered tuple, so the same seed gives byte-identical output in any process.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class _Option:
    label: str
    code: str
    factor: float


@dataclass(frozen=True)
class _Axis:
    """One dimension along which siblings of a product family differ."""

    name: str
    options: tuple[_Option, ...]


@dataclass(frozen=True)
class _Brand:
    name: str
    prefix: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class _Kind:
    """A product type: how its titles and part numbers are spelled and how its variants differ.

    ``part_number`` must use every axis so that siblings never share a part number.
    In ``base``, ``A`` is a letter, ``9`` a digit, ``X`` either; other characters are literal.
    """

    category: str
    title: str
    part_number: str
    base: str
    price: float
    unit: str
    weight: float
    brands: tuple[_Brand, ...]
    axes: tuple[_Axis, ...]


def _axis(name: str, *specs: str) -> _Axis:
    options = []
    for spec in specs:
        label, code, factor = spec.split("|")
        options.append(_Option(label, code, float(factor)))
    return _Axis(name, tuple(options))


def _brands(*specs: str) -> tuple[_Brand, ...]:
    brands = []
    for spec in specs:
        name, prefix, lines = spec.split("|")
        brands.append(_Brand(name, prefix, tuple(lines.split(";"))))
    return tuple(brands)


_PACK_SIZES = ("Pack of 25|25|1.0", "Pack of 50|50|1.8", "Box of 100|100|3.2")

_KINDS: tuple[_Kind, ...] = (
    _Kind(
        "Power Tools > Drills & Drivers",
        "{brand} {voltage} Lithium-Ion Cordless {line} {gen}, 1/2 in Chuck, {kit}",
        "{prefix}{voltage}{base}{gen}-{kit}", "999", 99.0, "EA", 1.0,
        _brands(
            "DeWalt|DCD|Drill Driver;Hammer Drill;Brushless Drill Driver",
            "Milwaukee|28|FUEL Drill Driver;Compact Hammer Drill;Brushless Drill Driver",
            "Bosch|GSR|Drill Driver;Brushless Compact Drill Driver",
            "Makita|XFD|Drill Driver;Brushless Hammer Driver-Drill",
            "Ryobi|PDD|ONE+ Drill Driver;ONE+ HP Brushless Drill Driver",
        ),
        (
            _axis("voltage", "12V|12|0.8", "18V|18|1.0", "20V MAX|20|1.05"),
            _axis("gen", "|1|1.0", "Gen 2|2|1.1", "Gen 3|3|1.2"),
            _axis("kit", "Tool Only|B|1.0", "Kit with 1 x 4.0Ah Battery|K1|1.5",
                  "Kit with 2 x 2.0Ah Batteries|K2|1.7", "Kit with 2 x 5.0Ah Batteries|K5|2.2"),
        ),
    ),
    _Kind(
        "Power Tool Accessories > Drill Bits",
        "{brand} {line}, {pieces}, {case}",
        "{prefix}{base}{pieces}{case}", "999", 34.0, "EA", 0.6,
        _brands(
            "DeWalt|DW|Cobalt Drill Bit Set;Titanium Pilot Point Drill Bit Set",
            "Milwaukee|48-89-|SHOCKWAVE Impact Duty Drill Bit Set;Cobalt Red Helix Drill Bit Set",
            "Irwin|IW|Black Oxide Drill Bit Set;Cobalt M-35 Drill Bit Set",
            "Bosch|CO|Cobalt M42 Drill Bit Set;Black Oxide Metal Drill Bit Set",
        ),
        (
            _axis("pieces", "14-Piece|14|1.0", "21-Piece|21|1.4", "29-Piece|29|1.9"),
            _axis("case", "Plastic Case|P|1.0", "Metal Index Case|M|1.3"),
        ),
    ),
    _Kind(
        "Power Tool Accessories > Saw Blades",
        "{brand} {diameter} x {teeth} {line} Circular Saw Blade {pack}",
        "{prefix}{diameter}{teeth}{base}{pack}", "9A", 18.0, "EA", 0.6,
        _brands(
            "Diablo|D|Framing;Finish;Ultra Finish",
            "DeWalt|DWA|Framing;Fine Finish",
            "Freud|LU|General Purpose;Fine Finish",
            "Irwin|IR|Marathon Framing;Classic Finish",
        ),
        (
            _axis("diameter", "7-1/4 in|0724|1.0", "8-1/4 in|0824|1.2", "10 in|1000|1.7", "12 in|1200|2.3"),
            _axis("teeth", "24T|024|1.0", "40T|040|1.3", "60T|060|1.6", "80T|080|1.9"),
            _axis("pack", "|S|1.0", "2-Pack|2P|1.8"),
        ),
    ),
    _Kind(
        "Safety > Gloves",
        "{brand} {line} Nitrile Gloves {size} {color}, {pack}",
        "{prefix}{base}-{color}{size}-{pack}", "999", 11.0, "BX", 1.2,
        _brands(
            "3M|NG|Disposable;Industrial Grade",
            "Ansell|92-|TouchNTuff Powder-Free;Microflex Exam Grade",
            "Kimberly-Clark|KC|KleenGuard G10;Purple Nitrile Exam",
            "SHOWA|SH|7005PF Biodegradable;6110PF Powder-Free",
            "AMMEX|AP|Professional 4 mil;Gloveworks HD 6 mil",
        ),
        (
            _axis("size", "Small|S|1.0", "Medium|M|1.0", "Large|L|1.0", "X-Large|XL|1.05"),
            _axis("color", "Blue|BL|1.0", "Black|BK|1.1", "Purple|PR|1.15", "Orange|OR|1.2"),
            _axis("pack", "50 Pack|50|0.6", "100 Pack|100|1.0", "200 Pack|200|1.9", "Case of 1000|1000|8.5"),
        ),
    ),
    _Kind(
        "Safety > Eye Protection",
        "{brand} {line} Safety Glasses, {lens} Lens, {coating}, {pack}",
        "{prefix}{base}-{lens}{coating}-{pack}", "999", 6.0, "EA", 0.7,
        _brands(
            "3M|SF|SecureFit 400;Virtua CCS",
            "Honeywell|S|Uvex Genesis;Uvex Stealth",
            "Pyramex|S|Intruder;Venture Gear",
            "MCR Safety|BK|Klondike;Swagger",
        ),
        (
            _axis("lens", "Clear|C|1.0", "Gray|G|1.0", "Amber|A|1.05", "Indoor/Outdoor Mirror|IO|1.2"),
            _axis("coating", "Anti-Fog|AF|1.0", "Anti-Scratch|AS|0.9"),
            _axis("pack", "1 Pair|1|1.0", "Box of 12|12|10.5"),
        ),
    ),
    _Kind(
        "Safety > Respirators",
        "{brand} {line} Respirator, {size}, {pack}",
        "{prefix}{base}{size}-{pack}", "999", 19.0, "BX", 0.5,
        _brands(
            "3M|8|N95 Particulate;N95 Particulate with Cool Flow Valve;Aura N95 Particulate",
            "Moldex|2|N95 Particulate;N99 Particulate with HandyStrap",
            "Honeywell|DF|N95 Disposable;P100 Particulate",
        ),
        (
            _axis("size", "Standard|S|1.0", "Small|SM|1.0"),
            _axis("pack", "Box of 10|10|1.0", "Box of 20|20|1.9", "Case of 160|160|14.0"),
        ),
    ),
    _Kind(
        "Fasteners > Bolts & Screws",
        "{brand} {material} {line}, {size}, {pack}",
        "{prefix}{base}-{material}{size}-{pack}", "999", 9.0, "BX", 1.4,
        _brands(
            "Hillman|HL|Hex Head Cap Screw;Socket Head Cap Screw;Carriage Bolt",
            "Fabory|F|Hex Head Cap Screw;Flat Head Machine Screw",
            "Bossard|B|Socket Head Cap Screw;Hex Head Cap Screw",
            "Würth|W|Hex Head Cap Screw;Socket Head Cap Screw",
            "Everbilt|EB|Hex Bolt;Carriage Bolt",
        ),
        (
            _axis("material", "Stainless Steel 18-8|SS|1.6", "316 Stainless Steel|316|2.2", "Zinc Plated Steel|ZP|1.0",
                  "Grade 8 Yellow Zinc Steel|G8|1.3", "Hot-Dip Galvanized Steel|HDG|1.2"),
            _axis("size", "1/4-20 x 1 in|1420-100|1.0", "3/8-16 x 1-1/2 in|3816-150|1.5", "1/2-13 x 2 in|1213-200|2.1",
                  "M6-1.0 x 20 mm|M6X20|1.0", "M8-1.25 x 30 mm|M8X30|1.4"),
            _axis("pack", *_PACK_SIZES),
        ),
    ),
    _Kind(
        "Electrical > Cable Ties",
        "{brand} {line}, {length}, {tensile}, {color}, {pack}",
        "{prefix}{length}{tensile}{base}-{color}{pack}", "99A", 12.0, "PK", 0.8,
        _brands(
            "Panduit|PLT|Pan-Ty Nylon Cable Ties;Heavy Duty Nylon Cable Ties",
            "ABB|TY|Ty-Rap Nylon Cable Ties;UV-Resistant Cable Ties",
            "HellermannTyton|T|Standard Nylon Cable Ties;Releasable Cable Ties",
            "Gardner Bender|46-|Nylon Cable Ties;Heavy Duty Cable Ties",
        ),
        (
            _axis("length", "4 in|4|0.6", "8 in|8|1.0", "11 in|11|1.3", "14 in|14|1.6"),
            _axis("tensile", "18 lb|I|0.8", "50 lb|M|1.0", "120 lb|H|1.6"),
            _axis("color", "Natural|N|1.0", "UV Black|B|1.1"),
            _axis("pack", "Pack of 100|100|1.0", "Pack of 1000|1000|8.0"),
        ),
    ),
    _Kind(
        "Electrical > Tape",
        "{brand} {line}, {width} x {length}, {color}",
        "{prefix}{base}-{width}{length}-{color}", "999", 4.5, "RL", 0.6,
        _brands(
            "3M|33|Scotch Super 33+ Vinyl Electrical Tape;Scotch 130C Rubber Splicing Tape;Temflex 1700 Vinyl Electrical Tape",
            "tesa|T|Vinyl Electrical Tape;Premium PVC Insulation Tape",
            "Nitto|N|Vinyl Electrical Tape",
        ),
        (
            _axis("width", "3/4 in|34|1.0", "1 in|1|1.3", "1-1/2 in|15|1.8"),
            _axis("length", "20 ft|20|0.5", "44 ft|44|0.8", "66 ft|66|1.0"),
            _axis("color", "Black|BK|1.0", "Red|RD|1.1", "White|WH|1.1", "Green|GN|1.1", "Blue|BL|1.1"),
        ),
    ),
    _Kind(
        "Electrical > Building Wire",
        "{brand} {gauge} {line}, {color}, {length}",
        "{prefix}{gauge}{color}{base}-{length}", "999", 89.0, "RL", 0.6,
        _brands(
            "Southwire|SW|THHN Stranded Copper Building Wire;SIMpull THHN Solid Copper Wire",
            "Cerrowire|CW|THHN Stranded Copper Building Wire;XHHW-2 Stranded Copper Wire",
            "Encore Wire|EW|THHN Solid Copper Building Wire",
        ),
        (
            _axis("gauge", "14 AWG|14|1.0", "12 AWG|12|1.4", "10 AWG|10|2.1", "8 AWG|08|3.4"),
            _axis("color", "Black|BK|1.0", "White|WH|1.0", "Red|RD|1.0", "Green|GN|1.0"),
            _axis("length", "500 ft Spool|500|1.0", "2500 ft Reel|2500|4.6"),
        ),
    ),
    _Kind(
        "Electrical > Lighting",
        "{brand} {line}, {cct}, {dimming}, {pack}",
        "{prefix}{base}{cct}{dimming}-{pack}", "999", 9.0, "PK", 0.7,
        _brands(
            "Philips|5|A19 LED Light Bulb 60W Equivalent;BR30 LED Flood Light Bulb 65W Equivalent",
            "GE|9|A19 LED Light Bulb 60W Equivalent;PAR38 LED Flood Light Bulb 90W Equivalent",
            "Cree|C|A19 LED Light Bulb 60W Equivalent;BR30 LED Flood Light Bulb 65W Equivalent",
            "Feit Electric|OM|A19 LED Light Bulb 100W Equivalent;PAR30 LED Flood Light Bulb 75W Equivalent",
        ),
        (
            _axis("cct", "Soft White 2700K|27|1.0", "Bright White 3000K|30|1.0", "Daylight 5000K|50|1.05"),
            _axis("dimming", "Dimmable|D|1.2", "Non-Dimmable|ND|1.0"),
            _axis("pack", "2-Pack|2|1.0", "4-Pack|4|1.8", "6-Pack|6|2.5", "12-Pack|12|4.6"),
        ),
    ),
    _Kind(
        "Power Transmission > Bearings",
        "{brand} {designation} {seal} {line}, {clearance}",
        "{designation}-{seal}{clearance}{base}", "/A99", 7.0, "EA", 0.6,
        _brands(
            "SKF||Deep Groove Ball Bearing",
            "NSK||Deep Groove Ball Bearing;Sealed Ball Bearing",
            "Timken||Radial Ball Bearing",
            "NTN||Deep Groove Ball Bearing",
            "Schaeffler||FAG Deep Groove Ball Bearing",
        ),
        (
            _axis("designation", "6203 17 x 40 x 12 mm|6203|1.0", "6204 20 x 47 x 14 mm|6204|1.2",
                  "6205 25 x 52 x 15 mm|6205|1.4", "6305 25 x 62 x 17 mm|6305|2.0", "6206 30 x 62 x 16 mm|6206|1.9"),
            _axis("seal", "Double Rubber Sealed 2RS|2RS|1.1", "Double Shielded ZZ|ZZ|1.0", "Open|OP|0.9"),
            _axis("clearance", "Normal Clearance|CN|1.0", "C3 Clearance|C3|1.1"),
        ),
    ),
    _Kind(
        "Plumbing > Fittings",
        "{brand} {size} {line}, Lead-Free Brass, {pack}",
        "{prefix}{base}{size}{pack}", "999", 11.0, "EA", 0.6,
        _brands(
            "SharkBite|U|Push-to-Connect Coupling;Push-to-Connect Tee;Push-to-Connect 90 Degree Elbow",
            "Apollo|APXC|Push-to-Connect Coupling;Push-to-Connect Ball Valve",
            "Cash Acme|CA|Push-to-Connect Coupling;Push-to-Connect Tee",
        ),
        (
            _axis("size", "1/2 in|008|1.0", "3/4 in|012|1.4", "1 in|016|2.2"),
            _axis("pack", "1 Pack|LF|1.0", "4-Pack|LF4|3.6", "10-Pack|LF10|8.5"),
        ),
    ),
    _Kind(
        "Maintenance > Lubricants",
        "{brand} {line}, {size}, {pack}",
        "{prefix}{base}-{size}{pack}", "999", 7.0, "EA", 0.5,
        _brands(
            "WD-40|49|Multi-Use Product with Smart Straw;Specialist Silicone Lubricant;Specialist Penetrant",
            "CRC|05|Contact Cleaner;Brakleen Brake Parts Cleaner;Food Grade Silicone Lubricant",
            "Blaster|PB|Penetrating Catalyst;Dry Lube with Teflon",
        ),
        (
            _axis("size", "8 oz Aerosol|08|1.0", "11 oz Aerosol|11|1.3", "1 gal Jug|128|4.5"),
            _axis("pack", "Single|S|1.0", "6-Pack|6|5.6", "Case of 12|12|10.8"),
        ),
    ),
    _Kind(
        "Hand Tools > Measuring",
        "{brand} {length} {line}, {scale}",
        "{prefix}{base}{length}{scale}", "999", 17.0, "EA", 0.5,
        _brands(
            "Stanley|STHT|FatMax Tape Measure;PowerLock Tape Measure",
            "Milwaukee|48-22-|Compact Magnetic Tape Measure;Wide Blade Tape Measure",
            "Lufkin|L|Shockforce Tape Measure",
            "Komelon|KM|Self Lock Tape Measure",
        ),
        (
            _axis("length", "16 ft|16|1.0", "25 ft|25|1.3", "30 ft|30|1.5", "35 ft|35|1.7"),
            _axis("scale", "Inch Scale|I|1.0", "Inch/Metric Scale|M|1.1"),
        ),
    ),
    _Kind(
        "Electronics > Memory Cards",
        "{brand} {line} {capacity} microSDXC UHS-I Memory Card {adapter}",
        "{prefix}{base}-{capacity}-{adapter}", "AAA", 9.0, "EA", 1.2,
        _brands(
            "SanDisk|SDSQ|Ultra;Extreme;Extreme PRO;High Endurance",
            "Samsung|MB-M|EVO Select;PRO Plus;PRO Endurance",
            "Kingston|SDC|Canvas Select Plus;Canvas Go! Plus;Industrial",
            "Lexar|LMS|PLAY;Professional 1066x",
            "PNY|P-SD|Elite;PRO Elite",
        ),
        (
            _axis("capacity", "32GB|032G|1.0", "64GB|064G|1.4", "128GB|128G|2.1", "256GB|256G|3.6",
                  "512GB|512G|6.2", "1TB|1T00|11.0"),
            _axis("adapter", "with SD Adapter|A|1.05", "|N|1.0"),
        ),
    ),
    _Kind(
        "Electronics > USB Flash Drives",
        "{brand} {line} {capacity} {interface} Flash Drive",
        "{prefix}{base}-{capacity}{interface}", "999", 8.0, "EA", 0.8,
        _brands(
            "SanDisk|SDCZ|Ultra Flair;Ultra Dual Drive Luxe;Extreme PRO",
            "Samsung|MUF-|BAR Plus;FIT Plus;DUO Plus",
            "Kingston|DT|DataTraveler Exodia;DataTraveler Max",
            "PNY|P-FD|Turbo Attache 3;Elite-X Fit",
        ),
        (
            _axis("capacity", "32GB|32G|1.0", "64GB|64G|1.3", "128GB|128G|1.9", "256GB|256G|3.2", "512GB|512G|5.8"),
            _axis("interface", "USB 3.2 Gen 1|A|1.0", "USB-C|C|1.2"),
        ),
    ),
    _Kind(
        "Electronics > Solid State Drives",
        "{brand} {line} {capacity} {form}",
        "{prefix}{base}{capacity}{form}", "99A", 69.0, "EA", 0.9,
        _brands(
            "Samsung|MZ-V|990 PRO;990 EVO Plus;870 EVO",
            "Crucial|CT|P3 Plus;T500;MX500",
            "Western Digital|WDS|Black SN850X;Blue SN580;Red SA500",
            "Kingston|SNV|NV3;KC3000;A400",
            "Seagate|ZP|FireCuda 530;BarraCuda 510",
        ),
        (
            _axis("capacity", "500GB|500|1.0", "1TB|1T0|1.6", "2TB|2T0|2.7", "4TB|4T0|5.1"),
            _axis("form", "M.2 2280 NVMe PCIe Gen4 Internal SSD|G4|1.2", "M.2 2280 NVMe PCIe Gen3 Internal SSD|G3|1.0",
                  "2.5 in SATA III Internal SSD|SA|0.9"),
        ),
    ),
    _Kind(
        "Electronics > Cables",
        "{brand} {line}, {length}, {color}, {pack}",
        "{prefix}{base}-{length}{color}{pack}", "999", 9.0, "EA", 1.0,
        _brands(
            "Belkin|AV|Ultra High Speed HDMI 2.1 Cable 8K@60Hz;USB-C to USB-C Cable 240W",
            "Cable Matters|10|Ultra High Speed HDMI 2.1 Cable 8K@60Hz;Cat6 Snagless Ethernet Patch Cable",
            "Monoprice|MP|High Speed HDMI Cable with Ethernet 4K@60Hz;Cat6A Shielded Ethernet Patch Cable",
            "StarTech.com|HDMM|Premium High Speed HDMI Cable 4K HDR;DisplayPort 1.4 Cable 8K@60Hz",
            "Anker|A8|PowerLine III USB-C to USB-C Cable;USB-C to Lightning Cable",
        ),
        (
            _axis("length", "3 ft|03|1.0", "6 ft|06|1.2", "10 ft|10|1.5", "15 ft|15|1.9", "25 ft|25|2.6"),
            _axis("color", "Black|BK|1.0", "White|WH|1.0", "Gray|GR|1.05"),
            _axis("pack", "Single|1|1.0", "2-Pack|2|1.7", "5-Pack|5|3.8"),
        ),
    ),
    _Kind(
        "Electronics > Batteries",
        "{brand} {line} {size} Batteries, {pack}",
        "{prefix}{size}{base}-{pack}", "999", 6.0, "PK", 0.9,
        _brands(
            "Duracell|MN|Coppertop Alkaline;Procell Alkaline;Optimum Alkaline",
            "Energizer|E|MAX Alkaline;Industrial Alkaline;Ultimate Lithium",
            "Panasonic|LR|Alkaline Plus;Industrial Alkaline",
            "Rayovac|RV|High Energy Alkaline;Fusion Alkaline",
        ),
        (
            _axis("size", "AA|15|1.0", "AAA|24|1.0", "C|14|1.6", "D|13|1.8", "9V|16|2.0"),
            _axis("pack", "4-Pack|4|1.0", "8-Pack|8|1.8", "12-Pack|12|2.5", "24-Pack|24|4.4", "Case of 144|144|22.0"),
        ),
    ),
    _Kind(
        "Networking > Switches",
        "{brand} {ports} {line} {version}",
        "{prefix}{ports}{base}-{version}", "99A", 39.0, "EA", 0.8,
        _brands(
            "Netgear|GS|Unmanaged Gigabit Ethernet Switch;Smart Managed Plus Gigabit Switch",
            "TP-Link|TL-SG|Unmanaged Gigabit Ethernet Switch;Easy Smart Gigabit Switch;PoE+ Gigabit Switch",
            "Cisco|CBS|Business Unmanaged Switch;Business Smart Switch",
            "D-Link|DGS-|Unmanaged Gigabit Switch;Smart Managed Gigabit Switch",
        ),
        (
            _axis("ports", "5-Port|05|1.0", "8-Port|08|1.4", "16-Port|16|2.6", "24-Port|24|3.9"),
            _axis("version", "|100|1.0", "v2|200|1.05", "v3|300|1.1"),
        ),
    ),
    _Kind(
        "Electronics > Computer Peripherals",
        "{brand} {line} {connection}, {color}",
        "{prefix}{base}{color}{connection}", "999", 49.0, "EA", 0.8,
        _brands(
            "Logitech|910-|MX Master 3S Wireless Performance Mouse;MX Keys S Wireless Keyboard;M720 Triathlon Mouse",
            "Microsoft|MS|Ergonomic Keyboard;Bluetooth Mouse;Sculpt Ergonomic Mouse",
            "Razer|RZ01-|Basilisk V3 Pro Mouse;Pro Click Mini Mouse",
            "HP|HP|430 Multi-Device Wireless Mouse;975 Dual-Mode Wireless Keyboard",
        ),
        (
            _axis("color", "Graphite|GR|1.0", "Pale Gray|PG|1.0", "Black|BK|1.0", "Rose|RS|1.05"),
            _axis("connection", "Bluetooth|BT|1.0", "with USB Receiver|RX|1.1"),
        ),
    ),
    _Kind(
        "Electronics > Chargers",
        "{brand} {line} {wattage}, {color}",
        "{prefix}{base}{wattage}-{color}", "999", 22.0, "EA", 0.6,
        _brands(
            "Anker|A2|Nano USB-C Wall Charger;Prime GaN Charger",
            "Belkin|WCA|BoostCharge Pro USB-C GaN Charger",
            "UGREEN|UG|Nexode USB-C Charger",
        ),
        (
            _axis("wattage", "20W|20|1.0", "30W|30|1.3", "45W|45|1.7", "65W|65|2.2", "100W|100|3.1"),
            _axis("color", "Black|1|1.0", "White|2|1.0"),
        ),
    ),
    _Kind(
        "Electronics > Monitors",
        "{brand} {line} {size} {resolution} IPS Monitor",
        "{prefix}{size}{base}{resolution}", "99A", 189.0, "EA", 0.6,
        _brands(
            "Dell|S|UltraSharp;P Series;S Series",
            "LG|UL|UltraFine;UltraGear",
            "Samsung|LS|ViewFinity S6;Odyssey G5",
            "ASUS|VG|ProArt Display;TUF Gaming",
        ),
        (
            _axis("size", "24 in|24|1.0", "27 in|27|1.3", "32 in|32|1.8", "34 in Curved|34|2.3"),
            _axis("resolution", "1920 x 1080 Full HD|FH|1.0", "2560 x 1440 QHD|QH|1.4", "3840 x 2160 4K UHD|UH|2.0"),
        ),
    ),
    _Kind(
        "Electronic Components > Resistors",
        "{brand} {line}, {resistance} {tolerance}, {package}, {pack}",
        "{prefix}{package}{tolerance}{base}-{resistance}{pack}", "A99", 0.9, "EA", 0.8,
        _brands(
            "Yageo|RC|Thick Film Chip Resistor",
            "Vishay|CRCW|Thick Film Chip Resistor;Automotive Thick Film Chip Resistor",
            "Panasonic|ERJ-|Thick Film Chip Resistor",
            "KOA Speer|RK73H|Thick Film Chip Resistor",
            "Bourns|CR|Thick Film Chip Resistor",
        ),
        (
            _axis("resistance", "100 Ohm|100R|1.0", "1 kOhm|1K0|1.0", "4.7 kOhm|4K7|1.0", "10 kOhm|10K|1.0",
                  "47 kOhm|47K|1.0"),
            _axis("tolerance", "1%|F|1.2", "5%|J|1.0"),
            _axis("package", "0402|0402|1.0", "0603|0603|1.0", "0805|0805|1.1", "1206|1206|1.3"),
            _axis("pack", "Cut Tape of 100|CT|1.0", "Reel of 5000|RL|18.0"),
        ),
    ),
    _Kind(
        "Electronic Components > Capacitors",
        "{brand} {line}, {capacitance} {voltage} {dielectric}, {package}",
        "{prefix}{package}{dielectric}{voltage}{capacitance}{base}", "A99A", 0.4, "EA", 0.7,
        _brands(
            "Murata|GRM|Multilayer Ceramic Capacitor",
            "KEMET|C|Multilayer Ceramic Capacitor;Automotive Grade MLCC",
            "TDK|CGA|Multilayer Ceramic Capacitor",
            "Samsung Electro-Mechanics|CL|Multilayer Ceramic Capacitor",
        ),
        (
            _axis("capacitance", "10 pF|100|1.0", "100 nF|104|1.0", "1 uF|105|1.3", "10 uF|106|2.0"),
            _axis("voltage", "16V|C|1.0", "25V|E|1.1", "50V|H|1.2"),
            _axis("dielectric", "X7R|R7|1.0", "X5R|R6|0.9", "C0G|5C|1.3"),
            _axis("package", "0402|0402|1.0", "0603|0603|1.0", "0805|0805|1.1"),
        ),
    ),
)

_KIND_BY_CATEGORY: dict[str, _Kind] = {kind.category: kind for kind in _KINDS}

_MANUFACTURERS: tuple[str, ...] = tuple(dict.fromkeys(b.name for k in _KINDS for b in k.brands))

# GS1 country prefixes for the makers that publish EAN-13 rather than UPC-A.
_EAN_COUNTRY = {"Bosch": "400", "Würth": "404", "tesa": "403", "Schaeffler": "401", "SKF": "731",
                "Fabory": "871", "Bossard": "761", "Nitto": "490", "Murata": "454"}


def _company_prefix(index: int, name: str) -> int:
    """A fixed GS1 company prefix per maker, so the same maker's GTINs share leading digits.

    Numbered rather than hashed so that it does not depend on interpreter hash randomisation;
    7919 is coprime with 10**4, so prefixes never collide.
    """
    company = (1009 + index * 7919) % 10_000
    if name in _EAN_COUNTRY:
        return int(_EAN_COUNTRY[name]) * 10_000 + company
    return (index % 4 + 1) * 10_000 + company


_GS1_PREFIX: dict[str, int] = {name: _company_prefix(i, name) for i, name in enumerate(_MANUFACTURERS)}

# How customers' ERP systems spell the makers: abbreviations, legal names, dealer codes.
_MANUFACTURER_ALIASES: dict[str, tuple[str, ...]] = {
    "DeWalt": ("DEWALT", "DWT", "Dewalt Industrial Tool Co"),
    "Milwaukee": ("MILW", "Milwaukee Electric Tool", "MET"),
    "Bosch": ("BOS", "Robert Bosch Tool Corp", "BOSCH PT"),
    "Makita": ("MAK", "Makita USA Inc"),
    "Ryobi": ("RYO", "TTI Ryobi"),
    "Irwin": ("IRW", "Irwin Industrial Tools"),
    "Diablo": ("Freud Diablo", "DIA"),
    "Freud": ("FRE", "Freud America"),
    "3M": ("3M Co", "MMM", "3M Company"),
    "Ansell": ("ANS", "Ansell Healthcare"),
    "Kimberly-Clark": ("KC", "Kimberly Clark Professional", "KCP"),
    "SHOWA": ("Showa Best Glove", "SHO"),
    "Honeywell": ("HON", "Honeywell Safety", "Uvex"),
    "Pyramex": ("PYR", "Pyramex Safety"),
    "MCR Safety": ("MCR", "Memphis Glove"),
    "Moldex": ("MOL", "Moldex-Metric"),
    "Hillman": ("HIL", "The Hillman Group"),
    "Würth": ("Wurth", "WUERTH", "Wurth Industry"),
    "Panduit": ("PAN", "Panduit Corp"),
    "ABB": ("Thomas & Betts", "T&B", "ABB Installation Products"),
    "HellermannTyton": ("HT", "Hellermann Tyton"),
    "Gardner Bender": ("GB", "Gardner Bender Inc"),
    "Southwire": ("SWC", "Southwire Co"),
    "Cerrowire": ("CER", "Cerro Wire"),
    "Philips": ("PHI", "Signify", "Philips Lighting"),
    "GE": ("GE Lighting", "Savant GE"),
    "Feit Electric": ("FEIT", "Feit"),
    "Schaeffler": ("FAG", "Schaeffler Group"),
    "Timken": ("TIM", "The Timken Company"),
    "SharkBite": ("SHRK", "RWC SharkBite", "Reliance Worldwide"),
    "WD-40": ("WD40", "WD-40 Company"),
    "CRC": ("CRC Industries",),
    "Stanley": ("STAN", "Stanley Black & Decker", "STA"),
    "SanDisk": ("SNDK", "Western Digital SanDisk", "SDK"),
    "Samsung": ("SAMS", "Samsung Electronics", "SEC"),
    "Kingston": ("KNG", "Kingston Technology"),
    "Western Digital": ("WD", "WDC"),
    "Seagate": ("SEA", "Seagate Technology"),
    "Belkin": ("BLK", "Belkin International"),
    "StarTech.com": ("StarTech", "STC"),
    "Logitech": ("LOGI", "Logitech Inc"),
    "Microsoft": ("MSFT", "Microsoft Corp"),
    "TP-Link": ("TPLINK", "TP Link"),
    "Netgear": ("NTGR", "NETGEAR Inc"),
    "Cisco": ("CSCO", "Cisco Systems"),
    "Duracell": ("DUR", "Duracell Procell"),
    "Energizer": ("EVR", "Energizer Holdings"),
    "Panasonic": ("PAN", "Panasonic Industrial"),
    "Vishay": ("VSH", "Vishay Dale"),
    "Yageo": ("YAG",),
    "KOA Speer": ("KOA",),
    "Murata": ("MUR", "Murata Electronics"),
    "KEMET": ("KEM", "Kemet Electronics"),
    "Samsung Electro-Mechanics": ("SEMCO", "Samsung EM"),
}

# One alternation, longest phrase first, so that "Stainless Steel" wins over "Steel".
_ABBREVIATIONS: dict[str, str] = {
    "stainless steel": "SS", "cordless": "Cdls", "package": "Pkg", "pack": "Pk", "lithium-ion": "Li-Ion",
    "batteries": "Batts", "battery": "Batt", "wireless": "Wrls", "ethernet": "Enet", "gigabit": "Gbit",
    "adapter": "Adptr", "internal": "Int", "monitor": "Mntr", "zinc plated": "ZP", "galvanized": "Galv",
    "hex head": "HH", "socket head": "SH", "screw": "Scr", "drill driver": "Drill/Drvr", "driver": "Drvr",
    "hammer": "Hmr", "brushless": "BL", "large": "Lg", "medium": "Med", "small": "Sm", "black": "Blk",
    "white": "Wht", "blue": "Blu", "clear": "Clr", "gray": "Gry", "natural": "Nat", "safety": "Sfty",
    "glasses": "Glss", "gloves": "Glvs", "nitrile": "Ntrl", "disposable": "Disp", "bearing": "Brg",
    "coupling": "Cplg", "elbow": "Elb", "degree": "Deg", "copper": "Cu", "stranded": "Strd",
    "building": "Bldg", "heavy duty": "HD", "equivalent": "Eq", "dimmable": "Dim", "resistor": "Res",
    "capacitor": "Cap", "ceramic": "Cer", "respirator": "Resp", "particulate": "Part", "measure": "Meas",
    "magnetic": "Mag", "cable": "Cbl", "switch": "Sw", "keyboard": "Kybd", "performance": "Perf",
    "charger": "Chgr", "circular saw blade": "Circ Saw Bld", "finish": "Fin", "framing": "Frmg",
    "box of": "Bx/", "case of": "Cs/", "pack of": "Pk/", "aerosol": "Aero", "clearance": "Clr",
    "electrical": "Elec", "connect": "Conn", "memory card": "Mem Card", "flash drive": "Flsh Drv",
}
_ABBREVIATION_RE = re.compile(
    r"\b(" + "|".join(re.escape(p) for p in sorted(_ABBREVIATIONS, key=len, reverse=True)) + r")\b",
    re.IGNORECASE,
)
_UNIT_SYMBOL_RE = re.compile(r"(?<=\d) (in|ft)\b")
_UNIT_SYMBOLS = {"in": '"', "ft": "'"}

_LOOKALIKE = {"0": "O", "O": "0", "1": "I", "I": "1", "5": "S", "S": "5", "8": "B", "B": "8", "2": "Z", "Z": "2"}
_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"
_DIGITS = "0123456789"
_FAMILY_SIZES = np.array([1, 2, 3, 4, 5, 6])
_FAMILY_SIZE_P = np.array([0.12, 0.28, 0.25, 0.17, 0.10, 0.08])
_VARIANT_DRAWS = 64
# Sub-series that multiply a maker's product lines; blank most often, as most lines have none.
_SERIES = ("", "", "", "", "", "", "Pro", "Plus", "Max", "Elite", "Select", "Premium", "Advanced", "Industrial",
           "HD", "XR", "II", "III", "SE", "LX", "GX", "Prime", "Core", "Edge", "Flex", "Compact", "Essential",
           "Signature", "Contractor Grade", "Pro Series", "Eco", "2.0")
_SPACES_RE = re.compile(r"\s+")
_EMPTY_SEGMENT_RE = re.compile(r"\s*,(\s*,)+|\s+,")


def _clean_title(title: str) -> str:
    """Collapse the gaps that empty variant labels (the plain edition, the single pack) leave."""
    if "  " not in title and " ," not in title and not title.endswith(" "):
        return title
    title = _SPACES_RE.sub(" ", title)
    return _EMPTY_SEGMENT_RE.sub(",", title).strip(" ,")


def _random_code(pattern: str, u: np.ndarray) -> str:
    out = []
    for ch, x in zip(pattern, u, strict=False):
        if ch == "A":
            out.append(_LETTERS[int(x * len(_LETTERS))])
        elif ch == "9":
            out.append(_DIGITS[int(x * 10)])
        elif ch == "X":
            pool = _LETTERS + _DIGITS
            out.append(pool[int(x * len(pool))])
        else:
            out.append(ch)
    return "".join(out)


def _pick_variants(kind: _Kind, size: int, u: np.ndarray) -> list[tuple[int, ...]]:
    """Choose which siblings of a family exist: one or two axes vary, the others stay fixed.

    ``u`` holds uniform draws, enough for every axis and every combination of two axes.
    """
    varying = [i for i, axis in enumerate(kind.axes) if len(axis.options) > 1]
    n_vary = 1 if u[0] < 0.7 or len(varying) == 1 else 2
    vary = {varying[j] for j in np.argsort(u[1 : 1 + len(varying)])[:n_vary].tolist()}
    fixed = u[1 + len(varying) : 1 + len(varying) + len(kind.axes)]
    choices = [
        range(len(axis.options)) if i in vary else (int(fixed[i] * len(axis.options)),)
        for i, axis in enumerate(kind.axes)
    ]
    combos = list(product(*choices))
    offset = 1 + len(varying) + len(kind.axes)
    picked = np.sort(np.argsort(u[offset : offset + len(combos)])[:size])
    return [combos[j] for j in picked.tolist()]


def _check_digits(payload12: np.ndarray) -> np.ndarray:
    """GS1 mod-10 check digit of 12-digit payloads (a UPC-A payload is the same with a leading 0)."""
    digits = (payload12[:, None] // 10 ** np.arange(11, -1, -1, dtype=np.int64)) % 10
    weights = np.where(np.arange(12) % 2 == 1, 3, 1)
    return (10 - (digits * weights).sum(axis=1) % 10) % 10


def _gtin_strings(payload12: np.ndarray, thirteen: np.ndarray) -> list[str]:
    """UPC-A makers' codes come out as 12 digits, or as 13 with a leading zero where ``thirteen``."""
    full = payload12 * 10 + _check_digits(payload12)
    return [f"{v:013d}" if t or v >= 10**12 else f"{v:012d}" for v, t in zip(full.tolist(), thirteen.tolist(), strict=True)]


def _assign_gtins(manufacturers: np.ndarray, rng: np.random.Generator, share: float) -> list[str | None]:
    n = len(manufacturers)
    has = rng.random(n) < share
    thirteen = rng.random(n) < 0.45
    payload = np.zeros(n, dtype=np.int64)
    for name in np.unique(manufacturers[has]).tolist():
        idx = np.flatnonzero(has & (manufacturers == name))
        refs = rng.choice(100_000, size=len(idx), replace=False)
        payload[idx] = _GS1_PREFIX[name] * 100_000 + refs
    codes = _gtin_strings(payload[has], thirteen[has])
    out: list[str | None] = [None] * n
    for i, code in zip(np.flatnonzero(has).tolist(), codes, strict=True):
        out[i] = code
    return out


_SOURCE_COLUMNS = ("title", "part_number", "manufacturer", "gtin", "category", "list_price")


@dataclass
class _Known:
    """What already exists, so that an invented product can never coincide with a listed one."""

    titles: set[str]
    part_numbers: set[str]
    gtins: set[str]

    def add(self, title: str, part_number: str, gtin: str | None) -> None:
        self.titles.add(title)
        self.part_numbers.add(part_number)
        if isinstance(gtin, str):
            self.gtins.add(gtin.lstrip("0"))


def _build_products(n: int, rng: np.random.Generator, known: _Known) -> pd.DataFrame:
    """Families of siblings, ``n`` rows in all, whose titles and part numbers are not yet in ``known``.

    Titles are kept unique so that the truth is decidable from the text alone; when a product
    type's plain names run out (large catalogs), the family's model code joins its title, as
    real catalogs do.
    """
    weights = np.array([kind.weight for kind in _KINDS])
    kind_idx = rng.choice(len(_KINDS), size=n, p=weights / weights.sum())
    sizes = rng.choice(_FAMILY_SIZES, size=n, p=_FAMILY_SIZE_P)
    brand_draw = rng.random(n)
    family_price = rng.lognormal(0.0, 0.3, size=n)
    variant_draws = rng.random((n, _VARIANT_DRAWS))
    rows: list[tuple[str, str, str, str, float]] = []
    family = 0
    while len(rows) < n:
        kind = _KINDS[kind_idx[family]]
        brand = kind.brands[int(brand_draw[family] * len(kind.brands))]
        variants = _pick_variants(kind, int(sizes[family]), variant_draws[family])[: n - len(rows)]
        codes = [{a.name: a.options[o].code for a, o in zip(kind.axes, v, strict=True)} for v in variants]
        labels = [{a.name: a.options[o].label for a, o in zip(kind.axes, v, strict=True)} for v in variants]
        pattern = kind.base
        attempt = 0
        while True:
            u = rng.random(len(pattern) + 2)
            base = _random_code(pattern, u[2:])
            line = f"{brand.lines[int(u[0] * len(brand.lines))]} {_SERIES[int(u[1] * len(_SERIES))]}"
            if attempt >= 4:
                line = f"{line} {base.strip('/-')}"
            part_numbers = [kind.part_number.format(prefix=brand.prefix, base=base, **c) for c in codes]
            titles = [_clean_title(kind.title.format(brand=brand.name, line=line, **lab)) for lab in labels]
            pn_free = len(set(part_numbers)) == len(part_numbers) and known.part_numbers.isdisjoint(part_numbers)
            if pn_free and known.titles.isdisjoint(titles):
                break
            if not pn_free:
                # A crowded code space gets one more digit rather than retrying forever.
                pattern += "9"
            attempt += 1
        for variant, title, part_number in zip(variants, titles, part_numbers, strict=True):
            known.add(title, part_number, None)
            factor = math.prod(a.options[o].factor for a, o in zip(kind.axes, variant, strict=True))
            rows.append((title, part_number, brand.name, kind.category, kind.price * family_price[family] * factor))
        family += 1
    frame = pd.DataFrame(rows, columns=["title", "part_number", "manufacturer", "category", "list_price"])
    price = frame["list_price"].to_numpy()
    frame["list_price"] = np.where(price >= 10, np.floor(price) + 0.99, np.round(price, 2))
    frame["gtin"] = _assign_gtins(frame["manufacturer"].to_numpy(), rng, 0.7)
    with_pn = rng.random(n) < 0.55
    frame["description"] = np.where(with_pn, frame["title"] + " - " + frame["part_number"], frame["title"])
    return frame


def generate_catalog(n: int, seed: int = 0) -> pd.DataFrame:
    """A reference catalog in which most products have siblings a careless matcher would pick instead.

    Rows are shuffled so that siblings are not adjacent: a matcher must not lean on row order.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    rng = np.random.default_rng(seed)
    frame = _build_products(n, rng, _Known(set(), set(), set())).iloc[rng.permutation(n)].reset_index(drop=True)
    frame.insert(0, "catalog_id", [f"CAT-{i:06d}" for i in range(1, n + 1)])
    return frame[["catalog_id", "description", "part_number", "manufacturer", "gtin", "category", "list_price"]]


def _titles(catalog: pd.DataFrame) -> pd.Series:
    """Catalog descriptions without the trailing part number, i.e. the product name proper."""
    pairs = zip(catalog["description"].tolist(), catalog["part_number"].tolist(), strict=True)
    return pd.Series([d.removesuffix(f" - {pn}") for d, pn in pairs], index=catalog.index, dtype="str")


def _with_new_reference(gtin: str, rng: np.random.Generator) -> str:
    """Same maker's prefix, different item reference: a GTIN that looks right but is someone else's."""
    payload = int(gtin[:-1]) // 100_000 * 100_000 + int(rng.integers(100_000))
    return _gtin_strings(np.array([payload], dtype=np.int64), np.array([len(gtin) == 13]))[0]


def _label_re(label: str) -> re.Pattern[str]:
    """A variant label as a whole token, so that "4-Pack" is not found inside "24-Pack"."""
    return re.compile(rf"(?<![\w./-]){re.escape(label)}(?![\w/])")


def _near_misses(
    catalog: pd.DataFrame, titles: pd.Series, k: int, rng: np.random.Generator, known: _Known
) -> pd.DataFrame:
    """Siblings the catalog lacks: a listed product with one variant swapped (the 256GB of a 64GB/128GB family).

    These are the unmatched items that hurt, because the right answer "no match" sits next to a
    catalog row differing by one token.
    """
    columns = {c: catalog[c].tolist() for c in ("part_number", "manufacturer", "gtin", "category", "list_price")}
    title_list = titles.tolist()
    rows: list[tuple[str, str, str, str | None, str, float]] = []
    for i in rng.permutation(len(catalog)).tolist():
        if len(rows) == k:
            break
        kind = _KIND_BY_CATEGORY.get(columns["category"][i])
        if kind is None:
            continue
        title, pn = title_list[i], columns["part_number"][i]
        for axis_i in rng.permutation(len(kind.axes)).tolist():
            axis = kind.axes[axis_i]
            present = [o for o in axis.options if o.label and _label_re(o.label).search(title)]
            others = [o for o in axis.options if o.label and o not in present]
            if len(present) != 1 or not others or present[0].code not in pn:
                continue
            old, new = present[0], others[int(rng.integers(len(others)))]
            new_title = _label_re(old.label).sub(new.label, title, count=1)
            cut = pn.rfind(old.code)
            new_pn = pn[:cut] + new.code + pn[cut + len(old.code):]
            if new_title in known.titles or new_pn in known.part_numbers:
                continue
            gtin = columns["gtin"][i]
            if isinstance(gtin, str):
                gtin = _with_new_reference(gtin, rng)
                gtin = None if gtin.lstrip("0") in known.gtins else gtin
            known.add(new_title, new_pn, gtin)
            price = round(float(columns["list_price"][i]) * new.factor / old.factor, 2)
            rows.append((new_title, new_pn, columns["manufacturer"][i], gtin, kind.category, price))
            break
    return pd.DataFrame(rows, columns=list(_SOURCE_COLUMNS))


def _absent_products(k: int, rng: np.random.Generator, known: _Known) -> pd.DataFrame:
    """Whole products the catalog never carried, drawn from the same makers and product types.

    Drawn from a pool three times larger so that they do not all come from one or two families.
    """
    gtins_in_use = set(known.gtins)
    pool = _build_products(3 * k, rng, known)
    fresh = pool.iloc[np.sort(rng.choice(len(pool), size=k, replace=False))].reset_index(drop=True)
    fresh["gtin"] = [None if isinstance(g, str) and g.lstrip("0") in gtins_in_use else g for g in fresh["gtin"].tolist()]
    return fresh[list(_SOURCE_COLUMNS)]


def _abbreviate(text: str) -> str:
    text = _ABBREVIATION_RE.sub(lambda m: _ABBREVIATIONS[m.group(0).lower()], text)
    return _UNIT_SYMBOL_RE.sub(lambda m: _UNIT_SYMBOLS[m.group(1)], text)


def _reorder(text: str, u: float, v: float) -> str:
    """ERP exports often lead with the noun or a later clause; otherwise two neighbours trade places."""
    parts = text.split(", ")
    if len(parts) > 1 and u < 0.5:
        k = 1 + int(v * (len(parts) - 1))
        return ", ".join(parts[k:] + parts[:k])
    words = text.split(" ")
    if len(words) < 3:
        return text
    j = int(v * (len(words) - 1))
    words[j], words[j + 1] = words[j + 1], words[j]
    return " ".join(words)


def _typo(text: str, u: float, v: float) -> str:
    letters = [i for i, c in enumerate(text) if c.isalpha()]
    if len(letters) < 4:
        return text
    j = letters[int(u * len(letters))]
    if v < 1 / 3 and j + 1 < len(text):
        return text[:j] + text[j + 1] + text[j] + text[j + 2:]
    if v < 2 / 3:
        return text[:j] + text[j + 1:]
    return text[:j] + text[j] + text[j:]


def _garble_part_number(pn: str, u: float, v: float, w: float) -> str:
    """The ways a part number gets mangled on its way through purchasing systems."""
    if u < 0.3 and re.search(r"[-/.]", pn):
        return re.sub(r"[-/.]", "", pn)
    if u < 0.5 and "-" in pn:
        return pn.replace("-", " ")
    if u < 0.6 and len(pn) > 4:
        cut = 2 + int(v * (len(pn) - 3))
        return pn[:cut] + " " + pn[cut:]
    j = int(v * len(pn))
    ch = pn[j]
    if ch in _LOOKALIKE:
        new = _LOOKALIKE[ch]
    elif ch.isdigit():
        new = str((int(ch) + 1 + int(w * 8)) % 10)
    elif ch.isalpha():
        new = _LETTERS[(_LETTERS.find(ch.upper()) + 1 + int(w * 20)) % len(_LETTERS)]
    else:
        new = ""
    return pn[:j] + new + pn[j + 1:]


def _messy_manufacturer(name: str, u: float, v: float) -> str | None:
    aliases = _MANUFACTURER_ALIASES.get(name, (name.upper(),))
    if u < 0.10:
        return None
    if u < 0.30:
        return aliases[int(v * len(aliases))]
    if u < 0.38:
        return name.upper()
    return name


def _messy_description(title: str, pn: str, manufacturer: str, u: np.ndarray) -> str:
    """Apply the defects of hand-keyed and system-truncated item text, each at its own rate."""
    if u[0] < 0.07:
        return pn if u[1] < 0.6 else f"{_MANUFACTURER_ALIASES.get(manufacturer, (manufacturer,))[0]} {pn}"
    text = title
    if u[1] < 0.30:
        text = text.removeprefix(manufacturer + " ")
    if u[2] < 0.20:
        text = f"{text} {pn}"
    if u[3] < 0.35:
        text = _abbreviate(text)
    if u[4] < 0.20:
        text = _reorder(text, u[5], u[6])
    if u[7] < 0.15:
        text = _typo(text, u[8], u[9])
        if u[10] < 0.3:
            text = _typo(text, u[9], u[8])
    if u[11] < 0.12:
        text = _SPACES_RE.sub(" ", text.replace(",", " ").replace(" - ", " "))
    if u[12] < 0.30:
        text = text.upper()
    elif u[12] < 0.40:
        text = text.lower()
    if u[13] < 0.15:
        limit = 30 if u[14] < 0.5 else 40
        text = text[:limit].rstrip(" ,-/")
    return text


def _messy_gtin(gtin: str | None, u: float, v: float, keep: float) -> str | None:
    """Keep ``keep`` of known GTINs; half of the 13-digit UPCs lose their leading zero and vice versa."""
    if not isinstance(gtin, str) or u >= keep:
        return None
    if len(gtin) == 13 and gtin.startswith("0") and v < 0.5:
        return gtin[1:]
    if len(gtin) == 12 and v < 0.2:
        return "0" + gtin
    return gtin


_UNIT_ALTERNATIVES = ("EA", "EA", "CS", "PK")


def generate_items(
    catalog: pd.DataFrame, n: int, seed: int = 0, unmatched_share: float = 0.1
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A customer's item list against ``catalog``, and the answer key.

    ``unmatched_share`` of the items are products the catalog lacks (half of them a missing sibling
    of a listed family, half unrelated products); the truth has no catalog_id for them.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    if not 0.0 <= unmatched_share <= 1.0:
        raise ValueError(f"unmatched_share must lie in [0, 1], got {unmatched_share}")
    n_unmatched = round(n * unmatched_share)
    n_matched = n - n_unmatched
    if n_matched and catalog.empty:
        raise ValueError("cannot draw matched items from an empty catalog")
    rng = np.random.default_rng(seed)
    catalog = catalog.reset_index(drop=True)
    titles = _titles(catalog)
    known = _Known(
        set(titles.tolist()),
        set(catalog["part_number"].tolist()),
        set(catalog["gtin"].dropna().str.lstrip("0").tolist()),
    )

    picked = rng.choice(len(catalog), size=n_matched, replace=n_matched > len(catalog))
    matched = catalog.iloc[picked][["part_number", "manufacturer", "gtin", "category", "list_price", "catalog_id"]]
    matched.insert(0, "title", titles.iloc[picked].to_numpy())
    near = _near_misses(catalog, titles, n_unmatched // 2, rng, known)
    absent = _absent_products(n_unmatched - len(near), rng, known)
    parts = [frame for frame in (matched, near, absent) if not frame.empty]
    source = pd.concat(parts, ignore_index=True) if parts else matched.reset_index(drop=True)
    source = source.reindex(columns=[*_SOURCE_COLUMNS, "catalog_id"]).iloc[rng.permutation(len(source))]

    draws = rng.random((n, 24))
    # 25% of items carry a GTIN: scale by how many of their source rows have one.
    gtin_share = source["gtin"].notna().mean() if n else 1.0
    keep_gtin = min(1.0, 0.25 / gtin_share) if gtin_share else 0.0
    descriptions: list[str] = []
    part_numbers: list[str | None] = []
    manufacturers: list[str | None] = []
    gtins: list[str | None] = []
    units: list[str] = []
    rows = zip(*(source[c].tolist() for c in ("title", "part_number", "manufacturer", "gtin", "category")), strict=True)
    for u, (title, part_number, manufacturer, gtin, category) in zip(draws, rows, strict=False):
        descriptions.append(_messy_description(title, part_number, manufacturer, u))
        if u[15] < 0.40:
            part_numbers.append(None)
        elif u[15] < 0.50:
            part_numbers.append(_garble_part_number(part_number, u[16], u[17], u[18]))
        else:
            part_numbers.append(part_number)
        manufacturers.append(_messy_manufacturer(manufacturer, u[19], u[20]))
        gtins.append(_messy_gtin(gtin, u[21], u[22], keep_gtin))
        default_unit = _KIND_BY_CATEGORY[category].unit if category in _KIND_BY_CATEGORY else "EA"
        units.append(default_unit if u[23] < 0.8 else _UNIT_ALTERNATIVES[int((u[23] - 0.8) * 20)])
    quantity = np.maximum(1, np.round(rng.lognormal(1.6, 1.1, size=n))).astype(np.int64)
    item_ids = [f"ITM-{i:06d}" for i in range(1, n + 1)]
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "description": descriptions,
            "part_number": part_numbers,
            "manufacturer": manufacturers,
            "gtin": gtins,
            "quantity": quantity,
            "unit": units,
        }
    )
    catalog_ids = [c if isinstance(c, str) else None for c in source["catalog_id"]]
    truth = pd.DataFrame({"item_id": item_ids, "catalog_id": pd.Series(catalog_ids, dtype="str")})
    return items, truth


def write_sample(directory: Path, n_catalog: int, n_items: int, seed: int = 0) -> dict[str, Path]:
    """Write the three CSVs a demo or benchmark run starts from; GTINs keep their leading zeros on disk."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    catalog = generate_catalog(n_catalog, seed)
    items, truth = generate_items(catalog, n_items, seed)
    paths = {name: directory / f"{name}.csv" for name in ("catalog", "items", "truth")}
    for name, frame in (("catalog", catalog), ("items", items), ("truth", truth)):
        frame.to_csv(paths[name], index=False, encoding="utf-8", lineterminator="\n")
    return paths
