//! The topology model: which sites exist, their addresses, and the parameters of every directed
//! link between them (one-way delay, rate, queue, random loss). Loaded from TOML or built by the
//! presets in [`super::preset`]; validated here so the router never sees an inconsistent graph.
//!
//! A topology file looks like this (see `bench/topologies/` for complete samples):
//!
//! ```toml
//! mtu = 1500
//!
//! [[site]]
//! name = "a"
//! [[site]]
//! name = "b"
//!
//! [[link]]
//! from = "a"
//! to = "b"
//! delay_ms = 5.0        # one-way; RTT = delay a->b + delay b->a
//! rate_mbit = 100.0     # omit for an unlimited link
//! loss_percent = 0.0
//! symmetric = true      # also add b->a with the same parameters
//! ```

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::TopologyError;

/// The emulated subnet: site `i` (0-based, in file order) gets `10.77.0.(i+1)`.
pub const SUBNET_BASE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 0);
/// Prefix length of the emulated subnet.
pub const SUBNET_PREFIX: u8 = 24;
/// Largest MTU a TUN device accepts.
pub const MAX_MTU: u32 = 65535;
/// Smallest MTU IPv4 allows.
pub const MIN_MTU: u32 = 576;
/// Most sites one topology may have (one /24, .1 to .254).
pub const MAX_SITES: usize = 254;

fn default_mtu() -> u32 {
    1500
}

/// A whole emulated WAN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// MTU of every site's TUN interface, bytes (576..=65535). Larger MTUs let the userspace router
    /// forward higher rates because its cost is per packet.
    #[serde(default = "default_mtu")]
    pub mtu: u32,
    /// Seed of the random-loss generator; `None` picks a fresh one per run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Common factor every link rate was multiplied by (e.g. 0.125 when a preset's real rates exceed
    /// what this machine forwards). Informational: rates below are already scaled.
    #[serde(default = "one")]
    pub rate_scale: f64,
    /// Sites in address order.
    #[serde(rename = "site", default)]
    pub sites: Vec<SiteSpec>,
    /// Directed links.
    #[serde(rename = "link", default)]
    pub links: Vec<LinkSpec>,
    /// Parameters for every ordered pair of sites that has no explicit `[[link]]`. Without it, every
    /// pair must be listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_link: Option<LinkParams>,
}

fn one() -> f64 {
    1.0
}

/// One site (a network namespace).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSpec {
    /// Short name: lowercase letters, digits, `_`; at most 16 characters.
    pub name: String,
}

/// One directed link `from -> to` (or both directions when `symmetric`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// Sending site.
    pub from: String,
    /// Receiving site.
    pub to: String,
    /// One-way propagation delay, milliseconds.
    #[serde(default)]
    pub delay_ms: f64,
    /// Bottleneck rate, megabits per second; omit for unlimited. See [`LinkParams::rate_mbit`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_mbit: Option<f64>,
    /// Drop-tail queue, KiB. See [`LinkParams::queue_kib`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_kib: Option<f64>,
    /// Random loss per packet, percent.
    #[serde(default)]
    pub loss_percent: f64,
    /// Also add the reverse direction with the same parameters.
    #[serde(default)]
    pub symmetric: bool,
}

impl LinkSpec {
    /// A link `from -> to` with these parameters.
    pub fn new(from: &str, to: &str, params: LinkParams, symmetric: bool) -> Self {
        LinkSpec {
            from: from.to_string(),
            to: to.to_string(),
            delay_ms: params.delay_ms,
            rate_mbit: params.rate_mbit,
            queue_kib: params.queue_kib,
            loss_percent: params.loss_percent,
            symmetric,
        }
    }

    /// The link's parameters.
    pub fn params(&self) -> LinkParams {
        LinkParams {
            delay_ms: self.delay_ms,
            rate_mbit: self.rate_mbit,
            queue_kib: self.queue_kib,
            loss_percent: self.loss_percent,
        }
    }
}

/// What a directed link does to packets.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkParams {
    /// One-way propagation delay, milliseconds.
    #[serde(default)]
    pub delay_ms: f64,
    /// Bottleneck rate in megabits (10^6 bit) per second of IP bytes; `None` = unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_mbit: Option<f64>,
    /// Drop-tail queue in front of the bottleneck, KiB. Default: the link's bandwidth-delay product
    /// for a round trip of `2 * delay` (at least 5 ms worth and at least 64 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_kib: Option<f64>,
    /// Independent random loss per packet, percent (0..100).
    #[serde(default)]
    pub loss_percent: f64,
}

impl LinkParams {
    /// A link with this one-way delay and rate and no loss.
    pub fn new(delay: Duration, rate_mbit: Option<f64>) -> Self {
        LinkParams { delay_ms: delay.as_secs_f64() * 1e3, rate_mbit, queue_kib: None, loss_percent: 0.0 }
    }

