"""The London Underground network (c. 2005) as test graphs for the graph tasks.

The data are the ``london.stations.csv`` / ``london.lines.csv`` /
``london.connections.csv`` tables of ``nicola/tubemaps`` (see the folder's
README): 302 stations, 13 lines (Underground, DLR, East London line) and 406
connections, one per (adjacent station pair, line), each usable both ways: 812
directed triples.

The paper tested on "Zone 1 interchange stations of the London Underground
map" (Fig. 2b), released only as a figure. `zone1_interchange_map` builds a
map of that kind from this data:

1. stations: those in fare zone 1 exactly (60; the four zone-1.5 stations are
   left out) that are served by at least two lines (40). Lines are counted from
   the connections, not from the ``total_lines`` column, which disagrees with
   them for three stations (all outside zone 1);
2. edges: for each line L and each such interchange I on L, walk along L's
   track from I in every direction, passing through zone-1 stations that are
   not interchanges, and stop at the first interchange J (edge I -> J on L) or
   at the first station outside zone 1 (no edge). The non-interchange stations
   passed over are thus collapsed into the edge. A non-interchange station
   with more than two neighbours on L would fork the walk; none occurs.
3. result: 40 stations, 96 (station pair, line) connections, 192 directed
   triples; one connected component.

Labels: a station's node label is its id in the data (1-303, < 1000). An edge
label is ``10 * line id + heading``, heading 0-3 for N, E, S, W: the compass
sector (90 degrees wide, centred on the direction) of the straight line from
the source to the destination station. A line name alone would not say which
way to go (almost every station has two neighbours on a line); with the
heading, "station + line + heading" fixes the next station at every station of
the zone-1 interchange map. On the full map it does not at 14 (station,
label) pairs (28 directed triples), mostly the branch points listed in the
data README; `LabelledGraph.ambiguous_moves` lists them, and traversal queries
never use them (they stay in the graph description).
"""

from __future__ import annotations

import csv
import difflib
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from torchdnc.data.graph import LabelledGraph, QueryError

ENV_VAR = "TORCHDNC_LONDON_DIR"
RELATIVE_DIR = Path("shared") / "data" / "london_underground"
STATIONS_FILE = "london.stations.csv"
LINES_FILE = "london.lines.csv"
CONNECTIONS_FILE = "london.connections.csv"
HEADINGS = ("N", "E", "S", "W")
MAPS = ("zone1", "full")


# The data do not come with torchdnc (no clear licence for redistribution).
HOW_TO_GET = ("torchdnc does not ship them: get london.stations.csv, london.lines.csv and "
              "london.connections.csv from https://github.com/nicola/tubemaps (folder datasets/), "
              "put them in a folder and pass --task.london_dir=FOLDER or set TORCHDNC_LONDON_DIR")


class LondonDataError(ValueError):
    """A data file is malformed; the message names the file and the row."""


@dataclass(frozen=True)
class Station:
    id: int
    name: str
    latitude: float
    longitude: float
    zone: float
    total_lines: int  # as given in the file (see the module docstring)
    rail: int


@dataclass(frozen=True)
class Line:
    id: int
    name: str
    colour: str  # hex RGB without '#'


@dataclass(frozen=True)
class Connection:
    station1: int
    station2: int
    line: int
    time: int


# -- finding and reading the files -------------------------------------------------


def candidate_dirs() -> list[Path]:
    """Where the data folder is looked for when no folder is given, in order:
    ``$TORCHDNC_LONDON_DIR``, ``../shared/data/london_underground`` from the
    working directory, then from the repository root (the parents of the
    package), then ``shared/data/london_underground`` inside the repository root.
    """
    if os.environ.get(ENV_VAR):  # set: that folder and no other
        return [Path(os.environ[ENV_VAR])]
    found = []
    repo_root = Path(__file__).resolve().parents[3]
    found += [Path.cwd().parent / RELATIVE_DIR, repo_root.parent / RELATIVE_DIR,
              repo_root / RELATIVE_DIR]
    return found


def find_london_dir(data_dir: str | Path | None = None) -> Path | None:
    """The data folder to use, or None when none of the candidates exists."""
    if data_dir:
        return Path(data_dir) if Path(data_dir).is_dir() else None
    if os.environ.get(ENV_VAR) and not Path(os.environ[ENV_VAR]).is_dir():
        raise FileNotFoundError(f"London Underground data folder {os.environ[ENV_VAR]} "
                                f"(${ENV_VAR}) does not exist")
    return next((path for path in candidate_dirs() if path.is_dir()), None)


