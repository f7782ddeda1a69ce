//! The markdown report of `renkei-bench wanfs`: every ratio, the link, the
//! dataset factor and the emulator's own limit.

use crate::wanfs_bench::WanFsReport;
use crate::wanfs_ls::Listing;

fn kinds(l: &Listing) -> String {
    if l.requests.is_empty() {
        return "none".into();
    }
    l.requests.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
}

fn counts(m: &std::collections::BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    let meta: u64 = m.iter().filter(|(k, _)| fs_client::counters::is_meta_request(k)).map(|(_, v)| v).sum();
    let each = m
        .iter()
        .filter(|(k, _)| !k.ends_with("bytes_out") && !k.ends_with("bytes_in"))
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("{meta} metadata requests ({each})")
}

impl WanFsReport {
    /// MB/s of a copy (10^6 bytes per second).
    fn mb_s(&self, secs: f64) -> f64 {
        self.bytes as f64 / 1e6 / secs.max(1e-9)
    }

    /// The report.
    pub fn markdown(&self) -> String {
        let link_mb_s = self.rate_mbit / 8.0;
        let mut s = format!(
            "# renkei-bench wanfs, {}\n\n\
             - Emulated WAN: sites a (meta server), b and c (a file server each); every pair {} ms RTT, \
             {} Mbit/s ({:.0} MB/s) each direction, MTU {}.\n\
             - Dataset: the Montage-like set at factor {}: {} files, {:.3} GB (6,756 files / ~14 GB at factor 1).\n\
             - Machine: {} cores, load average {} before, {} after (other work shares the cores).\n",
            self.started,
            self.rtt_ms,
            self.rate_mbit,
            link_mb_s,
            self.mtu,
            self.scale,
            self.files,
            self.bytes as f64 / 1e9,
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            self.load.0,
            self.load.1,
        );
        match self.limit {
            Some((mtu, bps)) => {
                s += &format!(
                    "- The emulator's own limit, measured in this run: {:.2} Gbit/s (one iperf3 TCP stream, MTU {mtu}, \
                     no delay, no rate limit), {:.1}x the link rate.\n",
                    bps / 1e9,
                    bps / 1e6 / self.rate_mbit
                )
            }
            None => s += "- The emulator's own limit: not measured in this run (see bench/README.md).\n",
        }
        let tar = self.copies.first().map(|c| self.mb_s(c.secs)).unwrap_or(f64::NAN);
        let sshfs = self.copies.iter().find(|c| c.name.contains("sshfs")).map(|c| self.mb_s(c.secs));
        s += &format!(
            "\n## The set copied across {} ms RTT\n\n\
             | work | s | MB/s | of tar | of sshfs | clock stops when |\n|---|---|---|---|---|---|\n",
            self.rtt_ms
        );
        for c in &self.copies {
            let v = self.mb_s(c.secs);
            let of_sshfs = match sshfs {
                Some(x) if c.name.contains("renkei") => format!("{:.2}x", v / x),
                _ => "-".into(),
            };
            s += &format!(
                "| {} | {:.1} | {:.0} | {:.0} % | {} | {} |\n",
                c.name,
                c.secs,
                v,
                100.0 * v / tar,
                of_sshfs,
                c.ends
            );
        }
        let with_counts: Vec<&crate::wanfs_bench::Copy> = self.copies.iter().filter(|c| c.requests.is_some()).collect();
        if !with_counts.is_empty() {
            s += "\nRequests each renkei mount sent (its own counters, logged at unmount):\n\n";
            for c in with_counts {
                let r = c.requests.as_ref().map(counts).unwrap_or_default();
                s += &format!("- {}: {r}\n", c.name);
            }
        }
        if let Some(same) = self.read_back_identical {
            s += &format!(
                "\nThe set copied out at c is {} to the source (`diff -r`).\n",
                if same { "identical" } else { "NOT identical" }
            );
        }
        if let Some(ls) = &self.ls {
            let rtt = ls.rtt_ms / 1e3;
            s += &format!(
                "\n## `ls -l` of a {}-entry directory, {} ms RTT, from a fresh mount at c\n\n\
                 | | waited for meta, ms | in RTTs | wall ms | metadata requests | requests by kind |\n\
                 |---|---|---|---|---|---|\n\
                 | cold | {:.1} | **{:.1}** | {:.0} | {} | {} |\n| warm | {:.1} | {:.1} | {:.0} | {} | {} |\n\n\
                 \"Waited\" is the time the mount spent waiting for the meta server's replies (the target: at \
                 most 5 RTT cold). The wall time adds `ls` itself and the kernel's work: one FUSE request per \
                 entry for its attributes and one for its security label, answered by the mount from its \
                 cache (the warm row shows that part alone).\n",
                ls.entries,
                ls.rtt_ms,
                ls.cold.waited_secs * 1e3,
                ls.cold.waited_secs / rtt,
                ls.cold.secs * 1e3,
                ls.cold.meta_requests(),
                kinds(&ls.cold),
                ls.warm.waited_secs * 1e3,
                ls.warm.waited_secs / rtt,
                ls.warm.secs * 1e3,
                ls.warm.meta_requests(),
                kinds(&ls.warm),
            );
        }
        if let Some(b) = &self.big {
            s += &format!(
                "\n{}\nput: client at b, file server at a; get: back to b. Default settings (no tuning, no sysctl).\n",
                b.markdown().replacen("## ", "## Large file: ", 1)
            );
        }
        if !self.skipped.is_empty() {
            s += &format!("\nSkipped in this run: {}.\n", self.skipped.join("; "));
        }
        s
    }
}
