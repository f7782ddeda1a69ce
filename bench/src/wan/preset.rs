//! Built-in topologies: `pair` (two sites, chosen RTT, rate and loss) and `renkei2011` (the six
//! sites of the original RENKEI-PoP measurements, with their directed bandwidths and RTTs).

use super::error::TopologyError;
use super::topology::{LinkParams, LinkSpec, SiteSpec, Topology};

/// Names of the built-in presets.
pub const NAMES: &[&str] = &["pair", "renkei2011"];

/// Two sites `a` and `b`; both directions get `rtt_ms / 2` of delay, `rate_mbit` (`None` =
/// unlimited) and `loss_percent` of random loss each.
pub fn pair(rtt_ms: f64, rate_mbit: Option<f64>, loss_percent: f64) -> Result<Topology, TopologyError> {
    let params = LinkParams { delay_ms: rtt_ms / 2.0, rate_mbit, queue_kib: None, loss_percent };
    let topo = Topology {
        mtu: 1500,
        seed: None,
        rate_scale: 1.0,
        sites: vec![site("a"), site("b")],
        links: vec![LinkSpec::new("a", "b", params, true)],
        default_link: None,
    };
    topo.resolve()?;
    Ok(topo)
}

/// The six sites of the RENKEI-PoP testbed.
pub const RENKEI2011_SITES: [&str; 6] = ["titech1", "titech2", "osaka", "nii1", "kek", "tkb"];

/// Directed bandwidth after TCP tuning, MB/s (10^6 bytes), `(from, to, MB/s, from_paper)`.
///
/// Only the four rows marked `true` are from Table 4 of the RENKEI-PoP paper (e-Science 2011). The
/// others are estimates made to be consistent with them: hosts on one campus or on the Tokyo
/// backbone reach 850-960 MB/s as nii1->titech1 does; the Tokyo-Osaka path is about half that, as
/// osaka->titech1 shows; Tsukuba's two sites are close to each other (tkb->kek 627) but the
/// Tokyo-to-tkb direction is limited, as titech1->tkb (173) shows; the reverse directions of a
/// measured pair are taken a little (5-15 %) different, as tuned TCP transfers were.
pub const RENKEI2011_RATES_MBYTE: [(&str, &str, f64, bool); 30] = [
    ("nii1", "titech1", 960.0, true),
    ("osaka", "titech1", 526.0, true),
    ("tkb", "kek", 627.0, true),
    ("titech1", "tkb", 173.0, true),
    ("titech1", "nii1", 890.0, false),
    ("titech1", "osaka", 480.0, false),
    ("kek", "tkb", 590.0, false),
    ("tkb", "titech1", 195.0, false),
    ("titech1", "titech2", 930.0, false),
    ("titech2", "titech1", 940.0, false),
    ("titech2", "nii1", 880.0, false),
    ("nii1", "titech2", 950.0, false),
    ("titech2", "osaka", 470.0, false),
    ("osaka", "titech2", 515.0, false),
    ("titech2", "tkb", 170.0, false),
    ("tkb", "titech2", 190.0, false),
    ("titech1", "kek", 410.0, false),
    ("kek", "titech1", 450.0, false),
    ("titech2", "kek", 400.0, false),
    ("kek", "titech2", 440.0, false),
    ("nii1", "osaka", 500.0, false),
    ("osaka", "nii1", 540.0, false),
    ("nii1", "kek", 460.0, false),
    ("kek", "nii1", 480.0, false),
    ("nii1", "tkb", 180.0, false),
    ("tkb", "nii1", 200.0, false),
    ("osaka", "kek", 300.0, false),
    ("kek", "osaka", 280.0, false),
    ("osaka", "tkb", 150.0, false),
    ("tkb", "osaka", 160.0, false),
];

/// Round-trip times by geography, ms, symmetric. nii1<->titech1 (4.3 ms) is the value measured in
/// the original testbed; the rest are estimates from distance: same campus (titech1/titech2) and
/// the two Tsukuba sites (kek/tkb) ~0.2 ms, Tokyo<->Tsukuba ~2.5 ms, Tokyo<->Osaka ~9 ms,
/// Tsukuba<->Osaka ~11 ms.
pub const RENKEI2011_RTT_MS: [(&str, &str, f64); 15] = [
    ("titech1", "titech2", 0.2),
    ("kek", "tkb", 0.2),
    ("nii1", "titech1", 4.3),
    ("nii1", "titech2", 4.3),
    ("titech1", "osaka", 9.0),
    ("titech2", "osaka", 9.0),
    ("nii1", "osaka", 9.0),
    ("titech1", "kek", 2.5),
    ("titech1", "tkb", 2.5),
    ("titech2", "kek", 2.5),
    ("titech2", "tkb", 2.5),
    ("nii1", "kek", 2.5),
    ("nii1", "tkb", 2.5),
    ("osaka", "kek", 11.0),
    ("osaka", "tkb", 11.0),
];