def resolve_london_dir(data_dir: str | Path | None = None) -> Path:
    """The data folder: ``data_dir`` if given, else the first `candidate_dirs` that exists."""
    if data_dir:
        if not Path(data_dir).is_dir():
            raise FileNotFoundError(f"London Underground data folder {data_dir} does not exist")
        return Path(data_dir)
    found = find_london_dir()
    if found is None:
        tried = ", ".join(str(p) for p in candidate_dirs())
        raise FileNotFoundError(f"London Underground data folder not found (tried {tried}). "
                                f"{HOW_TO_GET}")
    return found


def _read_table(path: Path, columns: tuple[str, ...]) -> list[tuple[int, int, dict[str, str]]]:
    """(row number, line number, row) for each data row; the header must match."""
    if not path.is_file():
        raise FileNotFoundError(f"London Underground data file {path} does not exist")
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None or tuple(header[: len(columns)]) != columns:
                raise LondonDataError(f"{path}: header {header} does not start with the columns "
                                      f"{list(columns)}")
            rows = []
            for number, values in enumerate(reader, start=1):
                if not values:
                    continue
                if len(values) != len(header):
                    raise LondonDataError(f"{path}: row {number} (line {reader.line_num}) has "
                                          f"{len(values)} fields, expected {len(header)}: {values}")
                rows.append((number, reader.line_num, dict(zip(header, values))))
    except UnicodeDecodeError as error:
        raise LondonDataError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    if not rows:
        raise LondonDataError(f"{path}: no data rows after the header")
    return rows


def _field(path: Path, number: int, line: int, row: dict[str, str], column: str, kind: type):
    text = row[column]
    try:
        return kind(text)
    except ValueError:
        raise LondonDataError(f"{path}: row {number} (line {line}), column {column!r}: expected "
                              f"{'an integer' if kind is int else 'a number'}, got {text!r}") from None


@dataclass(frozen=True)
class UndergroundNetwork:
    """The three tables, checked: stations and lines by id, connections in file order."""

    stations: dict[int, Station]
    lines: dict[int, Line]
    connections: tuple[Connection, ...]
    source: Path

    def lines_at(self, station: int) -> set[int]:
        """Lines serving a station, according to the connections."""
        return {c.line for c in self.connections if station in (c.station1, c.station2)}

    def neighbours(self, station: int, line: int) -> set[int]:
        return {c.station2 if c.station1 == station else c.station1 for c in self.connections
                if c.line == line and station in (c.station1, c.station2)}

    def station(self, name_or_id: str | int) -> Station:
        """A station by id or by name (case-insensitive, spelled as in the data)."""
        if isinstance(name_or_id, int):
            if name_or_id not in self.stations:
                raise QueryError(f"unknown station id {name_or_id}")
            return self.stations[name_or_id]
        by_name = {s.name.lower(): s for s in self.stations.values()}
        found = by_name.get(name_or_id.strip().lower())
        if found is None:
            close = difflib.get_close_matches(name_or_id, [s.name for s in self.stations.values()])
            hint = f"; did you mean {close}?" if close else ""
            raise QueryError(f"unknown station {name_or_id!r}{hint}")
        return found


def load_london(data_dir: str | Path | None = None) -> UndergroundNetwork:
    """Read and check the three CSV files (see `resolve_london_dir` for the folder)."""
    folder = resolve_london_dir(data_dir)
    return _load(folder.resolve())


@lru_cache(maxsize=4)
def _load(folder: Path) -> UndergroundNetwork:
    path = folder / STATIONS_FILE
    stations: dict[int, Station] = {}
    for number, line, row in _read_table(path, ("id", "latitude", "longitude", "name",
                                                "display_name", "zone", "total_lines", "rail")):
        get = lambda column, kind: _field(path, number, line, row, column, kind)  # noqa: E731
        station = Station(get("id", int), row["name"], get("latitude", float),
                          get("longitude", float), get("zone", float), get("total_lines", int),
                          get("rail", int))
        if station.id in stations:
            raise LondonDataError(f"{path}: row {number} (line {line}): duplicate station id {station.id}")
        stations[station.id] = station

    path = folder / LINES_FILE
    lines: dict[int, Line] = {}
    for number, line, row in _read_table(path, ("line", "name", "colour")):
        entry = Line(_field(path, number, line, row, "line", int), row["name"], row["colour"])
        if entry.id in lines:
            raise LondonDataError(f"{path}: row {number} (line {line}): duplicate line id {entry.id}")
        lines[entry.id] = entry

    path = folder / CONNECTIONS_FILE
    connections, seen = [], set()
    for number, line, row in _read_table(path, ("station1", "station2", "line", "time")):
        get = lambda column: _field(path, number, line, row, column, int)  # noqa: E731
        entry = Connection(get("station1"), get("station2"), get("line"), get("time"))
        where = f"{path}: row {number} (line {line})"
        for station in (entry.station1, entry.station2):
            if station not in stations:
                raise LondonDataError(f"{where}: unknown station id {station}")
        if entry.line not in lines:
            raise LondonDataError(f"{where}: unknown line id {entry.line}")
        if entry.station1 == entry.station2:
            raise LondonDataError(f"{where}: station {entry.station1} is connected to itself")
        key = (min(entry.station1, entry.station2), max(entry.station1, entry.station2), entry.line)
        if key in seen:
            raise LondonDataError(f"{where}: duplicate connection {key}")
        seen.add(key)
        connections.append(entry)
    return UndergroundNetwork(stations, lines, tuple(connections), folder)


