//! The seam between VM logic and the hypervisor.
//!
//! [`Hypervisor`] is what the PoP agent needs from libvirt: define, start,
//! destroy, pause/resume, state, console log path and listing of domains,
//! plus on-demand networks for segments. [`crate::libvirt::Libvirt`] is the
//! real implementation; the unit tests' fake (`hypervisor::fake`) records
//! calls and injects failures, so orchestration and cleanup logic is tested
//! without libvirt. End-to-end tests use real libvirt.

use std::path::PathBuf;

use crate::error::HypervisorError;

/// A domain's run state, as far as vpe cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainState {
    /// Running (or blocked on I/O).
    Running,
    /// Paused by us (during `save`) or by libvirt.
    Paused,
    /// Defined but not running (the guest exited, crashed, or was destroyed).
    ShutOff,
    /// Any other state (shutting down, crashed, suspended).
    Other,
}

/// The operations vpe needs from a hypervisor. Domain and network names
/// are full libvirt names (`renkei-...`).
pub trait Hypervisor {
    /// Defines (persistently) a domain from its XML; `name` must match the XML's name.
    fn define(&self, name: &str, xml: &str) -> Result<(), HypervisorError>;
    /// Starts a defined domain.
    fn start(&self, name: &str) -> Result<(), HypervisorError>;
    /// Stops the domain if it runs and removes its definition. Absent domains are fine.
    fn destroy(&self, name: &str) -> Result<(), HypervisorError>;
    /// Pauses a running domain.
    fn pause(&self, name: &str) -> Result<(), HypervisorError>;
    /// Resumes a paused domain.
    fn resume(&self, name: &str) -> Result<(), HypervisorError>;
    /// The domain's state, `None` if there is no such domain.
    fn state(&self, name: &str) -> Result<Option<DomainState>, HypervisorError>;
    /// The file the domain's serial console is logged to, if any.
    fn console_log(&self, name: &str) -> Result<Option<PathBuf>, HypervisorError>;
    /// Names of every domain vpe made (prefixed `renkei-`).
    fn list(&self) -> Result<Vec<String>, HypervisorError>;
    /// Makes sure network `name` exists and is active, creating it (transient)
    /// from `xml` if not. Returns true if it was created now.
    fn ensure_network(&self, name: &str, xml: &str) -> Result<bool, HypervisorError>;
    /// Destroys network `name` (absent is fine).
    fn remove_network(&self, name: &str) -> Result<(), HypervisorError>;
    /// Names of every network vpe made (prefixed `renkei-seg-`).
    fn list_networks(&self) -> Result<Vec<String>, HypervisorError>;
}

