//! Geo commands: points kept in a sorted set under Redis's 52-bit interleaved geohash
//! score, searched and measured with Redis's formulas so that replies match byte for byte.
//!
//! Facts from redis/src/geo.c, geohash.c and geohash_helper.c (7.0): latitudes are encoded
//! over ±85.05112878 (Web Mercator's limit), longitudes over ±180, 26 bits each,
//! interleaved latitude first; a point is the centre of its cell. Distances are haversine
//! on a sphere of radius 6372797.560856 m. A search encodes the centre at a step chosen
//! from the radius, looks in that cell and its eight neighbours (dropping those the
//! bounding box cannot reach), and keeps the points within the shape. Distances are
//! written with four decimals, coordinates with up to 17.

use crate::protocol::frame::Frame;

use super::zsets::{double_arg, read_zset, zadd};
use super::{bulk, int, int_arg, is, Command, Cx, Error, Reply, StoreError};
use crate::embedded::data::{Data, Entry, ZSet};

pub const COMMANDS: &[Command] = &[
    Command {
        name: "GEOADD",
        run: geoadd,
    },
    Command {
        name: "GEODIST",
        run: geodist,
    },
    Command {
        name: "GEOHASH",
        run: geohash,
    },
    Command {
        name: "GEOPOS",
        run: geopos,
    },
    Command {
        name: "GEORADIUS",
        run: georadius,
    },
    Command {
        name: "GEORADIUS_RO",
        run: georadius_ro,
    },
    Command {
        name: "GEORADIUSBYMEMBER",
        run: georadiusbymember,
    },
    Command {
        name: "GEORADIUSBYMEMBER_RO",
        run: georadiusbymember_ro,
    },
    Command {
        name: "GEOSEARCH",
        run: geosearch,
    },
    Command {
        name: "GEOSEARCHSTORE",
        run: geosearchstore,
    },
];

const LAT_MIN: f64 = -85.051_128_78;
const LAT_MAX: f64 = 85.051_128_78;
const LONG_MIN: f64 = -180.0;
const LONG_MAX: f64 = 180.0;
/// Bits per coordinate in a stored score.
const STEP_MAX: u32 = 26;
const EARTH_RADIUS: f64 = 6_372_797.560_856;
const MERCATOR_MAX: f64 = 20_037_726.37;
const D_R: f64 = std::f64::consts::PI / 180.0;

// === Geohash ===

/// A cell: its interleaved bits and how many bits per coordinate (0: no cell).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hash {
    bits: u64,
    step: u32,
}

const NO_CELL: Hash = Hash { bits: 0, step: 0 };

#[derive(Debug, Clone, Copy)]
struct Range {
    min: f64,
    max: f64,
}

const LONGS: Range = Range {
    min: LONG_MIN,
    max: LONG_MAX,
};
const LATS: Range = Range {
    min: LAT_MIN,
    max: LAT_MAX,
};

#[derive(Debug, Clone, Copy)]
struct Area {
    lon: Range,
    lat: Range,
}

fn spread(v: u32) -> u64 {
    let mut x = u64::from(v);
    x = (x | (x << 16)) & 0x0000_FFFF_0000_FFFF;
    x = (x | (x << 8)) & 0x00FF_00FF_00FF_00FF;
    x = (x | (x << 4)) & 0x0F0F_0F0F_0F0F_0F0F;
    x = (x | (x << 2)) & 0x3333_3333_3333_3333;
    (x | (x << 1)) & 0x5555_5555_5555_5555
}

fn squash(v: u64) -> u64 {
    let mut x = v & 0x5555_5555_5555_5555;
    x = (x | (x >> 1)) & 0x3333_3333_3333_3333;
    x = (x | (x >> 2)) & 0x0F0F_0F0F_0F0F_0F0F;
    x = (x | (x >> 4)) & 0x00FF_00FF_00FF_00FF;
    x = (x | (x >> 8)) & 0x0000_FFFF_0000_FFFF;
    (x | (x >> 16)) & 0x0000_0000_FFFF_FFFF
}

