//! The file server's side of `renkei netcheck`: on the meta server's order,
//! measure the path from each peer to this server (request round trips
//! with `Ping`, throughput by pulling probe bytes), and send probe bytes to
//! peers that pull them. Probe bytes are not file bytes: they do not count
//! in the heartbeat's byte counters.

use crate::node::Ctx;
use bytes::Bytes;
use fs_proto::endpoint::{client_config, explain_connection_error, TlsIdentity};
use fs_proto::error::quic_codes;
use fs_proto::frame::write_msg;
use fs_proto::monitor::{
    MeasureOrder, PathMeasurement, ProbeRequest, ProbeResponse, MAX_PINGS, MAX_SOURCE_BYTES, MAX_TRANSFER_MS,
};
use fs_proto::rpc::{call, reply, request};
use fs_proto::server::{ServerReply, ServerRequest, ServerResponse};
use fs_proto::{ErrorCode, Identity, RemoteError, Role, ServerLoc, Timestamp};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn, Instrument};

/// Receive windows of a measuring connection (see [`probe_connection`]):
/// enough for 120 MB/s at 30 ms, or 1 GB/s at 4 ms.
const PROBE_WINDOW: u64 = 4 << 20;
/// Bound on connecting to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one ping.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// The first transfer of a path; later ones are sized from its rate.
const FIRST_TRANSFER: u64 = 1 << 20;
/// Transfers per path at most (each sized to come closer to the wanted time).
const MAX_ROUNDS: usize = 8;
/// Transfers of the wanted length per path.
const FULL_ROUNDS: usize = 2;
/// A transfer shorter than this (after its first piece) is too short to time.
const MIN_TIMED: Duration = Duration::from_millis(100);
/// Probe bytes are sent from one buffer of this size.
const SOURCE_BUF: usize = 1 << 20;

/// Serve a probe request.
pub async fn serve(ctx: Arc<Ctx>, peer: &Identity, req: ProbeRequest, mut send: quinn::SendStream) {
    match req {
        ProbeRequest::Measure(order) => {
            let reply: ServerReply = if peer.role == Role::Host && peer.name == ctx.meta.peer().name {
                Ok(ServerResponse::Probe(ProbeResponse::Measured(measure(&ctx, order).await)))
            } else {
                Err(RemoteError::new(ErrorCode::NotPermitted, "only the meta server orders measurements"))
            };
            let _ = write_msg(&mut send, &reply).await;
            let _ = send.finish();
        }
        ProbeRequest::Source { bytes } => {
            if peer.role != Role::Host {
                let e = RemoteError::new(ErrorCode::NotPermitted, "probe bytes are for file servers");
                let _ = write_msg(&mut send, &ServerReply::Err(e)).await;
                let _ = send.finish();
                return;
            }
            let len = bytes.min(MAX_SOURCE_BYTES);
            if write_msg(&mut send, &ServerReply::Ok(ServerResponse::Probe(ProbeResponse::Sourcing { len })))
                .await
                .is_err()
            {
                return;
            }
            let buf = source_buffer();
            let mut left = len;
            while left > 0 {
                let n = left.min(buf.len() as u64);
                if send.write_chunk(buf.slice(..n as usize)).await.is_err() {
                    return;
                }
                left -= n;
            }
            let _ = send.finish();
        }
    }
}

/// Incompressible probe bytes, made once.
fn source_buffer() -> Bytes {
    static BUF: OnceLock<Bytes> = OnceLock::new();
    BUF.get_or_init(|| {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut v = Vec::with_capacity(SOURCE_BUF);
        while v.len() < SOURCE_BUF {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes());
        }
        Bytes::from(v)
    })
    .clone()
}

fn me(ctx: &Ctx) -> ServerLoc {
    ServerLoc {
        host: ctx.identity.name.clone(),
        site: ctx.identity.site.clone().unwrap_or_default(),
        addr: ctx.advertise,
    }
}