    /// One-way delay.
    pub fn delay(&self) -> Duration {
        Duration::from_secs_f64(self.delay_ms.max(0.0) / 1e3)
    }

    /// Rate in bytes per second, `None` when unlimited.
    pub fn rate_bytes_per_sec(&self) -> Option<f64> {
        self.rate_mbit.map(|m| m * 1e6 / 8.0)
    }

    /// Queue limit in bytes: explicit, or the default described on `queue_kib`.
    pub fn queue_bytes(&self, mtu: u32) -> usize {
        let floor = (64 * 1024).max(4 * mtu as usize);
        match (self.queue_kib, self.rate_bytes_per_sec()) {
            (Some(kib), _) => ((kib * 1024.0) as usize).max(2 * mtu as usize),
            (None, Some(rate)) => {
                let secs = (2.0 * self.delay().as_secs_f64()).max(0.005);
                ((rate * secs) as usize).max(floor)
            }
            (None, None) => floor,
        }
    }

    fn validate(&self, what: &str) -> Result<(), TopologyError> {
        let bad = |reason: &str| TopologyError::BadLink { link: what.to_string(), reason: reason.to_string() };
        if !(self.delay_ms.is_finite() && (0.0..=10_000.0).contains(&self.delay_ms)) {
            return Err(bad("delay_ms must be within 0..=10000"));
        }
        if let Some(r) = self.rate_mbit {
            if !(r.is_finite() && r > 0.0 && r <= 1e6) {
                return Err(bad("rate_mbit must be > 0 and <= 1e6 (omit it for unlimited)"));
            }
        }
        if let Some(q) = self.queue_kib {
            if !(q.is_finite() && q > 0.0 && q <= 1024.0 * 1024.0) {
                return Err(bad("queue_kib must be > 0 and <= 1 GiB"));
            }
        }
        if !(self.loss_percent.is_finite() && (0.0..100.0).contains(&self.loss_percent)) {
            return Err(bad("loss_percent must be within 0..100"));
        }
        Ok(())
    }
}

/// A validated topology: sites indexed `0..n`, and the parameters of every directed link.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Site names in address order.
    pub names: Vec<String>,
    /// `links[from][to]`; `None` on the diagonal.
    pub links: Vec<Vec<Option<LinkParams>>>,
    /// TUN MTU.
    pub mtu: u32,
}

impl Topology {
    /// Parse a TOML topology file.
    pub fn from_toml_str(text: &str) -> Result<Self, TopologyError> {
        let topo: Topology = toml::from_str(text).map_err(|e| TopologyError::Parse(e.to_string()))?;
        topo.resolve()?;
        Ok(topo)
    }

    /// Read and parse a TOML topology file.
    pub fn load(path: &Path) -> Result<Self, TopologyError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| TopologyError::Read { path: path.to_path_buf(), source })?;
        Self::from_toml_str(&text)
    }

    /// Render as TOML (what [`Topology::load`] reads back).
    pub fn to_toml_string(&self) -> Result<String, TopologyError> {
        toml::to_string_pretty(self).map_err(|e| TopologyError::Parse(e.to_string()))
    }

    /// Address of site number `index` (0-based).
    pub fn addr_of_index(index: usize) -> Ipv4Addr {
        let base = u32::from(SUBNET_BASE);
        Ipv4Addr::from(base + 1 + index as u32)
    }

    /// Index of the site with this address, if it is one of ours.
    pub fn index_of_addr(addr: Ipv4Addr, n_sites: usize) -> Option<usize> {
        let off = u32::from(addr).checked_sub(u32::from(SUBNET_BASE) + 1)? as usize;
        (off < n_sites).then_some(off)
    }

    /// Multiply every rate by `factor` (and record it in `rate_scale`).
    pub fn scale_rates(&mut self, factor: f64) {
        self.rate_scale *= factor;
        let scale = |r: &mut Option<f64>| *r = r.map(|r| r * factor);
        self.links.iter_mut().for_each(|l| scale(&mut l.rate_mbit));
        if let Some(p) = self.default_link.as_mut() {
            scale(&mut p.rate_mbit);
        }
    }

    /// Check names, MTU and link parameters, and expand symmetric and default links into the full
    /// directed matrix.
    pub fn resolve(&self) -> Result<Resolved, TopologyError> {
        if !(MIN_MTU..=MAX_MTU).contains(&self.mtu) {
            return Err(TopologyError::BadMtu(self.mtu));
        }
        if self.sites.len() < 2 || self.sites.len() > MAX_SITES {
            return Err(TopologyError::SiteCount(self.sites.len()));
        }
        let mut index = BTreeMap::new();
        for (i, s) in self.sites.iter().enumerate() {
            validate_site_name(&s.name)?;
            if index.insert(s.name.clone(), i).is_some() {
                return Err(TopologyError::DuplicateSite(s.name.clone()));
            }
        }
        let n = self.sites.len();
        let mut links: Vec<Vec<Option<LinkParams>>> = vec![vec![None; n]; n];
        let lookup = |name: &str| index.get(name).copied().ok_or_else(|| TopologyError::UnknownSite(name.to_string()));
        for l in &self.links {
            let what = format!("{}->{}", l.from, l.to);
            let params = l.params();
            params.validate(&what)?;
            let (a, b) = (lookup(&l.from)?, lookup(&l.to)?);
            if a == b {
                return Err(TopologyError::BadLink { link: what, reason: "a link needs two sites".into() });
            }
            let mut set = |x: usize, y: usize| {
                if links[x][y].replace(params).is_some() {
                    return Err(TopologyError::DuplicateLink(format!(
                        "{}->{}",
                        self.sites[x].name, self.sites[y].name
                    )));
                }
                Ok(())
            };
            set(a, b)?;
            if l.symmetric {
                set(b, a)?;
            }
        }
        if let Some(d) = &self.default_link {
            d.validate("default_link")?;
        }
        for (a, row) in links.iter_mut().enumerate() {
            for (b, cell) in row.iter_mut().enumerate() {
                if a != b && cell.is_none() {
                    *cell = Some(self.default_link.ok_or_else(|| {
                        TopologyError::MissingLink(format!("{}->{}", self.sites[a].name, self.sites[b].name))
                    })?);
                }
            }
        }
        Ok(Resolved { names: self.sites.iter().map(|s| s.name.clone()).collect(), links, mtu: self.mtu })
    }
}

