//! The floor of a proxy built on tokio, for issue 19's instruction counts:
//! a protocol-unaware TCP forwarder (one `copy_bidirectional` task per
//! client, a fresh connection to the backend for each client) on a
//! current-thread runtime like a pg-router session worker. It parses
//! nothing, routes nothing and pools nothing, so its instructions per
//! query are what the runtime alone costs for one request/response
//! through a proxy: the part of pg-router's count no change to pg-router's
//! own code can remove. `benches/callgrind_fast_path.sh` runs it under
//! callgrind next to the router (`FLOOR=1`).
//!
//! Usage: `tokio_floor <listen port> <backend port> [time]` (127.0.0.1;
//! `time` enables tokio's time driver, as the router's workers have it).

use tokio::net::{TcpListener, TcpStream};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port = |i: usize| -> u16 {
        match args.get(i).and_then(|a| a.parse().ok()) {
            Some(p) => p,
            None => {
                eprintln!("usage: tokio_floor <listen port> <backend port> [time]");
                std::process::exit(2);
            }
        }
    };
    let (listen, backend) = (port(1), port(2));
    let mut rt = tokio::runtime::Builder::new_current_thread();
    rt.enable_io();
    if args.get(3).map(String::as_str) == Some("time") {
        rt.enable_time();
    }
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio_floor: runtime: {e}");
            std::process::exit(1);
        }
    };
    rt.block_on(async move {
        let l = match TcpListener::bind(("127.0.0.1", listen)).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("tokio_floor: bind {listen}: {e}");
                std::process::exit(1);
            }
        };
        eprintln!("tokio_floor is ready on {listen}");
        while let Ok((mut client, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(mut server) = TcpStream::connect(("127.0.0.1", backend)).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
}
