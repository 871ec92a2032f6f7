//! The hot path, piece by piece: parsing a pipelined batch, looking up a command and
//! rewriting its keys into the namespace, pricing it, and verifying a token with and
//! without the cache.
//!
//!     cargo bench --bench hot_path
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error, as it should

use std::collections::BTreeMap;
use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pkv::auth::keys::IssuerKey;
use pkv::auth::token::{mint_quota, MintRequest};
use pkv::auth::Authenticator;
use pkv::commands::{key_args, lookup};
use pkv::config::Settings;
use pkv::meter::storage::{plan, TtlPolicy};
use pkv::meter::{Price, Prices, Usage};
use pkv::namespace::Namespace;
use pkv::protocol::request::{parse, Limits};

const LIMITS: Limits = Limits {
    max_args: 65536,
    max_bytes: 64 << 20,
};

fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn words(line: &str) -> Vec<Bytes> {
    line.split(' ')
        .map(|w| Bytes::copy_from_slice(w.as_bytes()))
        .collect()
}

fn parsing(c: &mut Criterion) {
    let value = [b'x'; 64];
    let mut batch = Vec::new();
    for i in 0..16 {
        batch.extend_from_slice(&resp(&[b"SET", format!("key:{i:06}").as_bytes(), &value]));
    }
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(16));
    group.bench_function("16 pipelined SETs of 64 bytes", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&batch[..]);
            let mut n = 0;
            while let Ok(Some(req)) = parse(&mut buf, LIMITS) {
                n += req.args.len();
            }
            black_box(n)
        })
    });
    group.finish();
}

fn rewriting(c: &mut Criterion) {
    let ns = Namespace::new("j0123456789abcdef0123456789abcdef");
    let mut group = c.benchmark_group("lookup and rewrite keys");
    for line in [
        "GET key:000123",
        "MSET a 1 b 2 c 3 d 4",
        "ZUNIONSTORE dest 3 z1 z2 z3 WEIGHTS 1 2 3",
        "XREAD COUNT 10 STREAMS s1 s2 0 0",
    ] {
        let args = words(line);
        group.bench_function(line, |b| {
            b.iter(|| {
                let spec = lookup(black_box(&args)).unwrap();
                let keys = key_args(spec, &args).unwrap();
                let rewritten: Vec<Bytes> = keys
                    .iter()
                    .map(|(i, role)| ns.rewrite(&args[*i], *role))
                    .collect();
                black_box(rewritten)
            })
        });
    }
    group.finish();
}

fn pricing(c: &mut Criterion) {
    let price = |s: &str| Price::parse(s).unwrap();
    let prices = Prices {
        op: price("0.000001"),
        byte_in: price("0.000000001"),
        byte_out: price("0.000000001"),
        byte_second: price("0.000000000000001"),
        time_ms: price("0.000001"),
    };
    let usage = Usage {
        ops: 1,
        bytes_in: 97,
        bytes_out: 5,
        byte_seconds: 6_566_400,
        time_us: 42,
    };
    let ns = Namespace::new("j0123456789abcdef0123456789abcdef");
    let set = words(&format!("SET key:000123 {}", "x".repeat(64)));
    let policy = TtlPolicy {
        default_secs: 86_400,
        max_secs: 31_536_000,
        now_ms: 1_800_000_000_000,
    };
    let mut group = c.benchmark_group("price");
    group.bench_function("cost of one command", |b| {
        b.iter(|| black_box(prices.cost(black_box(&usage))))
    });
    group.bench_function("storage plan of SET", |b| {
        b.iter(|| {
            let spec = lookup(&set).unwrap();
            let keys = key_args(spec, &set).unwrap();
            black_box(plan(spec, &set, &keys, &ns, &policy).unwrap().bound)
        })
    });
    group.finish();
}

fn verifying(c: &mut Criterion) {
    let issuer = IssuerKey::from_seed(&[7; 32]);
    let raw: BTreeMap<String, String> = [
        ("PKV_QUOTA_ISSUERS".to_string(), issuer.did()),
        (
            "PKV_SECRET_SEED".to_string(),
            "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=".to_string(),
        ),
    ]
    .into();
    let auth = Authenticator::new(&Settings::from_map(&raw).unwrap());
    let now = 1_800_000_000;
    let token = mint_quota(
        &issuer,
        &MintRequest {
            audience: "pkv".into(),
            quantity: 10,
            lifetime_secs: 3600,
            sub: None,
        },
        now,
    );
    auth.verify(&token, now).unwrap();
    let mut group = c.benchmark_group("verify quota token");
    group.bench_function("cached", |b| {
        b.iter(|| black_box(auth.verify(black_box(&token), now).is_ok()))
    });
    group.bench_function("uncached (signature check)", |b| {
        b.iter(|| black_box(auth.verify_uncached(black_box(&token), now).is_ok()))
    });
    group.finish();
}

criterion_group!(benches, parsing, rewriting, pricing, verifying);
criterion_main!(benches);
