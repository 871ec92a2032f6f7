//! Property: the embedded store's geo commands answer as Redis does, byte for byte, for
//! random points (the whole globe, poles and antimeridian included) and random searches
//! (radius or box, every unit, sorting, COUNT, ANY, WITH* options, STORE/STOREDIST). Each
//! command runs on a real redis-server and on the store; the replies must be equal.
//!
//! A seeded generator: a failure prints the seed, and `PKV_PROPERTY_SEED` replays it.
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error, as it should

mod common;

use common::parity::{property_seed, redis_text, store_text, Rng};
use common::Redis;
use pkv::embedded::Store;
use pkv::protocol::Proto;

fn same(redis: &mut redis::Connection, store: &Store, args: &[String], seed: u64) {
    let mut cmd = redis::cmd(&args[0]);
    for a in &args[1..] {
        cmd.arg(a);
    }
    let theirs = redis_text(cmd.query(redis));
    let slices: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    let ours = store_text(store.run(Proto::Resp2, &slices));
    assert_eq!(theirs, ours, "seed {seed}: {}", args.join(" "));
}

#[test]
fn geo_replies_match_redis_byte_for_byte() {
    let redis = Redis::start();
    let mut direct = redis.direct();
    let seed = property_seed();
    let mut rng = Rng(seed);
    let store = Store::default();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    for batch in 0..20 {
        let mut args = s(&["GEOADD", "g"]);
        for i in 0..100 {
            // Half the points cluster in one region so that searches find many.
            let (lon, lat) = if rng.below(2) == 0 {
                (rng.coord(-180.0, 180.0), rng.coord(-85.05, 85.05))
            } else {
                (rng.coord(0.0, 20.0), rng.coord(40.0, 55.0))
            };
            args.extend([lon, lat, format!("m{batch}-{i}")]);
        }
        same(&mut direct, &store, &args, seed);
    }
    let units = ["m", "km", "mi", "ft"];
    for round in 0..300 {
        let member = format!("m{}-{}", rng.below(20), rng.below(100));
        let mut args = if rng.below(2) == 0 {
            s(&["GEOSEARCH", "g", "FROMMEMBER", &member])
        } else {
            let (lon, lat) = if rng.below(2) == 0 {
                (rng.coord(-180.0, 180.0), rng.coord(-85.05, 85.05))
            } else {
                (rng.coord(0.0, 20.0), rng.coord(40.0, 55.0))
            };
            s(&["GEOSEARCH", "g", "FROMLONLAT", &lon, &lat])
        };
        let size = format!("{}", 10u64.pow(rng.below(5) as u32) * (1 + rng.below(9)));
        if rng.below(2) == 0 {
            args.extend(s(&["BYRADIUS", &size, rng.pick(&units)]));
        } else {
            let other = format!("{}", 10u64.pow(rng.below(5) as u32) * (1 + rng.below(9)));
            args.extend(s(&["BYBOX", &size, &other, rng.pick(&units)]));
        }
        // Without ordering, the reply order is the scan's; with COUNT and no ANY, the
        // nearest are kept. Ties between equal distances are rare with random points.
        args.push(rng.pick(&["ASC", "DESC"]).to_string());
        if rng.below(3) == 0 {
            args.extend(s(&["COUNT", &(1 + rng.below(20)).to_string()]));
        }
        let stored = rng.below(4) == 0;
        if stored {
            args[0] = "GEOSEARCHSTORE".into();
            args.insert(1, format!("dest{round}"));
            if rng.below(2) == 0 {
                args.push("STOREDIST".into());
            }
        } else {
            for opt in ["WITHDIST", "WITHCOORD", "WITHHASH"] {
                if rng.below(2) == 0 {
                    args.push(opt.into());
                }
            }
        }
        same(&mut direct, &store, &args, seed);
        if stored {
            same(
                &mut direct,
                &store,
                &s(&["ZRANGE", &format!("dest{round}"), "0", "-1", "WITHSCORES"]),
                seed,
            );
        }
        let other = format!("m{}-{}", rng.below(20), rng.below(100));
        let unit = rng.pick(&units);
        same(
            &mut direct,
            &store,
            &s(&["GEODIST", "g", &member, &other, unit]),
            seed,
        );
        same(
            &mut direct,
            &store,
            &s(&["GEOPOS", "g", &member, &other]),
            seed,
        );
        same(
            &mut direct,
            &store,
            &s(&["GEOHASH", "g", &member, &other]),
            seed,
        );
    }
}