/// Measure the path from every peer to this server, one after another.
async fn measure(ctx: &Arc<Ctx>, order: MeasureOrder) -> Vec<PathMeasurement> {
    let pings = order.pings.clamp(1, MAX_PINGS);
    let transfer = Duration::from_millis(order.transfer_ms.min(MAX_TRANSFER_MS) as u64);
    let mut out = Vec::new();
    for from in order.peers {
        let span = tracing::info_span!("measure", from = %from.host);
        let m = measure_one(ctx, &from, pings, transfer).instrument(span).await;
        info!(
            rtt_us = m.rtt_us,
            rate_mb_s = m.rate_bytes_per_s.map(|r| r as f64 / 1e6),
            error = m.error.as_deref(),
            "path measured"
        );
        out.push(m);
    }
    out
}

async fn measure_one(ctx: &Arc<Ctx>, from: &ServerLoc, pings: u32, transfer: Duration) -> PathMeasurement {
    let mut m = PathMeasurement {
        from: from.clone(),
        to: me(ctx),
        rtt_us: None,
        rtt_median_us: None,
        rate_bytes_per_s: None,
        bytes: 0,
        at_ms: Timestamp::now().as_millis(),
        error: None,
    };
    let conn = match probe_connection(ctx, from).await {
        Ok(c) => c,
        Err(e) => {
            m.error = Some(e);
            return m;
        }
    };
    measure_on(ctx, &conn, from, pings, transfer, &mut m).await;
    conn.close(quic_codes::OK, b"measured");
    m
}

/// A connection of its own for measuring, with receive windows of
/// [`PROBE_WINDOW`]: a sender in slow start can overshoot the path by at
/// most that much, so the loss burst where it ends stays within what quinn
/// reassembles (a burst over 24 MiB windows leaves more gaps than quinn
/// keeps and it drops the connection).
async fn probe_connection(ctx: &Ctx, to: &ServerLoc) -> Result<quinn::Connection, String> {
    let tls = TlsIdentity::load(&ctx.config.tls).map_err(|e| format!("own identity: {e}"))?;
    let mut tuning = ctx.config.transport.clone();
    tuning.stream_window = PROBE_WINDOW;
    tuning.connection_window = PROBE_WINDOW;
    let cfg = client_config(&tls, &tuning).map_err(|e| format!("probe transport: {e}"))?;
    let connecting = ctx
        .peers
        .endpoint()
        .connect_with(cfg, to.addr, &to.host)
        .map_err(|e| format!("cannot dial {}: {e}", to.host))?;
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!("cannot connect to {}: {}", to.host, explain_connection_error(&e))),
        Err(_) => Err(format!("no answer from {} within {} s", to.host, CONNECT_TIMEOUT.as_secs())),
    }
}

