//! The markdown form of [`super::PaperReport`], and the clock and load it records.

use super::PaperReport;
use std::fmt::Write;
use std::process::Command;

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').take(3).collect::<Vec<_>>().join(" ")
}

/// Now, as `YYYY-MM-DD HH:MM UTC`.
pub fn now_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}")).unwrap_or_else(|| "-".into())
}

fn pct(v: Option<f64>) -> String {
    v.map(|v| format!("{:.0} %", v * 100.0)).unwrap_or_else(|| "-".into())
}

impl PaperReport {
    /// The report as markdown: what was scaled, the machine's load, the emulator's limit, then
    /// Table 4 and Figure 6 with the paper's figures beside renkei's and the baselines'.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# The RENKEI-PoP paper on the emulated topology (`renkei-bench paper`, {})\n", self.mode);
        let _ = writeln!(
            s,
            "Run of {}. Topology `renkei2011` at MTU {}: every link at the paper's Table 4 rate (after \
             tuning) x **{}**, because this machine cannot forward the paper's 8.96 Gbit/s; the \
             paper's figures below are printed unscaled beside the scaled link. Load average (1, 5, \
             15 min) {} before, {} after; other work may share the cores. Emulator's own limit (one \
             TCP stream, no delay, no rate limit, MTU {}): {}.\n",
            self.started,
            self.mtu,
            self.scale,
            self.load.0,
            self.load.1,
            self.mtu,
            self.emulator_limit_mbit.map(|m| format!("{m:.0} Mbit/s")).unwrap_or_else(|| "not measured".into())
        );
        self.table4_md(&mut s);
        self.fig6_md(&mut s);
        let _ = writeln!(s, "## Not measured\n");
        for n in &self.notes {
            let _ = writeln!(s, "- {n}");
        }
        s
    }

    fn table4_md(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "## Table 4: directed paths, MB/s\n\nrenkei: the file server at `to` pulls probe bytes from \
             the one at `from` over QUIC (`renkei netcheck`, {} s per path). TCP: one iperf3 stream, \
             kernel defaults, {} s. Link: the emulated rate (IP bytes; TCP payload is at most ~96.5 % \
             of it at MTU 1500).\n\n\
             | from | to | paper after (before) | link | renkei | renkei of link | TCP untuned | TCP of link | renkei RTT ms |\n\
             |---|---|---|---|---|---|---|---|---|",
            self.table4_secs.0, self.table4_secs.1
        );
        for r in &self.table4 {
            let _ = writeln!(
                s,
                "| {} | {} | {:.0} ({:.0}) | {:.1} | {} | {} | {} | {} | {} |",
                r.from,
                r.to,
                r.paper_mb_s,
                r.paper_before_mb_s,
                r.link_mb_s,
                opt(r.renkei_mb_s, 1),
                pct(r.renkei_of_link()),
                opt(r.tcp_untuned_mb_s, 1),
                pct(r.tcp_untuned_mb_s.map(|t| t / r.link_mb_s)),
                opt(r.renkei_rtt_ms, 2),
            );
        }
        let ratios: Vec<f64> = self.table4.iter().filter_map(|r| r.renkei_of_link()).collect();
        if !ratios.is_empty() {
            let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
            let at90 = ratios.iter().filter(|r| **r >= 0.9).count();
            let _ = writeln!(
                s,
                "\nrenkei of link: lowest {:.0} %, mean {:.0} %; {at90} of {} paths at 90 % or more.",
                min * 100.0,
                mean * 100.0,
                ratios.len()
            );
        }
        for r in self.table4.iter().filter(|r| r.error.is_some()) {
            let _ = writeln!(s, "- {} -> {}: {}", r.from, r.to, r.error.as_deref().unwrap_or_default());
        }
        s.push('\n');
    }

    fn fig6_md(&self, s: &mut String) {
        let Some(d) = &self.fig6_dataset else { return };
        let _ = writeln!(
            s,
            "## Figure 6: the Montage-like set copied to titech1, MB/s\n\nDataset factor {} of the \
             paper's 6,756 files / ~14 GB: {} files, {:.2} GB. Meta server (and Gfarm's gfmd) at \
             titech1. tar: one tar stream over one TCP connection, untarred and synced at titech1. \
             rep: `renkei rep -D titech1` (bundled). mount: `cp -r` out of a fresh mount at titech1 \
             + `sync -f`. per file: `rep` one file per request, one at a time (like plain gfrep). \
             Gfarm gfrep: Debian's Gfarm 2 (gfmd with PostgreSQL at titech1, a gfsd at the source and \
             at titech1), `gfrep -D titech1` of the set held only by the source's gfsd. Gfarm per \
             file: one `gfrep -D titech1 FILE` process per file, one after another. Percentages are \
             of tar; the last column is renkei rep over Gfarm per file.\n\n\
             | from | link | tar | renkei rep | renkei mount | per file | Gfarm gfrep | Gfarm per file | rep / Gfarm per file |\n\
             |---|---|---|---|---|---|---|---|---|",
            d.scale,
            d.files,
            d.bytes as f64 / 1e9
        );
        for r in &self.fig6 {
            let of = |v: f64| format!("{v:.1} ({:.0} %)", v / r.tar_mb_s * 100.0);
            let _ = writeln!(
                s,
                "| {} | {:.1} | {:.1} | {} | {} | {} | {} | {} | {} |",
                r.from,
                r.link_mb_s,
                r.tar_mb_s,
                of(r.renkei_rep_mb_s),
                of(r.renkei_mount_mb_s),
                of(r.per_file_mb_s),
                r.gfarm_gfrep_mb_s.map(of).unwrap_or_else(|| "-".into()),
                r.gfarm_per_file_mb_s.map(of).unwrap_or_else(|| "-".into()),
                r.renkei_over_gfarm_per_file().map(|x| format!("{x:.1}x")).unwrap_or_else(|| "-".into()),
            );
        }
        s.push('\n');
    }
}