/// The six-site RENKEI-PoP topology with every rate multiplied by `rate_scale` (use a factor below
/// 1 when the machine cannot forward the real rates; the factor is recorded in the topology).
pub fn renkei2011(rate_scale: f64) -> Result<Topology, TopologyError> {
    if !(rate_scale.is_finite() && rate_scale > 0.0) {
        return Err(TopologyError::Preset(format!("rate scale {rate_scale} must be positive")));
    }
    let rtt = |a: &str, b: &str| {
        RENKEI2011_RTT_MS
            .iter()
            .find(|(x, y, _)| (*x == a && *y == b) || (*x == b && *y == a))
            .map(|(_, _, ms)| *ms)
            .ok_or_else(|| TopologyError::Preset(format!("no RTT for {a}<->{b}")))
    };
    let mut links = Vec::new();
    for (from, to, mbyte, _from_paper) in RENKEI2011_RATES_MBYTE {
        let params = LinkParams {
            delay_ms: rtt(from, to)? / 2.0,
            rate_mbit: Some(mbyte * 8.0),
            queue_kib: None,
            loss_percent: 0.0,
        };
        links.push(LinkSpec::new(from, to, params, false));
    }
    let mut topo = Topology {
        mtu: 1500,
        seed: None,
        rate_scale: 1.0,
        sites: RENKEI2011_SITES.iter().map(|s| site(s)).collect(),
        links,
        default_link: None,
    };
    topo.scale_rates(rate_scale);
    topo.resolve()?;
    Ok(topo)
}

/// A preset by name; `pair` takes `rtt_ms`, `rate_mbit` and `loss_percent`, `renkei2011` the scale.
pub fn by_name(
    name: &str,
    rtt_ms: f64,
    rate_mbit: Option<f64>,
    loss_percent: f64,
    rate_scale: f64,
) -> Result<Topology, TopologyError> {
    match name {
        "pair" => {
            let mut t = pair(rtt_ms, rate_mbit, loss_percent)?;
            t.scale_rates(rate_scale);
            Ok(t)
        }
        "renkei2011" => renkei2011(rate_scale),
        other => Err(TopologyError::Preset(format!("unknown preset {other:?}; known: {}", NAMES.join(", ")))),
    }
}

fn site(name: &str) -> SiteSpec {
    SiteSpec { name: name.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renkei2011_is_a_full_asymmetric_mesh_with_the_paper_values() {
        let t = renkei2011(1.0).expect("preset is valid");
        let r = t.resolve().expect("resolves");
        assert_eq!(r.names.len(), 6);
        let idx = |n: &str| r.names.iter().position(|x| x == n).expect("site exists");
        let link = |a: &str, b: &str| r.links[idx(a)][idx(b)].expect("link exists");
        assert_eq!(link("nii1", "titech1").rate_mbit, Some(960.0 * 8.0));
        assert_eq!(link("titech1", "tkb").rate_mbit, Some(173.0 * 8.0));
        assert_ne!(link("titech1", "tkb").rate_mbit, link("tkb", "titech1").rate_mbit);
        assert_eq!(link("nii1", "titech1").delay_ms * 2.0, 4.3);
        assert_eq!(RENKEI2011_RATES_MBYTE.iter().filter(|r| r.3).count(), 4);
    }

    #[test]
    fn scaling_is_common_and_recorded() {
        let t = renkei2011(0.125).expect("preset is valid");
        assert_eq!(t.rate_scale, 0.125);
        let nii = t.links.iter().find(|l| l.from == "nii1" && l.to == "titech1").expect("link");
        assert_eq!(nii.rate_mbit, Some(960.0));
    }

    #[test]
    fn pair_splits_the_rtt() {
        let t = pair(10.0, Some(100.0), 1.0).expect("valid");
        let r = t.resolve().expect("resolves");
        let ab = r.links[0][1].expect("a->b");
        assert_eq!((ab.delay_ms, ab.rate_mbit, ab.loss_percent), (5.0, Some(100.0), 1.0));
        assert!(by_name("nope", 1.0, None, 0.0, 1.0).is_err());
    }
}
