//! `/metrics`: the federation's figures in the Prometheus text exposition
//! format (version 0.0.4). Names and units are stable and documented in
//! `docs/metrics.md`; every value is in base units (bytes, seconds).

use fs_proto::monitor::FederationStatus;
use std::fmt::Write;

/// The content type of the exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Writes metric families.
struct Exposition {
    out: String,
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
    }
}

/// A per-host family: name, type, help, value.
type HostFamily = (&'static str, &'static str, &'static str, fn(&fs_proto::monitor::HostStatus) -> f64);
/// A replication family: name, type, help, value.
type ReplFamily = (&'static str, &'static str, &'static str, fn(&fs_proto::monitor::ReplicationSummary) -> f64);
/// A per-check family: name, help, value.
type CheckFamily = (&'static str, &'static str, fn(&fs_proto::monitor::CheckResult) -> f64);

/// Render the status (and the event totals: errors, warnings, infos).
pub fn render(st: &FederationStatus, events: [u64; 3]) -> String {
    let mut e = Exposition { out: String::new() };
    let host_families: [HostFamily; 10] = [
        ("renkei_host_up", "gauge", "1 if the file server heartbeats within the bound, else 0.", |h| {
            h.info.alive as u8 as f64
        }),
        (
            "renkei_host_last_heartbeat_timestamp_seconds",
            "gauge",
            "When the meta server last heard the file server's heartbeat (Unix time, s; 0: never).",
            |h| h.info.last_heartbeat_ms as f64 / 1000.0,
        ),
        ("renkei_host_capacity_bytes", "gauge", "Spool capacity of the file server.", |h| h.info.capacity as f64),
        ("renkei_host_free_bytes", "gauge", "Free bytes in the file server's spool.", |h| h.info.free as f64),
        ("renkei_host_load1", "gauge", "One-minute load average of the file server's machine.", |h| {
            // /proc/loadavg has two decimals; keep f32's noise out.
            (h.info.load as f64 * 100.0).round() / 100.0
        }),
        (
            "renkei_host_received_bytes_total",
            "counter",
            "File bytes the file server received (writes and replica copies) since it started.",
            |h| h.info.bytes_in as f64,
        ),
        (
            "renkei_host_sent_bytes_total",
            "counter",
            "File bytes the file server sent (reads and replica copies) since it started.",
            |h| h.info.bytes_out as f64,
        ),
        (
            "renkei_host_receive_bytes_per_second",
            "gauge",
            "File bytes received per second over the last few seconds.",
            |h| h.in_bytes_per_s as f64,
        ),
        ("renkei_host_send_bytes_per_second", "gauge", "File bytes sent per second over the last few seconds.", |h| {
            h.out_bytes_per_s as f64
        }),
        ("renkei_host_problems", "gauge", "Problems the file server reports about itself (failed checks too).", |h| {
            h.info.problems.len() as f64
        }),
    ];
    for (name, kind, help, f) in host_families {
        e.family(name, kind, help);
        for h in &st.hosts {
            e.sample(name, &[("host", &h.info.host), ("site", &h.info.site)], f(h));
        }
    }

    let check_families: [CheckFamily; 3] = [
        ("renkei_check_ok", "1 if the service check passed in its last round, else 0.", |c| c.ok as u8 as f64),
        ("renkei_check_duration_seconds", "How long the service check took in its last round.", |c| {
            c.duration_us as f64 / 1e6
        }),
        ("renkei_check_timestamp_seconds", "When the service check last ran (Unix time, s).", |c| {
            c.at_ms as f64 / 1000.0
        }),
    ];
    for (name, help, f) in check_families {
        e.family(name, "gauge", help);
        for h in &st.hosts {
            for c in &h.checks {
                e.sample(name, &[("host", &h.info.host), ("site", &h.info.site), ("check", &c.name)], f(c));
            }
        }
    }

    e.family("renkei_path_rtt_seconds", "gauge", "Smallest request round trip between two file servers (netcheck).");
    let paths = st.matrix.as_ref().map(|m| m.paths.as_slice()).unwrap_or_default();
    for p in paths {
        if let Some(us) = p.rtt_us {
            e.sample("renkei_path_rtt_seconds", &path_labels(p), us as f64 / 1e6);
        }
    }
    e.family(
        "renkei_path_throughput_bytes_per_second",
        "gauge",
        "Bytes per second from one file server to another (netcheck, pulled by the receiver).",
    );
    for p in paths {
        if let Some(r) = p.rate_bytes_per_s {
            e.sample("renkei_path_throughput_bytes_per_second", &path_labels(p), r as f64);
        }
    }
    e.family("renkei_netcheck_timestamp_seconds", "gauge", "When the last netcheck finished (Unix time, s; 0: never).");
    e.sample(
        "renkei_netcheck_timestamp_seconds",
        &[],
        st.matrix.as_ref().map(|m| m.finished_ms as f64 / 1000.0).unwrap_or(0.0),
    );

    let repl: [ReplFamily; 9] = [
        ("renkei_replication_backlog_files", "gauge", "Files short of their copy count.", |r| r.backlog_files as f64),
        ("renkei_replication_backlog_bytes", "gauge", "Bytes still to copy for them.", |r| r.backlog_bytes as f64),
        ("renkei_replication_stuck_files", "gauge", "Files that cannot reach their copy count now.", |r| {
            r.stuck_files as f64
        }),
        ("renkei_replication_surplus_files", "gauge", "Files with more replicas than wanted.", |r| {
            r.surplus_files as f64
        }),
        ("renkei_replication_in_flight", "gauge", "Copies being made now.", |r| r.in_flight as f64),
        ("renkei_replication_copies_total", "counter", "Copies made since the meta server started.", |r| {
            r.copies_done as f64
        }),
        ("renkei_replication_copied_bytes_total", "counter", "Bytes copied since the meta server started.", |r| {
            r.bytes_copied as f64
        }),
        ("renkei_replication_failures_total", "counter", "Copies that failed since the meta server started.", |r| {
            r.copies_failed as f64
        }),
        ("renkei_replication_hosts_lost", "gauge", "Hosts down longer than the grace period.", |r| {
            r.hosts_lost.len() as f64
        }),
    ];
    for (name, kind, help, f) in repl {
        e.family(name, kind, help);
        if let Some(r) = &st.replication {
            e.sample(name, &[], f(r));
        }
    }

    e.family("renkei_pop_vms", "gauge", "VMs on a PoP, as the VM manager last reported them.");
    let pops = st.vms.as_ref().map(|v| v.pops.as_slice()).unwrap_or_default();
    for p in pops {
        e.sample("renkei_pop_vms", &[("host", &p.pop), ("site", &p.site)], p.vms.len() as f64);
    }
    e.family("renkei_pop_vms_max", "gauge", "VMs a PoP accepts.");
    for p in pops {
        e.sample("renkei_pop_vms_max", &[("host", &p.pop), ("site", &p.site)], p.max_vms as f64);
    }

    e.family("renkei_events_total", "counter", "Errors, warnings and recoveries recorded for the status page.");
    for (level, n) in ["error", "warning", "info"].iter().zip(events) {
        e.sample("renkei_events_total", &[("level", level)], n as f64);
    }
    e.family("renkei_meta_start_timestamp_seconds", "gauge", "When the meta server started (Unix time, s).");
    e.sample("renkei_meta_start_timestamp_seconds", &[], st.meta_started_ms as f64 / 1000.0);
    e.out
}

fn path_labels(p: &fs_proto::monitor::PathMeasurement) -> [(&'static str, &str); 4] {
    [("from_host", &p.from.host), ("from_site", &p.from.site), ("to_host", &p.to.host), ("to_site", &p.to.site)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use fs_proto::monitor::{CheckResult, HostStatus, NetMatrix, PathMeasurement};
    use fs_proto::{HostInfo, ServerLoc};

    fn status() -> FederationStatus {
        let info = HostInfo {
            host: "pop\"1".into(),
            site: "site\\1".into(),
            addr: "127.0.0.1:7471".parse().expect("addr"),
            capacity: 1 << 40,
            free: 1 << 39,
            load: 0.25,
            last_heartbeat_ms: 1_700_000_000_123,
            alive: true,
            replicas: 0,
            problems: vec!["x\ny".into()],
            bytes_in: 12345,
            bytes_out: 0,
            draining: false,
        };
        let loc = |h: &str| ServerLoc { host: h.into(), site: "s".into(), addr: "127.0.0.1:1".parse().expect("addr") };
        FederationStatus {
            at_ms: 1,
            meta_started_ms: 1_700_000_000_000,
            host_timeout_ms: 5000,
            refresh_ms: 1000,
            hosts: vec![HostStatus {
                info,
                in_bytes_per_s: 10,
                out_bytes_per_s: 0,
                checks: vec![CheckResult {
                    name: "write".into(),
                    ok: false,
                    detail: "ro".into(),
                    duration_us: 1500,
                    at_ms: 5,
                }],
                checks_at_ms: 5,
            }],
            matrix: Some(NetMatrix {
                started_ms: 1,
                finished_ms: 2000,
                requested_by: "alice".into(),
                paths: vec![PathMeasurement {
                    from: loc("a"),
                    to: loc("b"),
                    rtt_us: Some(4300),
                    rtt_median_us: Some(4400),
                    rate_bytes_per_s: Some(120_000_000),
                    bytes: 1,
                    at_ms: 1,
                    error: None,
                }],
            }),
            replication: Some(Default::default()),
            vms: None,
            events: Vec::new(),
        }
    }

    #[test]
    fn parses_as_prometheus_text_with_escaped_labels() {
        let text = render(&status(), [2, 0, 1]);
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("valid exposition format");
        let find = |name: &str| scrape.samples.iter().find(|s| s.metric == name).unwrap_or_else(|| panic!("{name}"));
        let up = find("renkei_host_up");
        // The format escapes `"` and `\` in label values (prometheus-parse
        // hands them back as written).
        assert!(text.contains(r#"renkei_host_up{host="pop\"1",site="site\\1"} 1"#), "{text}");
        assert_eq!(up.labels.get("host"), Some(r#"pop\"1"#));
        assert!(
            matches!(find("renkei_host_received_bytes_total").value, prometheus_parse::Value::Counter(v) if v == 12345.0)
        );
        assert!(matches!(find("renkei_check_ok").value, prometheus_parse::Value::Gauge(v) if v == 0.0));
        assert!(
            matches!(find("renkei_check_duration_seconds").value, prometheus_parse::Value::Gauge(v) if v == 0.0015)
        );
        assert!(matches!(find("renkei_path_rtt_seconds").value, prometheus_parse::Value::Gauge(v) if v == 0.0043));
        assert!(
            matches!(find("renkei_path_throughput_bytes_per_second").value, prometheus_parse::Value::Gauge(v) if v == 1.2e8)
        );
        assert_eq!(find("renkei_path_rtt_seconds").labels.get("to_host"), Some("b"));
        let errors =
            scrape.samples.iter().find(|s| s.metric == "renkei_events_total" && s.labels.get("level") == Some("error"));
        assert!(matches!(errors.map(|s| &s.value), Some(prometheus_parse::Value::Counter(v)) if *v == 2.0));
        // Every family has HELP and TYPE once.
        assert_eq!(text.matches("# TYPE renkei_host_up gauge").count(), 1);
        assert!(scrape.docs.contains_key("renkei_replication_backlog_files"));
    }
}
