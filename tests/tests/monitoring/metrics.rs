//! `/metrics`: Prometheus text format checked with a parser, byte counters
//! that grow by exactly the bytes of a put and a get, and who may see it.

use crate::common::{curl, sample, scrape, SERIAL};
use std::process::Command;
use std::time::Duration;
use tests::cluster::Cluster;
use tests::procs::ProcFederation;
use tests::{pattern, with_timeout};

/// Families `docs/metrics.md` promises, with their types.
const FAMILIES: &[(&str, &str)] = &[
    ("renkei_host_up", "gauge"),
    ("renkei_host_last_heartbeat_timestamp_seconds", "gauge"),
    ("renkei_host_capacity_bytes", "gauge"),
    ("renkei_host_free_bytes", "gauge"),
    ("renkei_host_load1", "gauge"),
    ("renkei_host_received_bytes_total", "counter"),
    ("renkei_host_sent_bytes_total", "counter"),
    ("renkei_host_receive_bytes_per_second", "gauge"),
    ("renkei_host_send_bytes_per_second", "gauge"),
    ("renkei_host_problems", "gauge"),
    ("renkei_check_ok", "gauge"),
    ("renkei_check_duration_seconds", "gauge"),
    ("renkei_check_timestamp_seconds", "gauge"),
    ("renkei_path_rtt_seconds", "gauge"),
    ("renkei_path_throughput_bytes_per_second", "gauge"),
    ("renkei_netcheck_timestamp_seconds", "gauge"),
    ("renkei_replication_backlog_files", "gauge"),
    ("renkei_replication_backlog_bytes", "gauge"),
    ("renkei_replication_copies_total", "counter"),
    ("renkei_replication_failures_total", "counter"),
    ("renkei_pop_vms", "gauge"),
    ("renkei_events_total", "counter"),
    ("renkei_meta_start_timestamp_seconds", "gauge"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_byte_counters_grow_by_the_size_of_a_put() {
    let _one = SERIAL.lock().await;
    with_timeout(180, async {
        let fed = ProcFederation::up(2).await;
        let web = fed.state.web.clone().expect("status page");
        let before = scrape(&web);
        let (_, raw) = curl(&format!("{web}metrics"));
        for (name, kind) in FAMILIES {
            assert!(raw.contains(&format!("# TYPE {name} {kind}\n")), "{name} is a {kind}");
            assert!(before.docs.contains_key(*name), "{name} has HELP");
        }
        for host in ["pop1", "pop2"] {
            assert_eq!(sample(&before, "renkei_host_up", &[("host", host)]), Some(1.0), "{host} up");
        }
        let recv =
            |s: &prometheus_parse::Scrape, h: &str| sample(s, "renkei_host_received_bytes_total", &[("host", h)]);
        let sent = |s: &prometheus_parse::Scrape, h: &str| sample(s, "renkei_host_sent_bytes_total", &[("host", h)]);
        let (in1, in2) = (recv(&before, "pop1").expect("pop1 in"), recv(&before, "pop2").expect("pop2 in"));
        let out1 = sent(&before, "pop1").expect("pop1 out");

        // A put at site1 goes to pop1; its counter grows by exactly the size.
        let size = 3_000_017usize;
        let file = fed.dir().join("m.bin");
        std::fs::write(&file, pattern(size, 8)).expect("local file");
        fed.renkei_ok(None, &["put", file.to_str().expect("path"), "/m.bin"]);
        // (Looked at again at each line a process logs: pop1's heartbeats
        // answered among them.)
        let after = fed
            .wait_until(Duration::from_secs(10), "pop1's received bytes grow after the put", || async {
                let s = scrape(&web);
                match recv(&s, "pop1") {
                    Some(v) if v >= in1 + size as f64 => Ok(s),
                    v => Err(format!("pop1 received {v:?}")),
                }
            })
            .await;
        assert_eq!(recv(&after, "pop1"), Some(in1 + size as f64), "grew by exactly the file's size");
        assert_eq!(recv(&after, "pop2"), Some(in2), "pop2 received nothing");

        // A get at site2 reads pop1's replica: pop1's sent bytes grow by it.
        let back = fed.dir().join("m.back");
        fed.renkei_ok(Some("site2"), &["get", "/m.bin", back.to_str().expect("path")]);
        let after = fed
            .wait_until(Duration::from_secs(10), "pop1's sent bytes grow after the get", || async {
                let s = scrape(&web);
                match sent(&s, "pop1") {
                    Some(v) if v >= out1 + size as f64 => Ok(s),
                    v => Err(format!("pop1 sent {v:?}")),
                }
            })
            .await;
        assert_eq!(sent(&after, "pop1"), Some(out1 + size as f64));
        assert_eq!(std::fs::read(&back).expect("read back").len(), size);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_is_read_only_and_refused_outside_the_allowed_networks() {
    with_timeout(120, async {
        let open = Cluster::builder()
            .sites(1)
            .meta_config(|c| c.monitor.web = Some("127.0.0.1:0".parse().expect("addr")))
            .start()
            .await;
        let addr = open.meta_service().monitor.web_addr().expect("page served");
        let (code, body) = curl(&format!("http://{addr}/"));
        assert_eq!(code, 200);
        assert!(body.contains("<script src=\"/app.js\"></script>"), "the page's own script, no external assets");
        assert!(!body.contains("http://") && !body.contains("https://"), "no external assets: {body}");
        let (code, _) = curl(&format!("http://{addr}/app.js"));
        assert_eq!(code, 200);
        let post = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", &format!("http://{addr}/api/status")])
            .output()
            .expect("curl");
        assert_eq!(String::from_utf8_lossy(&post.stdout), "405", "read-only: no POST");
        open.shutdown().await;

        let closed = Cluster::builder()
            .sites(1)
            .meta_config(|c| {
                c.monitor.web = Some("127.0.0.1:0".parse().expect("addr"));
                c.monitor.allow = vec!["192.0.2.0/24".into()];
            })
            .start()
            .await;
        let addr = closed.meta_service().monitor.web_addr().expect("page served");
        for path in ["", "metrics", "api/status"] {
            let (code, _) = curl(&format!("http://{addr}/{path}"));
            assert_eq!(code, 403, "/{path} refused to a client outside `allow`");
        }
        closed.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_reports_from_the_vm_manager_show_in_the_status_and_metrics() {
    use fs_proto::identity::Role;
    use fs_proto::meta::{MetaCall, MetaRequest, MetaResponse};
    use fs_proto::monitor::{MonitorRequest, PopVms, VmSummary};
    with_timeout(120, async {
        let c = Cluster::builder()
            .sites(2)
            .meta_config(|c| {
                c.monitor.web = Some("127.0.0.1:0".parse().expect("addr"));
                c.admin_hosts = vec!["vpe".into()];
            })
            .start()
            .await;
        let report = vec![
            PopVms {
                pop: "pop1".into(),
                site: "site1".into(),
                alive: true,
                max_vms: 4,
                vms: vec![VmSummary { name: "web".into(), owner: "alice".into(), state: "Running".into() }],
            },
            PopVms { pop: "pop2".into(), site: "site2".into(), alive: false, max_vms: 2, vms: vec![] },
        ];
        let call = |req| MetaCall { cred: None, req: MetaRequest::Monitor(req) };
        // The VM manager reports with its host certificate (as `vpe serve` does).
        let mut cfg = c.client_config("alice", "site1");
        cfg.tls = tests::cluster::issue(c.ca(), "vpe", Role::Host, Some("site1"));
        let manager = fs_client::Client::connect(cfg).await.expect("manager client");
        let dialer = manager.data().dialer();
        let r = dialer
            .call::<_, MetaResponse>(
                &manager.meta().peer(),
                &call(MonitorRequest::ReportVms(report.clone())),
                Duration::from_secs(10),
            )
            .await;
        assert!(matches!(r, Ok(MetaResponse::Monitor(_))), "{r:?}");
        // A user may not.
        let alice = c.client("alice", "site1").await;
        let r = alice
            .data()
            .dialer()
            .call::<_, MetaResponse>(
                &alice.meta().peer(),
                &call(MonitorRequest::ReportVms(vec![])),
                Duration::from_secs(10),
            )
            .await;
        assert_eq!(r.err().and_then(|e| e.code()), Some(fs_proto::ErrorCode::NotPermitted));

        let st = fs_client::monitor::status(&alice).await.expect("status");
        let vms = st.vms.expect("the VM report is kept");
        assert_eq!(vms.reporter, "vpe");
        assert_eq!(vms.pops, report);
        let web = format!("http://{}/", c.meta_service().monitor.web_addr().expect("page"));
        let s = crate::common::scrape(&web);
        assert_eq!(sample(&s, "renkei_pop_vms", &[("host", "pop1")]), Some(1.0));
        assert_eq!(sample(&s, "renkei_pop_vms", &[("host", "pop2")]), Some(0.0));
        assert_eq!(sample(&s, "renkei_pop_vms_max", &[("host", "pop1")]), Some(4.0));
        c.shutdown().await;
    })
    .await
}
