//! Reading a guest's serial console log: waiting (bounded) for the boot
//! marker, and parsing the `RENKEI-*` lines the test image's init prints.
//!
//! The init prints one fact per line: `RENKEI-SSH-KEY <key>`,
//! `RENKEI-NIC <ifname> mac=<mac> addr=<cidr> segment=<seg>`, `RENKEI-NICS <n>`,
//! `RENKEI-MARK <file> <content>`, `RENKEI-WROTE <file>`, `RENKEI-HOSTNAME <name>`,
//! `RENKEI-SWAP on dev=<dev> kib=<n>` and finally
//! `RENKEI-BOOT-OK uptime=<seconds>`.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::ConsoleError;

/// The line prefix the guest prints when it finished booting.
pub const BOOT_MARKER: &str = "RENKEI-BOOT-OK";

/// How often the log is polled while waiting.
const POLL: Duration = Duration::from_millis(25);

/// One NIC as the guest configured it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestNic {
    /// The guest's interface name (eth0...).
    pub ifname: String,
    /// Its MAC address.
    pub mac: String,
    /// The address/prefix the guest reports on it.
    pub addr: String,
    /// The segment the seed named for it.
    pub segment: String,
}

/// What the guest reported on its console.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConsoleReport {
    /// The boot marker was seen.
    pub booted: bool,
    /// The guest's own uptime when it printed the marker (its boot time).
    pub guest_boot: Option<Duration>,
    /// The host name the guest set.
    pub hostname: Option<String>,
    /// SSH keys the guest installed.
    pub ssh_keys: Vec<String>,
    /// NICs the guest configured from the seed.
    pub nics: Vec<GuestNic>,
    /// How many NICs (besides lo) the guest has.
    pub nic_count: Option<u32>,
    /// Files found in the disk's marker directory: (name, first bytes).
    pub marks: Vec<(String, String)>,
    /// Files the guest wrote to its disk this boot.
    pub wrote: Vec<String>,
    /// Swap the guest enabled, in KiB.
    pub swap_kib: Option<u64>,
}

fn field<'a>(words: &[&'a str], key: &str) -> Option<&'a str> {
    words.iter().find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// Parses every `RENKEI-*` line of a console log.
pub fn parse(log: &str) -> ConsoleReport {
    let mut r = ConsoleReport::default();
    for line in log.lines() {
        let Some(start) = line.find("RENKEI-") else { continue };
        let line = line[start + "RENKEI-".len()..].trim_end_matches('\r');
        let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
        let words: Vec<&str> = rest.split_whitespace().collect();
        match tag {
            "BOOT-OK" => {
                r.booted = true;
                r.guest_boot = field(&words, "uptime").and_then(|s| s.parse::<f64>().ok()).map(Duration::from_secs_f64);
            }
            "HOSTNAME" => r.hostname = words.first().map(|s| s.to_string()),
            "SSH-KEY" => r.ssh_keys.push(rest.trim().to_string()),
            "NIC" => r.nics.push(GuestNic {
                ifname: words.first().unwrap_or(&"").to_string(),
                mac: field(&words, "mac").unwrap_or_default().to_string(),
                addr: field(&words, "addr").unwrap_or_default().to_string(),
                segment: field(&words, "segment").unwrap_or_default().to_string(),
            }),
            "NICS" => r.nic_count = words.first().and_then(|n| n.parse().ok()),
            "MARK" => {
                let (name, content) = rest.split_once(' ').unwrap_or((rest, ""));
                r.marks.push((name.to_string(), content.to_string()));
            }
            "WROTE" => r.wrote.push(rest.trim().to_string()),
            "SWAP" => r.swap_kib = field(&words, "kib").and_then(|n| n.parse().ok()),
            _ => {}
        }
    }
    r
}

/// Waits at most `timeout` for the boot marker in the log at `path`.
/// `still_running` is asked every few polls; if it says the guest is gone,
/// the wait ends at once with [`ConsoleError::GuestStopped`].
pub fn wait_for_boot(
    path: &Path,
    timeout: Duration,
    mut still_running: impl FnMut() -> bool,
) -> Result<ConsoleReport, ConsoleError> {
    let start = Instant::now();
    let mut polls = 0u32;
    loop {
        let log = match fs::read(path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(ConsoleError::Io { path: path.to_path_buf(), source: e }),
        };
        if log.contains(BOOT_MARKER) {
            return Ok(parse(&log));
        }
        if start.elapsed() >= timeout {
            return Err(ConsoleError::BootTimeout { marker: BOOT_MARKER.into(), timeout, path: path.to_path_buf() });
        }
        polls += 1;
        if polls % 8 == 0 && !still_running() {
            return Err(ConsoleError::GuestStopped { path: path.to_path_buf() });
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "SeaBIOS\r\n\x1b[2J.RENKEI-SEED ok dev=/dev/vdc\r\nRENKEI-HOSTNAME vm1\r\n\
RENKEI-SSH-KEY ssh-ed25519 AAAA user@x\r\nRENKEI-SWAP on dev=/dev/vdb kib=65532\r\n\
RENKEI-NIC eth0 mac=52:54:00:00:00:01 addr=10.9.0.5/24 segment=a\r\n\
RENKEI-NIC eth1 mac=52:54:00:00:00:02 addr=10.8.0.5/16 segment=b\r\nRENKEI-NICS 2\r\n\
RENKEI-MARK image-built built from 6.1\r\nRENKEI-WROTE hello\r\nRENKEI-BOOT-OK uptime=3.33\r\n";

    #[test]
    fn parses_the_test_image_console() {
        let r = parse(LOG);
        assert!(r.booted);
        assert_eq!(r.guest_boot, Some(Duration::from_millis(3330)));
        assert_eq!(r.hostname.as_deref(), Some("vm1"));
        assert_eq!(r.ssh_keys, vec!["ssh-ed25519 AAAA user@x"]);
        assert_eq!(r.nic_count, Some(2));
        assert_eq!(
            r.nics[1],
            GuestNic {
                ifname: "eth1".into(),
                mac: "52:54:00:00:00:02".into(),
                addr: "10.8.0.5/16".into(),
                segment: "b".into()
            }
        );
        assert_eq!(r.marks, vec![("image-built".to_string(), "built from 6.1".to_string())]);
        assert_eq!(r.wrote, vec!["hello"]);
        assert_eq!(r.swap_kib, Some(65532));
        assert!(!parse("RENKEI-NICS 2\n").booted);
    }

    #[test]
    fn wait_is_bounded_and_notices_a_dead_guest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let start = Instant::now();
        let err = wait_for_boot(&path, Duration::from_millis(300), || true).unwrap_err();
        assert!(matches!(err, ConsoleError::BootTimeout { .. }));
        assert!(start.elapsed() < Duration::from_secs(3));
        let err = wait_for_boot(&path, Duration::from_secs(30), || false).unwrap_err();
        assert!(matches!(err, ConsoleError::GuestStopped { .. }));
        fs::write(&path, LOG).unwrap();
        assert!(wait_for_boot(&path, Duration::from_secs(1), || true).unwrap().booted);
    }
}
