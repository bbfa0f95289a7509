//! Fuzzing the client-facing input paths (proptest): the front-end message
//! decoders, the frame reader, the startup-phase parsers and the SCRAM
//! exchange never panic on arbitrary or mutated input and refuse huge
//! lengths from the header; then a live router fed random byte streams
//! (startup phase and post-startup frames) over hundreds of connections
//! keeps serving well-behaved clients, with no panic anywhere.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use pg_router::auth::scram::{ServerExchange, Verifier};
use pg_router::protocol::frontend::{query_text, Bind, Execute, Parse, Startup, Target};
use pg_router::protocol::{FrameReader, ProtocolError};
use postgres_protocol::message::frontend as fe;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common;

/// Valid client messages (whole frames) to mutate.
fn valid_frames() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut b = BytesMut::new();
    fe::parse("s1", "SELECT $1::int", [23u32], &mut b).unwrap();
    out.push(b.split().to_vec());
    fe::bind(
        "p1",
        "s1",
        [1i16],
        [Some(&b"\0\0\0\x07"[..]), None],
        |v: Option<&[u8]>, buf: &mut BytesMut| match v {
            Some(v) => {
                buf.extend_from_slice(v);
                Ok(postgres_protocol::IsNull::No)
            }
            None => Ok(postgres_protocol::IsNull::Yes),
        },
        [1i16],
        &mut b,
    )
    .map_err(|_| ())
    .unwrap();
    out.push(b.split().to_vec());
    fe::describe(b'S', "s1", &mut b).unwrap();
    out.push(b.split().to_vec());
    fe::execute("p1", 10, &mut b).unwrap();
    out.push(b.split().to_vec());
    fe::query("SELECT 1", &mut b).unwrap();
    out.push(b.split().to_vec());
    fe::startup_message([("user", "app"), ("database", "db")], &mut b).unwrap();
    out.push(b.split().to_vec());
    out
}

/// Runs every decoder on `body` (results ignored: only panics matter).
fn decode_all(body: &[u8]) {
    let _ = Parse::decode(body);
    let _ = Bind::decode(body);
    let _ = Bind::statement_name(body);
    let _ = Target::decode(body);
    let _ = Execute::decode(body);
    let _ = query_text(body);
    let _ = Startup::decode(body);
}

/// Reads frames from `bytes` until an error; returns the frames read.
fn read_all(bytes: &[u8], max: usize) -> (usize, Option<ProtocolError>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut r = FrameReader::new(bytes, max);
        let mut n = 0;
        loop {
            match r.next().await {
                Ok(f) => {
                    assert!(f.data.len() <= max, "frame of {} > {max}", f.data.len());
                    decode_all(f.body());
                    n += 1;
                }
                Err(ProtocolError::Eof) => return (n, None),
                Err(e) => return (n, Some(e)),
            }
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn decoders_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        decode_all(&body);
    }

    #[test]
    fn mutated_messages_never_panic(
        which in 0usize..6,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in any::<usize>(),
    ) {
        let mut m = valid_frames()[which].clone();
        for (pos, byte) in edits {
            let i = pos % m.len();
            m[i] = byte;
        }
        m.truncate(cut % (m.len() + 1));
        decode_all(&m);
        if m.len() > 5 {
            decode_all(&m[5..]);
        }
        let _ = read_all(&m, 1 << 16);
    }

    #[test]
    fn frame_reader_refuses_lengths_past_the_limit(
        tag in any::<u8>(),
        len in any::<i32>(),
        rest in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = vec![tag];
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(&rest);
        let (n, err) = read_all(&bytes, 1024);
        if len < 4 {
            prop_assert!(matches!(err, Some(ProtocolError::Malformed(_))), "{err:?}");
        } else if len as usize + 1 > 1024 {
            // Refused from the header, before the body arrived.
            prop_assert_eq!(n, 0);
            prop_assert!(matches!(err, Some(ProtocolError::TooLarge { .. })), "{err:?}");
        }
    }

    #[test]
    fn frame_streams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = read_all(&bytes, 4096);
    }

    #[test]
    fn startup_phase_parsers_never_panic(s in ".{0,80}", raw in proptest::collection::vec(any::<u8>(), 0..120)) {
        let _ = pg_router::client::startup::parse_options(&s);
        let _ = pg_router::auth::users_file::parse(&s);
        let _ = Verifier::parse(&s);
        let text = String::from_utf8_lossy(&raw);
        let _ = pg_router::auth::users_file::parse(&text);
        let v = Verifier::parse(
            "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ).unwrap();
        for first in [raw.as_slice(), s.as_bytes(), b"n,,n=,r=abc".as_slice()] {
            if let Ok((ex, _)) = ServerExchange::start(Some(&v), [0; 16], first, &[1; 18]) {
                let _ = ex.finish(&raw);
            }
        }
    }
}