/// The cell of `step` bits holding a point, over the given ranges; `None` outside them.
fn encode(lons: Range, lats: Range, lon: f64, lat: f64, step: u32) -> Option<Hash> {
    if !(LONG_MIN..=LONG_MAX).contains(&lon) || !(LAT_MIN..=LAT_MAX).contains(&lat) {
        return None;
    }
    if lat < lats.min || lat > lats.max || lon < lons.min || lon > lons.max {
        return None;
    }
    let scale = (1u64 << step) as f64;
    let lat_offset = (lat - lats.min) / (lats.max - lats.min) * scale;
    let lon_offset = (lon - lons.min) / (lons.max - lons.min) * scale;
    Some(Hash {
        bits: spread(lat_offset as u32) | (spread(lon_offset as u32) << 1),
        step,
    })
}

fn decode(lons: Range, lats: Range, hash: Hash) -> Area {
    let lat_cell = squash(hash.bits) as u32;
    let lon_cell = squash(hash.bits >> 1) as u32;
    let scale = (1u64 << hash.step) as f64;
    let at = |r: Range, cell: u32| r.min + (f64::from(cell) * 1.0 / scale) * (r.max - r.min);
    Area {
        lat: Range {
            min: at(lats, lat_cell),
            max: at(lats, lat_cell.wrapping_add(1)),
        },
        lon: Range {
            min: at(lons, lon_cell),
            max: at(lons, lon_cell.wrapping_add(1)),
        },
    }
}

/// A stored score's point: the centre of its cell, `[longitude, latitude]`.
fn point_of(score: f64) -> [f64; 2] {
    let area = decode(
        LONGS,
        LATS,
        Hash {
            bits: score as u64,
            step: STEP_MAX,
        },
    );
    [
        ((area.lon.min + area.lon.max) / 2.0).clamp(LONG_MIN, LONG_MAX),
        ((area.lat.min + area.lat.max) / 2.0).clamp(LAT_MIN, LAT_MAX),
    ]
}

/// A cell's bits aligned to 52, as scores are.
fn align52(hash: Hash) -> u64 {
    hash.bits << (52 - hash.step * 2)
}

fn move_x(hash: &mut Hash, d: i8) {
    let x = hash.bits & 0xaaaa_aaaa_aaaa_aaaa;
    let y = hash.bits & 0x5555_5555_5555_5555;
    let zz = 0x5555_5555_5555_5555u64 >> (64 - hash.step * 2);
    let x = if d > 0 {
        x.wrapping_add(zz + 1)
    } else {
        (x | zz).wrapping_sub(zz + 1)
    };
    hash.bits = (x & (0xaaaa_aaaa_aaaa_aaaa >> (64 - hash.step * 2))) | y;
}

fn move_y(hash: &mut Hash, d: i8) {
    let x = hash.bits & 0xaaaa_aaaa_aaaa_aaaa;
    let y = hash.bits & 0x5555_5555_5555_5555;
    let zz = 0xaaaa_aaaa_aaaa_aaaau64 >> (64 - hash.step * 2);
    let y = if d > 0 {
        y.wrapping_add(zz + 1)
    } else {
        (y | zz).wrapping_sub(zz + 1)
    };
    hash.bits = x | (y & (0x5555_5555_5555_5555 >> (64 - hash.step * 2)));
}

fn moved(hash: Hash, dx: i8, dy: i8) -> Hash {
    let mut h = hash;
    if dx != 0 {
        move_x(&mut h, dx);
    }
    if dy != 0 {
        move_y(&mut h, dy);
    }
    h
}

// === Distances ===

fn rad(deg: f64) -> f64 {
    deg * D_R
}

fn lat_distance(lat1: f64, lat2: f64) -> f64 {
    EARTH_RADIUS * (rad(lat2) - rad(lat1)).abs()
}

/// Haversine distance in metres.
fn distance(lon1: f64, lat1: f64, lon2: f64, lat2: f64) -> f64 {
    let v = ((rad(lon2) - rad(lon1)) / 2.0).sin();
    if v == 0.0 {
        return lat_distance(lat1, lat2);
    }
    let (lat1r, lat2r) = (rad(lat1), rad(lat2));
    let u = ((lat2r - lat1r) / 2.0).sin();
    let a = u * u + lat1r.cos() * lat2r.cos() * v * v;
    2.0 * EARTH_RADIUS * a.sqrt().asin()
}