/// The serial console log path in a domain XML (`<serial type='file'><source path='...'/>`).
pub fn console_path_from_xml(xml: &str) -> Option<PathBuf> {
    let serial = &xml[xml.find("<serial type='file'")?..];
    let serial = &serial[..serial.find("</serial>")?];
    let rest = &serial[serial.find("<source path='")? + "<source path='".len()..];
    let raw = &rest[..rest.find('\'')?];
    let unescaped = raw
        .replace("&apos;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    Some(PathBuf::from(unescaped))
}

#[cfg(test)]
pub(crate) mod fake {
    //! An in-memory hypervisor for unit tests, with failure injection.

    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;

    /// Failures the fake can be told to produce.
    #[derive(Debug, Default, Clone)]
    pub(crate) struct Faults {
        pub(crate) unreachable: bool,
        pub(crate) reject_define: bool,
        pub(crate) fail_start: bool,
        /// The "guest" never prints its boot marker.
        pub(crate) silent_guest: bool,
        /// The "guest" dies at once (kernel panic, qemu crash): the domain shuts off.
        pub(crate) guest_crashes: bool,
    }

    #[derive(Debug, Default)]
    pub(crate) struct State {
        pub(crate) domains: BTreeMap<String, (String, DomainState)>,
        pub(crate) networks: BTreeMap<String, String>,
        pub(crate) calls: Vec<String>,
        pub(crate) faults: Faults,
    }

    /// The fake hypervisor.
    #[derive(Debug, Default)]
    pub(crate) struct FakeHypervisor {
        pub(crate) state: Mutex<State>,
    }

    impl FakeHypervisor {
        pub(crate) fn with_faults(faults: Faults) -> Self {
            let fake = Self::default();
            fake.state.lock().unwrap().faults = faults;
            fake
        }

        fn op<T>(
            &self,
            call: String,
            f: impl FnOnce(&mut State) -> Result<T, HypervisorError>,
        ) -> Result<T, HypervisorError> {
            let mut s = self.state.lock().unwrap();
            s.calls.push(call);
            if s.faults.unreachable {
                return Err(HypervisorError::Unreachable { uri: "fake:///".into(), message: "fake is down".into() });
            }
            f(&mut s)
        }
    }

    impl Hypervisor for FakeHypervisor {
        fn define(&self, name: &str, xml: &str) -> Result<(), HypervisorError> {
            self.op(format!("define {name}"), |s| {
                if s.faults.reject_define {
                    return Err(HypervisorError::Definition { name: name.into(), message: "fake rejects it".into() });
                }
                s.domains.insert(name.into(), (xml.into(), DomainState::ShutOff));
                Ok(())
            })
        }
        fn start(&self, name: &str) -> Result<(), HypervisorError> {
            self.op(format!("start {name}"), |s| {
                if s.faults.fail_start {
                    return Err(HypervisorError::Operation {
                        operation: "start",
                        name: name.into(),
                        message: "fake".into(),
                    });
                }
                let silent = s.faults.silent_guest || s.faults.guest_crashes;
                let crashes = s.faults.guest_crashes;
                let d = s.domains.get_mut(name).ok_or_else(|| HypervisorError::NotFound(name.into()))?;
                d.1 = if crashes { DomainState::ShutOff } else { DomainState::Running };
                // The "guest" boots at once: its console shows the boot marker.
                if let Some(log) = console_path_from_xml(&d.0) {
                    let text = if silent { "SeaBIOS\n" } else { "RENKEI-NICS 0\nRENKEI-BOOT-OK uptime=1.50\n" };
                    std::fs::write(log, text).map_err(|e| HypervisorError::Operation {
                        operation: "start",
                        name: name.into(),
                        message: e.to_string(),
                    })?;
                }
                Ok(())
            })
        }
        fn destroy(&self, name: &str) -> Result<(), HypervisorError> {
            self.op(format!("destroy {name}"), |s| {
                s.domains.remove(name);
                Ok(())
            })
        }
        fn pause(&self, name: &str) -> Result<(), HypervisorError> {
            self.op(format!("pause {name}"), |s| {
                let d = s.domains.get_mut(name).ok_or_else(|| HypervisorError::NotFound(name.into()))?;
                d.1 = DomainState::Paused;
                Ok(())
            })
        }
        fn resume(&self, name: &str) -> Result<(), HypervisorError> {
            self.op(format!("resume {name}"), |s| {
                let d = s.domains.get_mut(name).ok_or_else(|| HypervisorError::NotFound(name.into()))?;
                d.1 = DomainState::Running;
                Ok(())
            })
        }
        fn state(&self, name: &str) -> Result<Option<DomainState>, HypervisorError> {
            self.op(format!("state {name}"), |s| Ok(s.domains.get(name).map(|d| d.1)))
        }
        fn console_log(&self, name: &str) -> Result<Option<PathBuf>, HypervisorError> {
            self.op(format!("console_log {name}"), |s| {
                Ok(s.domains.get(name).and_then(|d| console_path_from_xml(&d.0)))
            })
        }
        fn list(&self) -> Result<Vec<String>, HypervisorError> {
            self.op("list".into(), |s| Ok(s.domains.keys().cloned().collect()))
        }
        fn ensure_network(&self, name: &str, xml: &str) -> Result<bool, HypervisorError> {
            self.op(format!("ensure_network {name}"), |s| Ok(s.networks.insert(name.into(), xml.into()).is_none()))
        }
        fn remove_network(&self, name: &str) -> Result<(), HypervisorError> {
            self.op(format!("remove_network {name}"), |s| {
                s.networks.remove(name);
                Ok(())
            })
        }
        fn list_networks(&self) -> Result<Vec<String>, HypervisorError> {
            self.op("list_networks".into(), |s| Ok(s.networks.keys().cloned().collect()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_console_log_in_libvirt_xml() {
        let xml = "<domain><devices><console type='file'/><serial type='file'>\n<source path='/v/a&apos;b/console.log' append='off'/>\n<target type='isa-serial' port='0'/></serial></devices></domain>";
        assert_eq!(console_path_from_xml(xml), Some(PathBuf::from("/v/a'b/console.log")));
        assert_eq!(console_path_from_xml("<domain><serial type='pty'/></domain>"), None);
    }
}
