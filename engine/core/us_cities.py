"""A fixed table of real US cities: where example cards live and merchants trade.

Hard-coded (no network, no extra package) so the example data and the offline fraud map
share the same names and coordinates. Coordinates are city centres; populations are rough
city-proper figures (around the 2020 census), used only as sampling weights.
"""

from __future__ import annotations

from typing import NamedTuple


class City(NamedTuple):
    """One city: unique name, two-letter state, centre coordinates, rough population."""

    name: str
    state: str
    latitude: float
    longitude: float
    population: int


US_CITIES: tuple[City, ...] = (
    City("New York", "NY", 40.7128, -74.0060, 8_336_817),
    City("Los Angeles", "CA", 34.0522, -118.2437, 3_898_747),
    City("Chicago", "IL", 41.8781, -87.6298, 2_746_388),
    City("Houston", "TX", 29.7604, -95.3698, 2_304_580),
    City("Phoenix", "AZ", 33.4484, -112.0740, 1_608_139),
    City("Philadelphia", "PA", 39.9526, -75.1652, 1_603_797),
    City("San Antonio", "TX", 29.4241, -98.4936, 1_434_625),
    City("San Diego", "CA", 32.7157, -117.1611, 1_386_932),
    City("Dallas", "TX", 32.7767, -96.7970, 1_304_379),
    City("San Jose", "CA", 37.3382, -121.8863, 1_013_240),
    City("Austin", "TX", 30.2672, -97.7431, 961_855),
    City("Jacksonville", "FL", 30.3322, -81.6557, 949_611),
    City("Fort Worth", "TX", 32.7555, -97.3308, 918_915),
    City("Columbus", "OH", 39.9612, -82.9988, 905_748),
    City("Indianapolis", "IN", 39.7684, -86.1581, 887_642),
    City("Charlotte", "NC", 35.2271, -80.8431, 874_579),
    City("San Francisco", "CA", 37.7749, -122.4194, 873_965),
    City("Seattle", "WA", 47.6062, -122.3321, 737_015),
    City("Denver", "CO", 39.7392, -104.9903, 715_522),
    City("Washington", "DC", 38.9072, -77.0369, 689_545),
    City("Nashville", "TN", 36.1627, -86.7816, 689_447),
    City("Oklahoma City", "OK", 35.4676, -97.5164, 681_054),
    City("El Paso", "TX", 31.7619, -106.4850, 678_815),
    City("Boston", "MA", 42.3601, -71.0589, 675_647),
    City("Portland", "OR", 45.5152, -122.6784, 652_503),
    City("Las Vegas", "NV", 36.1699, -115.1398, 641_903),
    City("Detroit", "MI", 42.3314, -83.0458, 639_111),
    City("Memphis", "TN", 35.1495, -90.0490, 633_104),
    City("Louisville", "KY", 38.2527, -85.7585, 617_638),
    City("Baltimore", "MD", 39.2904, -76.6122, 585_708),
    City("Milwaukee", "WI", 43.0389, -87.9065, 577_222),
    City("Albuquerque", "NM", 35.0844, -106.6504, 564_559),
    City("Tucson", "AZ", 32.2226, -110.9747, 542_629),
    City("Fresno", "CA", 36.7378, -119.7871, 542_107),
    City("Sacramento", "CA", 38.5816, -121.4944, 524_943),
    City("Kansas City", "MO", 39.0997, -94.5786, 508_090),
    City("Mesa", "AZ", 33.4152, -111.8315, 504_258),
    City("Atlanta", "GA", 33.7490, -84.3880, 498_715),
    City("Omaha", "NE", 41.2565, -95.9345, 486_051),
    City("Colorado Springs", "CO", 38.8339, -104.8214, 478_961),
    City("Raleigh", "NC", 35.7796, -78.6382, 467_665),
    City("Miami", "FL", 25.7617, -80.1918, 442_241),
    City("Minneapolis", "MN", 44.9778, -93.2650, 429_954),
    City("Tulsa", "OK", 36.1540, -95.9928, 413_066),
    City("Wichita", "KS", 37.6872, -97.3301, 397_532),
    City("Arlington", "TX", 32.7357, -97.1081, 394_266),
    City("Tampa", "FL", 27.9506, -82.4572, 384_959),
    City("New Orleans", "LA", 29.9511, -90.0715, 383_997),
    City("Cleveland", "OH", 41.4993, -81.6944, 372_624),
    City("Honolulu", "HI", 21.3069, -157.8583, 350_964),
    City("Newark", "NJ", 40.7357, -74.1724, 311_549),
    City("Cincinnati", "OH", 39.1031, -84.5120, 309_317),
    City("Orlando", "FL", 28.5383, -81.3792, 307_573),
    City("Pittsburgh", "PA", 40.4406, -79.9959, 302_971),
    City("St. Louis", "MO", 38.6270, -90.1994, 301_578),
    City("Anchorage", "AK", 61.2181, -149.9003, 291_247),
    City("Buffalo", "NY", 42.8864, -78.8784, 278_349),
    City("Boise", "ID", 43.6150, -116.2023, 235_684),
    City("Richmond", "VA", 37.5407, -77.4360, 226_610),
    City("Des Moines", "IA", 41.5868, -93.6250, 214_133),
    City("Little Rock", "AR", 34.7465, -92.2896, 202_591),
    City("Birmingham", "AL", 33.5186, -86.8104, 200_733),
    City("Salt Lake City", "UT", 40.7608, -111.8910, 199_723),
    City("Sioux Falls", "SD", 43.5446, -96.7311, 192_517),
    City("Providence", "RI", 41.8240, -71.4128, 190_934),
    City("Jackson", "MS", 32.2988, -90.1848, 153_701),
    City("Charleston", "SC", 32.7765, -79.9311, 150_227),
    City("Fargo", "ND", 46.8772, -96.7898, 125_990),
    City("Hartford", "CT", 41.7658, -72.6734, 121_054),
    City("Billings", "MT", 45.7833, -108.5007, 117_116),
    City("Manchester", "NH", 42.9956, -71.4548, 115_644),
)

CITY_BY_NAME: dict[str, City] = {c.name: c for c in US_CITIES}