// === Searching ===

#[derive(Debug, Clone, Copy)]
enum Shape {
    Radius(f64),
    Box { width: f64, height: f64 },
}

#[derive(Debug, Clone, Copy)]
struct Search {
    center: [f64; 2],
    shape: Shape,
    /// Metres per unit.
    unit: f64,
}

/// A point found: its member, distance (metres), score and coordinates.
struct Found {
    member: Vec<u8>,
    dist: f64,
    score: f64,
    xy: [f64; 2],
}

fn steps_for(mut range: f64, lat: f64) -> u32 {
    if range == 0.0 {
        return 26;
    }
    let mut step: i32 = 1;
    while range < MERCATOR_MAX {
        range *= 2.0;
        step += 1;
    }
    step -= 2;
    if !(-66.0..=66.0).contains(&lat) {
        step -= 1;
        if !(-80.0..=80.0).contains(&lat) {
            step -= 1;
        }
    }
    step.clamp(1, 26) as u32
}

impl Search {
    /// `[min lon, min lat, max lon, max lat]` of the shape.
    fn bounds(&self) -> [f64; 4] {
        let [lon, lat] = self.center;
        let (h, w) = match self.shape {
            Shape::Radius(r) => (r, r),
            Shape::Box { width, height } => (height / 2.0, width / 2.0),
        };
        let (h, w) = (self.unit * h, self.unit * w);
        let lat_delta = h / EARTH_RADIUS / D_R;
        let top = w / EARTH_RADIUS / rad(lat + lat_delta).cos() / D_R;
        let bottom = w / EARTH_RADIUS / rad(lat - lat_delta).cos() / D_R;
        let delta = if lat < 0.0 { bottom } else { top };
        [lon - delta, lat - lat_delta, lon + delta, lat + lat_delta]
    }

    /// The cells to look in: the centre's and its neighbours that the shape may reach, in
    /// Redis's order (centre, N, S, E, W, NE, NW, SE, SW).
    fn cells(&self) -> [Hash; 9] {
        let [min_lon, min_lat, max_lon, max_lat] = self.bounds();
        let [lon, lat] = self.center;
        let radius = match self.shape {
            Shape::Radius(r) => r,
            Shape::Box { width, height } => {
                ((width / 2.0) * (width / 2.0) + (height / 2.0) * (height / 2.0)).sqrt()
            }
        } * self.unit;
        let mut steps = steps_for(radius, lat);
        let around = |steps: u32| {
            let hash = encode(LONGS, LATS, lon, lat, steps).unwrap_or(Hash {
                bits: 0,
                step: steps,
            });
            let n = [
                hash,
                moved(hash, 0, 1),
                moved(hash, 0, -1),
                moved(hash, 1, 0),
                moved(hash, -1, 0),
                moved(hash, 1, 1),
                moved(hash, -1, 1),
                moved(hash, 1, -1),
                moved(hash, -1, -1),
            ];
            (n, decode(LONGS, LATS, hash))
        };
        let (mut n, mut area) = around(steps);
        let cell = |h: Hash| decode(LONGS, LATS, h);
        let decrease = cell(n[1]).lat.max < max_lat
            || cell(n[2]).lat.min > min_lat
            || cell(n[3]).lon.max < max_lon
            || cell(n[4]).lon.min > min_lon;
        if steps > 1 && decrease {
            steps -= 1;
            (n, area) = around(steps);
        }
        if steps >= 2 {
            const N: usize = 1;
            const S: usize = 2;
            const E: usize = 3;
            const W: usize = 4;
            const NE: usize = 5;
            const NW: usize = 6;
            const SE: usize = 7;
            const SW: usize = 8;
            if area.lat.min < min_lat {
                for i in [S, SW, SE] {
                    n[i] = NO_CELL;
                }
            }
            if area.lat.max > max_lat {
                for i in [N, NE, NW] {
                    n[i] = NO_CELL;
                }
            }
            if area.lon.min < min_lon {
                for i in [W, SW, NW] {
                    n[i] = NO_CELL;
                }
            }
            if area.lon.max > max_lon {
                for i in [E, SE, NE] {
                    n[i] = NO_CELL;
                }
            }
        }
        n
    }

