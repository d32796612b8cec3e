//! What the benchmarks share: shell through plexburst's `remote::local`, a free port, `rclone serve
//! s3` on loopback, and a TCP proxy that delays each request and can cap the bandwidth.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plexburst::remote::local::Local;
use plexburst::remote::{Cmd, Remote};

pub fn sh(script: &str) -> String {
    Local::new()
        .run(&Cmd::new(script).timeout(Duration::from_secs(4 * 3600)))
        .unwrap_or_else(|e| panic!("{e}"))
        .stdout_str()
}

pub fn timed(script: &str) -> f64 {
    let t = Instant::now();
    sh(script);
    t.elapsed().as_secs_f64()
}

pub fn q(s: &str) -> String {
    plexburst::remote::quote(s)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A TCP proxy that holds each new request (the first bytes a client sends after the server last
/// spoke, or on a new connection) for `delay` before forwarding; bodies stream undelayed.
pub fn delay_proxy(upstream: u16, delay: Duration) -> u16 {
    capped_proxy(upstream, delay, None)
}

/// As `delay_proxy`, with the server-to-client bytes of all connections together held to
/// `bytes_per_sec` (a token bucket): the instance's link to the object store.
pub fn capped_proxy(upstream: u16, delay: Duration, bytes_per_sec: Option<u64>) -> u16 {
    let bucket = bytes_per_sec.map(|r| Arc::new(Bucket::new(r)));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            // true: the next client bytes start a new request.
            let turn = Arc::new(AtomicBool::new(true));
            let (c2, s2, t2) = (
                client.try_clone().unwrap(),
                server.try_clone().unwrap(),
                turn.clone(),
            );
            std::thread::spawn(move || pump(c2, s2, Some((t2, delay))));
            let cap = bucket.clone();
            std::thread::spawn(move || pump_back(server, client, turn, cap));
        }
    });
    port
}

fn pump(mut from: TcpStream, mut to: TcpStream, delay: Option<(Arc<AtomicBool>, Duration)>) {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some((turn, d)) = &delay
            && turn.swap(false, Ordering::SeqCst)
        {
            std::thread::sleep(*d); // the simulated request latency
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn pump_back(
    mut from: TcpStream,
    mut to: TcpStream,
    turn: Arc<AtomicBool>,
    cap: Option<Arc<Bucket>>,
) {
    // Small reads under a cap, so one connection cannot take a second's worth at once.
    let mut buf = vec![0u8; if cap.is_some() { 64 * 1024 } else { 256 * 1024 }];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(b) = &cap {
            b.take(n as u64);
        }
        turn.store(true, Ordering::SeqCst);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// `rclone serve s3` over `root`, detached; returns its pid.
/// A token bucket shared by every connection of a capped proxy.
pub struct Bucket {
    rate: u64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(rate: u64) -> Bucket {
        Bucket {
            rate,
            state: Mutex::new((0.0, Instant::now())),
        }
    }

    /// Wait until `n` bytes may pass (burst: a tenth of a second's worth).
    fn take(&self, n: u64) {
        let wait = {
            let mut s = self.state.lock().unwrap();
            let now = Instant::now();
            let burst = self.rate as f64 / 10.0;
            let tokens =
                (s.0 + now.duration_since(s.1).as_secs_f64() * self.rate as f64).min(burst);
            let left = tokens - n as f64;
            *s = (left, now);
            if left < 0.0 {
                Duration::from_secs_f64(-left / self.rate as f64)
            } else {
                Duration::ZERO
            }
        };
        if !wait.is_zero() {
            std::thread::sleep(wait); // the link's pace, not a wait for a condition
        }
    }
}

pub fn serve_s3(root: &Path, port: u16) -> u32 {
    serve_s3_at(root, port, 0)
}

/// As `serve_s3`, at this `nice` level: a server that stands for another machine (the object
/// store) runs at 19, so the CPU it takes on this box is not taken from the instance's work.
pub fn serve_s3_at(root: &Path, port: u16, nice: i32) -> u32 {
    let out = sh(&format!(
        "RCLONE_AUTH_KEY='\"bak,bsk\"' setsid nohup nice -n {nice} rclone serve s3 --config /dev/null --addr 127.0.0.1:{port} {} </dev/null >/dev/null 2>&1 & echo $!",
        q(&root.display().to_string())
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "rclone serve s3 did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    out.trim().parse().unwrap()
}

pub fn user_conf(dir: &Path, port: u16) -> PathBuf {
    let p = dir.join("user.conf");
    std::fs::write(
        &p,
        format!("[s3]\ntype = s3\nprovider = Other\naccess_key_id = bak\nsecret_access_key = bsk\nendpoint = http://127.0.0.1:{port}\n"),
    )
    .unwrap();
    p
}