# -- maps ------------------------------------------------------------------------------


def heading(network: UndergroundNetwork, source: int, destination: int) -> int:
    """Compass sector 0-3 (N, E, S, W) of the straight line source -> destination."""
    a, b = network.stations[source], network.stations[destination]
    east = (b.longitude - a.longitude) * math.cos(math.radians((a.latitude + b.latitude) / 2))
    north = b.latitude - a.latitude
    degrees = math.degrees(math.atan2(east, north)) % 360  # 0 = north, 90 = east
    return int(((degrees + 45) % 360) // 90)


def edge_label(line: int, direction: int) -> int:
    return 10 * line + direction


def line_short_name(line: Line) -> str:
    if line.name == "Docklands Light Railway":
        return "DLR"
    return line.name.removesuffix(" Line")


def _graph(network: UndergroundNetwork, links: set[tuple[int, int, int]], description: str) -> LabelledGraph:
    """A `LabelledGraph` from directed (source, destination, line) links."""
    triples = sorted((s, edge_label(line, heading(network, s, d)), d) for s, d, line in links)
    used = {s for s, _, _ in triples} | {d for _, _, d in triples}
    edge_names = {edge_label(line.id, h): f"{line_short_name(line)} {HEADINGS[h]}"
                  for line in network.lines.values() for h in range(4)}
    return LabelledGraph(
        tuple(triples),
        node_names={i: network.stations[i].name for i in used},
        edge_names=edge_names,
        positions={i: (network.stations[i].longitude, network.stations[i].latitude) for i in used},
        description=description,
    )


def full_map(network: UndergroundNetwork) -> LabelledGraph:
    """Every connection in both directions (302 stations, 812 triples)."""
    links = {(c.station1, c.station2, c.line) for c in network.connections}
    links |= {(d, s, line) for s, d, line in links}
    stations = {s for s, _, _ in links}
    return _graph(network, links, f"full network: {len(stations)} stations, "
                                  f"{len(network.connections)} connections, {len(links)} triples")


def zone1_interchange_map(network: UndergroundNetwork) -> LabelledGraph:
    """Zone-1 interchange stations joined along each line (module docstring)."""
    zone1 = {i for i, s in network.stations.items() if s.zone == 1.0}
    interchanges = {i for i in zone1 if len(network.lines_at(i)) >= 2}
    track: dict[tuple[int, int], set[int]] = {}
    for c in network.connections:
        track.setdefault((c.station1, c.line), set()).add(c.station2)
        track.setdefault((c.station2, c.line), set()).add(c.station1)
    links = set()
    for start in interchanges:
        for line in network.lines_at(start):
            visited, frontier = {start}, list(track[start, line])
            while frontier:
                station = frontier.pop()
                if station in visited or station not in zone1:
                    continue
                visited.add(station)
                if station in interchanges:
                    links.add((start, station, line))
                else:
                    frontier += track[station, line]
    pairs = {(min(s, d), max(s, d), line) for s, d, line in links}
    return _graph(network, links, f"zone-1 interchange map: {len(interchanges)} stations, "
                                  f"{len(pairs)} connections, {len(links)} triples")


def underground_map(kind: str = "zone1", data_dir: str | Path | None = None) -> LabelledGraph:
    """The test map ``kind`` ("zone1": `zone1_interchange_map`, "full": `full_map`)."""
    if kind not in MAPS:
        raise ValueError(f"London map {kind!r}: expected one of {MAPS}")
    network = load_london(data_dir)
    return zone1_interchange_map(network) if kind == "zone1" else full_map(network)