    /// The distance of a stored point if it lies within the shape.
    fn within(&self, xy: [f64; 2]) -> Option<f64> {
        let [cx, cy] = self.center;
        match self.shape {
            Shape::Radius(r) => {
                let d = distance(cx, cy, xy[0], xy[1]);
                (d <= r * self.unit).then_some(d)
            }
            Shape::Box { width, height } => {
                let (w, h) = (width * self.unit, height * self.unit);
                if lat_distance(cy, xy[1]) > h / 2.0 {
                    return None;
                }
                if distance(xy[0], xy[1], cx, xy[1]) > w / 2.0 {
                    return None;
                }
                Some(distance(cx, cy, xy[0], xy[1]))
            }
        }
    }

    /// The points of `z` within the shape, cell by cell; stops at `limit` (0: none).
    fn run(&self, z: &ZSet, limit: usize) -> Vec<Found> {
        let mut found = Vec::new();
        let cells = self.cells();
        // Redis skips a cell equal to the one searched just before it, unless that one
        // was the centre's (index 0).
        let mut last = 0;
        for (i, &cell) in cells.iter().enumerate() {
            if cell == NO_CELL || (last != 0 && cells[last] == cell) {
                continue;
            }
            if limit > 0 && found.len() >= limit {
                break;
            }
            let min = align52(cell) as f64;
            let max = align52(Hash {
                bits: cell.bits + 1,
                step: cell.step,
            }) as f64;
            for (member, score) in z.range_by_score(min, max) {
                if score >= max {
                    break;
                }
                let xy = point_of(score);
                if let Some(dist) = self.within(xy) {
                    found.push(Found {
                        member: member.to_vec(),
                        dist,
                        score,
                        xy,
                    });
                }
                if limit > 0 && found.len() >= limit {
                    break;
                }
            }
            last = i;
        }
        found
    }
}

// === Arguments and replies ===

fn unit_arg(raw: &[u8]) -> Result<f64, Error> {
    Ok(if is(raw, "m") {
        1.0
    } else if is(raw, "km") {
        1000.0
    } else if is(raw, "ft") {
        0.3048
    } else if is(raw, "mi") {
        1609.34
    } else {
        return Err(StoreError::GeoUnit.into());
    })
}

/// A longitude and latitude, checked against the encodable ranges.
fn lon_lat(lon: &[u8], lat: &[u8]) -> Result<[f64; 2], Error> {
    let lon = double_arg(lon, StoreError::NotFloat)?;
    let lat = double_arg(lat, StoreError::NotFloat)?;
    if !(LONG_MIN..=LONG_MAX).contains(&lon) || !(LAT_MIN..=LAT_MAX).contains(&lat) {
        return Err(StoreError::GeoInvalidPair { lon, lat }.into());
    }
    Ok([lon, lat])
}

/// A radius and its unit.
fn radius_arg(raw: &[u8], unit: &[u8]) -> Result<(f64, f64), Error> {
    let r = double_arg(raw, StoreError::GeoNeedNumeric { what: "radius" })?;
    if r < 0.0 {
        return Err(StoreError::GeoRadiusNegative.into());
    }
    Ok((r, unit_arg(unit)?))
}

/// A distance as Redis writes one: fixed point, four decimals (half to even).
fn distance_text(d: f64) -> Vec<u8> {
    let v = (d * 10_000.0).round_ties_even() as i64;
    let sign = if v < 0 { "-" } else { "" };
    let v = v.unsigned_abs();
    format!("{sign}{}.{:04}", v / 10_000, v % 10_000).into_bytes()
}

/// A coordinate as Redis writes one: 17 decimals, trailing zeros dropped.
fn coordinate(d: f64) -> Frame {
    let mut text = format!("{d:.17}");
    if text.contains('.') {
        let trimmed = text.trim_end_matches('0').trim_end_matches('.').len();
        text.truncate(trimmed);
    }
    if text == "-0" {
        text = "0".into();
    }
    Frame::Double(text.into())
}