/// Panics anywhere in this process (router sessions run in it) outside
/// test code. Every integration test runs in this process: a failing
/// assertion of another test (located under `tests/`) fails that test and
/// is not counted here; this test's own test code fails it directly.
static PANICS: AtomicUsize = AtomicUsize::new(0);

/// True for a panic raised in test code (a file under `tests/`).
fn in_test_code(info: &std::panic::PanicHookInfo<'_>) -> bool {
    info.location()
        .is_some_and(|l| l.file().starts_with("tests/"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_router_survives_random_input() {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !in_test_code(info) {
            PANICS.fetch_add(1, Ordering::SeqCst);
        }
        prev(info);
    }));
    let dev = common::start(2, 4).await;
    let good = common::connect(&dev).await;
    good.batch_execute("CREATE TABLE f (id int PRIMARY KEY)")
        .await
        .unwrap();
    common::add_table(&dev, "f", "id", "int").await;
    let frames = valid_frames();
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let tags = b"PBDECHSQXdcfpF?\0\xff";
    let mut tasks = Vec::new();
    for case in 0..400u32 {
        // Half the cases start properly and then send garbage frames; the
        // other half send garbage in the startup phase.
        let mut bytes = Vec::new();
        if case % 2 == 0 {
            bytes.extend_from_slice(&frames[5]);
            for _ in 0..rng.usize(1..6) {
                let mut m = if rng.bool() {
                    frames[rng.usize(0..5)].clone()
                } else {
                    let mut m = vec![tags[rng.usize(0..tags.len())]];
                    let body: Vec<u8> = (0..rng.usize(0..40)).map(|_| rng.u8(..)).collect();
                    m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
                    m.extend_from_slice(&body);
                    m
                };
                for _ in 0..rng.usize(0..3) {
                    let i = rng.usize(0..m.len());
                    m[i] = rng.u8(..);
                }
                bytes.extend_from_slice(&m);
            }
            if rng.bool() {
                // A huge announced length: refused from the header.
                bytes.extend_from_slice(&[b'Q', 0x7f, 0xff, 0xff, 0xff]);
            }
        } else {
            let mut m = frames[5].clone();
            for _ in 0..rng.usize(1..4) {
                let i = rng.usize(0..m.len());
                m[i] = rng.u8(..);
            }
            m.truncate(rng.usize(1..=m.len()));
            bytes.extend_from_slice(&m);
        }
        let addr = dev.router.addr;
        tasks.push(tokio::spawn(async move {
            let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
                return;
            };
            let _ = s.write_all(&bytes).await;
            let _ = s.shutdown().await;
            let mut sink = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut sink)).await;
        }));
        if tasks.len() >= 50 {
            for t in tasks.drain(..) {
                t.await.unwrap();
            }
            // Well-behaved clients keep working throughout.
            good.query_one("SELECT count(*) FROM f", &[]).await.unwrap();
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let fresh = common::connect(&dev).await;
    fresh
        .batch_execute("INSERT INTO f (id) VALUES (1), (2)")
        .await
        .unwrap();
    let n: i64 = good
        .query_one("SELECT count(*) FROM f", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    assert_eq!(
        PANICS.load(Ordering::SeqCst),
        0,
        "a panic happened (see the output)"
    );
    dev.stop().await;
}