async fn measure_on(
    ctx: &Ctx,
    conn: &quinn::Connection,
    from: &ServerLoc,
    pings: u32,
    transfer: Duration,
    m: &mut PathMeasurement,
) {
    // Round trips: the first ping also warms the connection up.
    let mut rtts = Vec::with_capacity(pings as usize);
    for _ in 0..=pings {
        let t = Instant::now();
        match call::<_, ServerResponse>(conn, &from.host, &ServerRequest::Ping, PING_TIMEOUT).await {
            Ok(ServerResponse::Pong { .. }) => rtts.push(t.elapsed().as_micros() as u64),
            Ok(other) => {
                m.error = Some(format!("unexpected answer to a ping: {other:?}"));
                return;
            }
            Err(e) => {
                m.error = Some(format!("ping failed: {e}"));
                return;
            }
        }
    }
    rtts.remove(0);
    rtts.sort_unstable();
    m.rtt_us = rtts.first().copied();
    m.rtt_median_us = rtts.get(rtts.len() / 2).copied();
    if transfer.is_zero() {
        return;
    }
    // Throughput: transfers on the same connection (its congestion window
    // stays open), each sized from the last rate to take about `transfer`;
    // two of that length, and the best rate of those long enough to time
    // (other work on the machine can only slow a transfer down, never
    // speed it past the path).
    let mut want = FIRST_TRANSFER;
    let mut full = 0;
    let mut retry: Option<quinn::Connection> = None;
    for round in 0..MAX_ROUNDS {
        let bound = transfer * 4 + Duration::from_secs(10);
        let mut got = pull(retry.as_ref().unwrap_or(conn), &from.host, want, bound).await;
        if let Err(e) = &got {
            if retry.is_none() {
                // One transient failure (a lost connection) gets a fresh
                // connection and a second try; a second failure is reported.
                warn!("transfer from {} failed, retrying once on a new connection: {e}", from.host);
                if let Ok(c) = probe_connection(ctx, from).await {
                    got = pull(&c, &from.host, want, bound).await;
                    retry = Some(c);
                }
            }
        }
        match got {
            Ok(t) => {
                m.bytes += t.bytes;
                if t.steady >= MIN_TIMED || m.rate_bytes_per_s.is_none() {
                    m.rate_bytes_per_s = Some(m.rate_bytes_per_s.unwrap_or(0).max(t.rate()));
                }
                debug!(round, bytes = t.bytes, secs = t.steady.as_secs_f64(), rate = t.rate(), "transfer done");
                if t.total >= transfer.mul_f64(0.75) || want >= MAX_SOURCE_BYTES {
                    full += 1;
                    if full >= FULL_ROUNDS {
                        break;
                    }
                    continue;
                }
                let next = (t.rate() as f64 * transfer.as_secs_f64()) as u64;
                want = next.clamp(want * 2, (want * 64).min(MAX_SOURCE_BYTES));
            }
            Err(e) => {
                m.error = Some(format!("transfer failed: {e}"));
                break;
            }
        }
    }
    if let Some(c) = retry {
        c.close(quic_codes::OK, b"measured");
    }
}

/// One timed transfer.
struct Transfer {
    /// Bytes received.
    bytes: u64,
    /// Bytes after the first piece, and the time they took to arrive.
    steady_bytes: u64,
    steady: Duration,
    /// From the request to the last byte.
    total: Duration,
}

impl Transfer {
    fn rate(&self) -> u64 {
        let secs = self.steady.as_secs_f64();
        if secs <= 0.0 {
            0
        } else {
            (self.steady_bytes as f64 / secs) as u64
        }
    }
}

/// Pull `bytes` probe bytes from a peer. The rate counts from the first
/// piece's arrival to the last's, so the request's round trip is not in it.
async fn pull(conn: &quinn::Connection, peer: &str, bytes: u64, bound: Duration) -> Result<Transfer, String> {
    let start = Instant::now();
    let fut = async {
        let (mut send, mut recv) =
            request(conn, &ServerRequest::Probe(ProbeRequest::Source { bytes })).await.map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        let len = match reply::<ServerResponse>(&mut recv).await.map_err(|e| e.to_string())? {
            Ok(ServerResponse::Probe(ProbeResponse::Sourcing { len })) => len,
            Ok(other) => return Err(format!("unexpected answer: {other:?}")),
            Err(e) => return Err(e.to_string()),
        };
        let mut got = 0u64;
        let mut first: Option<(Instant, u64)> = None;
        while got < len {
            let chunk = recv.read_chunk(usize::MAX, true).await.map_err(|e| match e {
                quinn::ReadError::ConnectionLost(c) => format!("connection lost: {c}"),
                other => other.to_string(),
            })?;
            match chunk {
                Some(c) => {
                    got += c.bytes.len() as u64;
                    first.get_or_insert((Instant::now(), got));
                }
                None => break,
            }
        }
        if got != len {
            return Err(format!("{peer} sent {got} of {len} bytes"));
        }
        let end = Instant::now();
        let (t0, b0) = first.unwrap_or((end, got));
        Ok(Transfer { bytes: got, steady_bytes: got - b0, steady: end - t0, total: end - start })
    };
    match tokio::time::timeout(bound, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("no end within {} s", bound.as_secs())),
    }
}