fn coordinates(xy: [f64; 2]) -> Frame {
    Frame::Array(vec![coordinate(xy[0]), coordinate(xy[1])])
}

// === Commands ===

/// `GEOADD key [NX|XX] [CH] longitude latitude member ...`: ZADD with geohash scores.
fn geoadd(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let (mut nx, mut xx) = (false, false);
    let mut at = 2;
    while let Some(opt) = args.get(at) {
        if is(opt, "NX") {
            nx = true;
        } else if is(opt, "XX") {
            xx = true;
        } else if !is(opt, "CH") {
            break;
        }
        at += 1;
    }
    let triples = &args[at..];
    if !triples.len().is_multiple_of(3) || (nx && xx) {
        return Err(StoreError::Syntax.into());
    }
    let mut scores = Vec::with_capacity(triples.len() / 3);
    for t in triples.chunks(3) {
        let [lon, lat] = lon_lat(t[0], t[1])?;
        let hash = encode(LONGS, LATS, lon, lat, STEP_MAX).unwrap_or(NO_CELL);
        scores.push(align52(hash).to_string().into_bytes());
    }
    let mut zargs: Vec<&[u8]> = Vec::with_capacity(at + triples.len());
    zargs.push(b"ZADD");
    zargs.extend_from_slice(&args[1..at]);
    for (t, score) in triples.chunks(3).zip(&scores) {
        zargs.push(score);
        zargs.push(t[2]);
    }
    zadd(cx, &zargs)
}

/// `GEODIST key member1 member2 [unit]`
fn geodist(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    let unit = match args.len() {
        4 => 1.0,
        5 => unit_arg(args[4])?,
        _ => return Err(StoreError::Syntax.into()),
    };
    read_zset(cx, args[1], |z| {
        let Some(z) = z else {
            return Frame::Null;
        };
        match (z.score(args[2]), z.score(args[3])) {
            (Some(a), Some(b)) => {
                let ([x1, y1], [x2, y2]) = (point_of(a), point_of(b));
                bulk(distance_text(distance(x1, y1, x2, y2) / unit))
            }
            _ => Frame::Null,
        }
    })
}

/// `GEOHASH key member ...`: standard 11-character geohashes (latitude over ±90).
fn geohash(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    const ALPHABET: &[u8; 32] = b"0123456789bcdefghjkmnpqrstuvwxyz";
    read_zset(cx, args[1], |z| {
        let items = args[2..]
            .iter()
            .map(|m| match z.and_then(|z| z.score(m)) {
                None => Frame::Null,
                Some(score) => {
                    let [lon, lat] = point_of(score);
                    let full = Range {
                        min: -90.0,
                        max: 90.0,
                    };
                    let bits = encode(LONGS, full, lon, lat, 26).map_or(0, |h| h.bits);
                    let text: Vec<u8> = (0..11)
                        .map(|i| {
                            let idx = if i == 10 {
                                0
                            } else {
                                (bits >> (52 - (i + 1) * 5)) & 0x1f
                            };
                            ALPHABET[idx as usize]
                        })
                        .collect();
                    bulk(text)
                }
            })
            .collect();
        Frame::Array(items)
    })
}

/// `GEOPOS key member ...`
fn geopos(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    read_zset(cx, args[1], |z| {
        let items = args[2..]
            .iter()
            .map(|m| match z.and_then(|z| z.score(m)) {
                None => Frame::NullArray,
                Some(score) => coordinates(point_of(score)),
            })
            .collect();
        Frame::Array(items)
    })
}

/// Which of the search commands is running.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    Radius { by_member: bool, store: bool },
    Search { store: bool },
}

fn georadius(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    search(
        cx,
        args,
        Form::Radius {
            by_member: false,
            store: true,
        },
    )
}

fn georadius_ro(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    search(
        cx,
        args,
        Form::Radius {
            by_member: false,
            store: false,
        },
    )
}

fn georadiusbymember(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    search(
        cx,
        args,
        Form::Radius {
            by_member: true,
            store: true,
        },
    )
}

fn georadiusbymember_ro(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    search(
        cx,
        args,
        Form::Radius {
            by_member: true,
            store: false,
        },
    )
}

