//! The hot path, piece by piece: parsing a pipelined batch, looking up a command and
//! rewriting its keys into the namespace, pricing it, and verifying a token with and
//! without the cache. Before the timings it counts, with a counting global allocator, the
//! heap allocations one SET and one GET make on those pieces, and through a whole pkv
//! server in this process (on a private redis-server if one is installed, and on the
//! embedded store).
//!
//!     cargo bench --bench hot_path
#![allow(clippy::unwrap_used)] // a test that unwraps fails with the error, as it should

use std::alloc::System;
use std::collections::BTreeMap;
use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, Criterion, Throughput};
use pkv::auth::keys::IssuerKey;
use pkv::auth::token::{mint_quota, MintRequest};
use pkv::auth::Authenticator;
use pkv::commands::{key_args, lookup};
use pkv::config::Settings;
use pkv::meter::storage::{plan, TtlPolicy};
use pkv::meter::{Price, Prices, Usage};
use pkv::namespace::Namespace;
use pkv::protocol::request::{parse, Limits};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

/// Counts every allocation the bench makes (a few atomic additions per allocation, on the
/// timings too).
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

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
    let auth = Authenticator::new(&Settings::from_map(&raw).unwrap().auth());
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

/// Heap allocations (and reallocations) per call of `f`, over many calls after a first one
/// that may fill caches.
fn allocations_per_call(mut f: impl FnMut()) -> f64 {
    const CALLS: u32 = 1000;
    f();
    let region = Region::new(GLOBAL);
    for _ in 0..CALLS {
        f();
    }
    let change = region.change();
    (change.allocations + change.reallocations) as f64 / f64::from(CALLS)
}

/// Prints the heap allocations one request makes on each piece of the hot path above:
/// parsing it out of a pipelined read, looking up its command and rewriting its keys into
/// the namespace, and its storage plan (none for a read). What the rest of the request path
/// allocates (the backend call, the reply) is not driven here.
fn allocations() {
    let ns = Namespace::new("j0123456789abcdef0123456789abcdef");
    let policy = TtlPolicy {
        default_secs: 86_400,
        max_secs: 31_536_000,
        now_ms: 1_800_000_000_000,
    };
    let value = "x".repeat(64);
    println!("heap allocations per request on the pieces this bench drives:");
    println!("| request | parse | lookup and rewrite keys | storage plan | total |");
    println!("| --- | --- | --- | --- | --- |");
    for line in [
        "SET key:000123 ".to_string() + &value,
        "GET key:000123".into(),
    ] {
        let args = words(&line);
        let raw: Vec<&[u8]> = args.iter().map(|a| &a[..]).collect();
        let batch = resp(&raw).repeat(16);
        let mut buffers: Vec<BytesMut> = (0..1001).map(|_| BytesMut::from(&batch[..])).collect();
        let parsing = allocations_per_call(|| {
            let mut buf = buffers.pop().unwrap_or_default();
            while let Ok(Some(req)) = parse(&mut buf, LIMITS) {
                black_box(req);
            }
        }) / 16.0;
        let rewriting = allocations_per_call(|| {
            let spec = lookup(black_box(&args)).unwrap();
            let keys = key_args(spec, &args).unwrap();
            let rewritten: Vec<Bytes> = keys
                .iter()
                .map(|(i, role)| ns.rewrite(&args[*i], *role))
                .collect();
            black_box(rewritten);
        });
        let spec = lookup(&args).unwrap();
        let keys = key_args(spec, &args).unwrap();
        let planning = allocations_per_call(|| {
            black_box(plan(spec, &args, &keys, &ns, &policy).unwrap());
        });
        println!(
            "| {} | {parsing:.1} | {rewriting:.1} | {planning:.1} | {:.1} |",
            std::str::from_utf8(&args[0]).unwrap_or("?"),
            parsing + rewriting + planning
        );
    }
    println!();
}

/// A pkv server in this process, on a listener of its own: `upstream` names a Redis, or
/// `None` for the embedded store. Authentication, metering and namespacing are on, as in
/// production. Returns the runtime (dropping it stops the server), its address and a token.
fn start_pkv(upstream: Option<&str>) -> (tokio::runtime::Runtime, std::net::SocketAddr, String) {
    let issuer = IssuerKey::from_seed(&[7; 32]);
    let mut raw: BTreeMap<String, String> = [
        ("PKV_QUOTA_ISSUERS".to_string(), issuer.did()),
        (
            "PKV_SECRET_SEED".to_string(),
            "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=".to_string(),
        ),
    ]
    .into();
    if let Some(url) = upstream {
        raw.insert("PKV_UPSTREAM_URL".into(), url.into());
    }
    let settings = Settings::from_map(&raw).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let addr = runtime.block_on(async {
        let shared = std::sync::Arc::new(pkv::server::Shared::new(settings).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(pkv::server::serve(
            shared,
            listener,
            std::future::pending::<()>(),
        ));
        addr
    });
    let token = mint_quota(
        &issuer,
        &MintRequest {
            audience: "pkv".into(),
            quantity: 1_000_000,
            lifetime_secs: 3600,
            sub: None,
        },
        pkv::auth::now_secs(),
    );
    (runtime, addr, token)
}

/// Sends `batch` (`pipeline` requests) and reads until `reply_len` bytes have come back.
fn round_trip(conn: &mut std::net::TcpStream, batch: &[u8], reply_len: usize) {
    use std::io::{Read, Write};
    let mut buf = [0u8; 4096];
    conn.write_all(batch).unwrap();
    let mut got = 0;
    while got < reply_len {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "pkv closed the connection");
        got += n;
    }
}

/// Allocations per SET and per GET through a whole pkv server (every thread of this
/// process counts; the client's loop allocates nothing), at pipelines of 1 and 16.
fn server_allocations(backend: &str, upstream: Option<&str>) {
    let (runtime, addr, token) = start_pkv(upstream);
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_nodelay(true).unwrap();
    let auth = resp(&[b"AUTH", token.as_bytes()]);
    round_trip(&mut conn, &auth, b"+OK\r\n".len());
    let value = [b'x'; 64];
    for p in [1, 16] {
        let set = resp(&[b"SET", b"key:000123", &value]).repeat(p);
        let get = resp(&[b"GET", b"key:000123"]).repeat(p);
        let per_set = allocations_per_call(|| round_trip(&mut conn, &set, 5 * p)) / p as f64;
        let per_get = allocations_per_call(|| round_trip(&mut conn, &get, 71 * p)) / p as f64;
        println!("| {backend} | {p} | {per_set:.1} | {per_get:.1} |");
    }
    drop(conn);
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
}

/// [`server_allocations`] on a private redis-server, then on the embedded store.
fn whole_path_allocations() {
    println!("heap allocations per request through a pkv server in this process:");
    println!("| backend | P | per SET | per GET |");
    println!("| --- | --- | --- | --- |");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let redis = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn();
    match redis {
        Ok(mut redis) => {
            let up = (0..200).any(|_| {
                std::thread::sleep(std::time::Duration::from_millis(25));
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
            if up {
                server_allocations("redis", Some(&format!("redis://127.0.0.1:{port}")));
            }
            let _ = redis.kill();
            let _ = redis.wait();
        }
        Err(e) => println!("| redis | - | no redis-server ({e}) | |"),
    }
    server_allocations("embedded", None);
    println!();
}

criterion_group!(benches, parsing, rewriting, pricing, verifying);

fn main() {
    allocations();
    whole_path_allocations();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