/// Site names end up in namespace names and must be short and shell-safe.
fn validate_site_name(name: &str) -> Result<(), TopologyError> {
    let ok = !name.is_empty()
        && name.len() <= 16
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(TopologyError::BadSiteName(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
        mtu = 9000
        [[site]]
        name = "a"
        [[site]]
        name = "b"
        [[site]]
        name = "c"
        [[link]]
        from = "a"
        to = "b"
        delay_ms = 5
        rate_mbit = 100
        symmetric = true
        [default_link]
        delay_ms = 1
    "#;

    #[test]
    fn parses_and_expands_symmetric_and_default_links() {
        let t = Topology::from_toml_str(SAMPLE).expect("sample parses");
        let r = t.resolve().expect("resolves");
        assert_eq!(r.mtu, 9000);
        assert_eq!(r.links[0][1].map(|p| p.rate_mbit), Some(Some(100.0)));
        assert_eq!(r.links[1][0].map(|p| p.delay_ms), Some(5.0));
        assert_eq!(r.links[2][0].map(|p| p.delay_ms), Some(1.0));
        assert!(r.links[1][1].is_none());
        let again = Topology::from_toml_str(&t.to_toml_string().expect("renders")).expect("round trip");
        assert_eq!(again, t);
    }

    #[test]
    fn rejects_missing_links_and_bad_names() {
        let no_default = SAMPLE.replace("[default_link]\n        delay_ms = 1", "");
        assert!(matches!(Topology::from_toml_str(&no_default), Err(TopologyError::MissingLink(_))));
        let bad = SAMPLE.replace("name = \"c\"", "name = \"C; rm\"");
        assert!(matches!(Topology::from_toml_str(&bad), Err(TopologyError::BadSiteName(_))));
        let loss = SAMPLE.replace("delay_ms = 1", "loss_percent = 150");
        assert!(matches!(Topology::from_toml_str(&loss), Err(TopologyError::BadLink { .. })));
    }

    #[test]
    fn checked_in_samples_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("bench/topologies exists") {
            let path = entry.expect("dir entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                Topology::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                n += 1;
            }
        }
        assert!(n >= 3, "expected the sample topologies in {}", dir.display());
        let sample = Topology::load(&dir.join("renkei2011.toml")).expect("renkei2011 sample");
        let preset = super::super::preset::renkei2011(0.125).expect("preset");
        assert_eq!(sample.resolve().expect("resolves").links, preset.resolve().expect("resolves").links);
    }

    #[test]
    fn addresses_map_both_ways() {
        assert_eq!(Topology::addr_of_index(0), Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(Topology::index_of_addr(Ipv4Addr::new(10, 77, 0, 3), 3), Some(2));
        assert_eq!(Topology::index_of_addr(Ipv4Addr::new(10, 77, 0, 4), 3), None);
        assert_eq!(Topology::index_of_addr(Ipv4Addr::new(10, 77, 0, 0), 3), None);
        assert_eq!(Topology::index_of_addr(Ipv4Addr::new(127, 0, 0, 1), 3), None);
    }

    #[test]
    fn default_queue_is_a_round_trip_of_bandwidth_delay() {
        let p = LinkParams::new(Duration::from_millis(25), Some(1000.0));
        // 1 Gbit/s * 50 ms = 6.25 MB.
        assert_eq!(p.queue_bytes(1500), 6_250_000);
        let slow = LinkParams::new(Duration::from_micros(100), Some(10.0));
        assert_eq!(slow.queue_bytes(1500), 64 * 1024);
    }
}