fn geosearch(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    search(cx, args, Form::Search { store: false })
}

fn geosearchstore(cx: &mut Cx, args: &[&[u8]]) -> Reply {
    search(cx, args, Form::Search { store: true })
}

/// `georadiusGeneric`: every search form, parsed and answered in Redis's order.
fn search(cx: &mut Cx, args: &[&[u8]], form: Form) -> Reply {
    let src = match form {
        Form::Search { store: true } => args[2],
        _ => args[1],
    };
    let exists = read_zset(cx, src, |z| z.is_some())?;
    let member_score = |m: &[u8]| -> Result<Option<f64>, Error> {
        read_zset(cx, src, |z| z.and_then(|z| z.score(m)))
    };
    let mut center = None;
    let mut shape = None;
    let mut unit = 1.0;
    let base = match form {
        Form::Radius {
            by_member: false, ..
        } => {
            center = Some(lon_lat(args[2], args[3])?);
            let (r, u) = radius_arg(args[4], args[5])?;
            (shape, unit) = (Some(Shape::Radius(r)), u);
            6
        }
        Form::Radius {
            by_member: true, ..
        } => {
            if exists {
                let score = member_score(args[2])?.ok_or(StoreError::GeoNoMember)?;
                center = Some(point_of(score));
                let (r, u) = radius_arg(args[3], args[4])?;
                (shape, unit) = (Some(Shape::Radius(r)), u);
            }
            5
        }
        Form::Search { store } => 2 + usize::from(store),
    };
    let search_form = matches!(form, Form::Search { .. });
    let may_store = matches!(form, Form::Radius { store: true, .. });
    let (mut withdist, mut withhash, mut withcoord, mut any) = (false, false, false, false);
    let (mut from_member, mut from_lonlat, mut by_radius, mut by_box) =
        (false, false, false, false);
    let mut sort: Option<bool> = None; // Some(true): descending
    let mut count: i64 = 0;
    let mut store_key: Option<&[u8]> = match form {
        Form::Search { store: true } => Some(args[1]),
        _ => None,
    };
    let mut store_dist = false;
    let rest = args.get(base..).unwrap_or_default();
    let mut i = 0;
    while i < rest.len() {
        let arg = rest[i];
        let left = rest.len() - i - 1;
        if is(arg, "WITHDIST") {
            withdist = true;
        } else if is(arg, "WITHHASH") {
            withhash = true;
        } else if is(arg, "WITHCOORD") {
            withcoord = true;
        } else if is(arg, "ANY") {
            any = true;
        } else if is(arg, "ASC") {
            sort = Some(false);
        } else if is(arg, "DESC") {
            sort = Some(true);
        } else if is(arg, "COUNT") && left >= 1 {
            count = int_arg(rest[i + 1])?;
            if count <= 0 {
                return Err(StoreError::GeoCountNotPositive.into());
            }
            i += 1;
        } else if (is(arg, "STORE") || is(arg, "STOREDIST")) && left >= 1 && may_store {
            store_key = Some(rest[i + 1]);
            store_dist = is(arg, "STOREDIST");
            i += 1;
        } else if is(arg, "STOREDIST") && form == (Form::Search { store: true }) {
            store_dist = true;
        } else if is(arg, "FROMMEMBER") && left >= 1 && search_form && !from_lonlat {
            if exists {
                let score = member_score(rest[i + 1])?.ok_or(StoreError::GeoNoMember)?;
                center = Some(point_of(score));
            }
            from_member = true;
            i += 1;
        } else if is(arg, "FROMLONLAT") && left >= 2 && search_form && !from_member {
            center = Some(lon_lat(rest[i + 1], rest[i + 2])?);
            from_lonlat = true;
            i += 2;
        } else if is(arg, "BYRADIUS") && left >= 2 && search_form && !by_box {
            let (r, u) = radius_arg(rest[i + 1], rest[i + 2])?;
            (shape, unit) = (Some(Shape::Radius(r)), u);
            by_radius = true;
            i += 2;
        } else if is(arg, "BYBOX") && left >= 3 && search_form && !by_radius {
            let width = double_arg(rest[i + 1], StoreError::GeoNeedNumeric { what: "width" })?;
            let height = double_arg(rest[i + 2], StoreError::GeoNeedNumeric { what: "height" })?;
            if width < 0.0 || height < 0.0 {
                return Err(StoreError::GeoBoxNegative.into());
            }
            unit = unit_arg(rest[i + 3])?;
            shape = Some(Shape::Box { width, height });
            by_box = true;
            i += 3;
        } else {
            return Err(StoreError::Syntax.into());
        }
        i += 1;
    }
    if store_key.is_some() && (withdist || withhash || withcoord) {
        return Err(StoreError::GeoStoreWith {
            search_store: form == Form::Search { store: true },
        }
        .into());
    }
    let name = || String::from_utf8_lossy(args[0]).into_owned();
    if search_form && !(from_member || from_lonlat) {
        return Err(StoreError::GeoNeedFrom { command: name() }.into());
    }
    if search_form && !(by_radius || by_box) {
        return Err(StoreError::GeoNeedBy { command: name() }.into());
    }
    if any && count == 0 {
        return Err(StoreError::GeoAnyWithoutCount.into());
    }
    let (Some(center), Some(shape), true) = (center, shape, exists) else {
        return Ok(match store_key {
            Some(dest) => {
                cx.remove(dest);
                Frame::Integer(0)
            }
            None => Frame::Array(Vec::new()),
        });
    };
    if count != 0 && sort.is_none() && !any {
        sort = Some(false);
    }
    let query = Search {
        center,
        shape,
        unit,
    };
    let limit = if any { count as usize } else { 0 };
    let mut found = read_zset(cx, src, |z| {
        z.map(|z| query.run(z, limit)).unwrap_or_default()
    })?;
    if found.is_empty() && store_key.is_none() {
        return Ok(Frame::Array(Vec::new()));
    }
    match sort {
        Some(false) => found.sort_by(|a, b| a.dist.total_cmp(&b.dist)),
        Some(true) => found.sort_by(|a, b| b.dist.total_cmp(&a.dist)),
        None => {}
    }
    if count > 0 {
        found.truncate(count as usize);
    }
    if let Some(dest) = store_key {
        let mut z = ZSet::default();
        for f in &found {
            z.insert(
                f.member.clone(),
                if store_dist { f.dist / unit } else { f.score },
            );
        }
        let n = z.len();
        if n == 0 {
            cx.remove(dest);
        } else {
            cx.insert(dest, Entry::new(Data::ZSet(z)));
        }
        return int(n as i64);
    }
    let options = usize::from(withdist) + usize::from(withhash) + usize::from(withcoord);
    let items = found
        .into_iter()
        .map(|f| {
            if options == 0 {
                return bulk(f.member);
            }
            let mut item = vec![bulk(f.member)];
            if withdist {
                item.push(bulk(distance_text(f.dist / unit)));
            }
            if withhash {
                item.push(Frame::Integer(f.score as i64));
            }
            if withcoord {
                item.push(coordinates(f.xy));
            }
            Frame::Array(item)
        })
        .collect();
    Ok(Frame::Array(items))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaving_round_trips() {
        for (lat, lon) in [(0u32, 0u32), (1, 0), (0, 1), (0x3ff_ffff, 0x155_5555)] {
            let bits = spread(lat) | (spread(lon) << 1);
            assert_eq!(squash(bits) as u32, lat);
            assert_eq!(squash(bits >> 1) as u32, lon);
        }
    }

    #[test]
    fn distances_are_written_with_four_decimals() {
        assert_eq!(distance_text(0.0), b"0.0000");
        assert_eq!(distance_text(166_274.151_569_600_33), b"166274.1516");
        assert_eq!(distance_text(0.00005), b"0.0000");
        assert_eq!(distance_text(12.345_67), b"12.3457");
    }

    #[test]
    fn coordinates_drop_trailing_zeros() {
        assert_eq!(coordinate(13.5), Frame::Double("13.5".into()));
        assert_eq!(coordinate(-0.0), Frame::Double("0".into()));
        assert_eq!(coordinate(2.0), Frame::Double("2".into()));
    }
}
