//! The real [`Hypervisor`]: libvirt through the `virt` crate.
//!
//! One connection per [`Libvirt`] value (libvirt connections are
//! thread-safe). Calls are blocking local RPCs to libvirtd; an async caller
//! runs them on a blocking thread. Domains are defined persistently (so an
//! agent restart can find and clean them); segment networks are transient.

use std::path::PathBuf;

use tracing::debug;
use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::{Error as VirtError, ErrorNumber};

use crate::domain::DOMAIN_PREFIX;
use crate::error::HypervisorError;
use crate::hypervisor::{console_path_from_xml, DomainState, Hypervisor};
use crate::network::NETWORK_PREFIX;

/// The default libvirt URI for system domains.
pub const DEFAULT_URI: &str = "qemu:///system";

/// A connection to libvirtd.
pub struct Libvirt {
    uri: String,
    conn: Connect,
}

impl std::fmt::Debug for Libvirt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Libvirt").field("uri", &self.uri).finish()
    }
}

fn is(e: &VirtError, code: ErrorNumber) -> bool {
    e.code().is_known_and(|c| c == code)
}

impl Libvirt {
    /// Connects to libvirtd at `uri`; a clear error if it is not running.
    pub fn connect(uri: &str) -> Result<Self, HypervisorError> {
        // libvirt's default handler prints every error on stderr; ours are returned instead.
        virt::error::clear_error_callback();
        let conn = Connect::open(Some(uri))
            .map_err(|e| HypervisorError::Unreachable { uri: uri.to_string(), message: e.message().to_string() })?;
        debug!(uri, "connected to libvirt");
        Ok(Self { uri: uri.to_string(), conn })
    }

    /// The connection URI.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    fn err(&self, operation: &'static str, name: &str, e: VirtError) -> HypervisorError {
        if is(&e, ErrorNumber::NoConnect) || is(&e, ErrorNumber::SystemError) && !self.conn.is_alive().unwrap_or(false)
        {
            return HypervisorError::Unreachable { uri: self.uri.clone(), message: e.message().to_string() };
        }
        if is(&e, ErrorNumber::NoDomain) || is(&e, ErrorNumber::NoNetwork) {
            return HypervisorError::NotFound(name.to_string());
        }
        HypervisorError::Operation { operation, name: name.to_string(), message: e.message().to_string() }
    }

    fn domain(&self, operation: &'static str, name: &str) -> Result<Option<Domain>, HypervisorError> {
        match self.conn.lookup_domain_by_name(name) {
            Ok(d) => Ok(Some(d)),
            Err(e) if is(&e, ErrorNumber::NoDomain) => Ok(None),
            Err(e) => Err(self.err(operation, name, e)),
        }
    }

    fn existing(&self, operation: &'static str, name: &str) -> Result<Domain, HypervisorError> {
        self.domain(operation, name)?.ok_or_else(|| HypervisorError::NotFound(name.to_string()))
    }
}

impl Hypervisor for Libvirt {
    fn define(&self, name: &str, xml: &str) -> Result<(), HypervisorError> {
        self.conn
            .define_domain_xml(xml)
            .map(|_| ())
            .map_err(|e| HypervisorError::Definition { name: name.to_string(), message: e.message().to_string() })
    }

    fn start(&self, name: &str) -> Result<(), HypervisorError> {
        let dom = self.existing("start", name)?;
        dom.create().map(|_| ()).map_err(|e| self.err("start", name, e))
    }

    fn destroy(&self, name: &str) -> Result<(), HypervisorError> {
        let Some(dom) = self.domain("destroy", name)? else {
            return Ok(());
        };
        if dom.is_active().map_err(|e| self.err("destroy", name, e))? {
            // An already-stopped domain between the check and the call is fine.
            if let Err(e) = dom.destroy() {
                if dom.is_active().unwrap_or(true) {
                    return Err(self.err("destroy", name, e));
                }
            }
        }
        match dom.undefine() {
            Ok(()) => Ok(()),
            Err(e) if is(&e, ErrorNumber::NoDomain) => Ok(()),
            Err(e) => Err(self.err("undefine", name, e)),
        }
    }

    fn pause(&self, name: &str) -> Result<(), HypervisorError> {
        self.existing("pause", name)?.suspend().map(|_| ()).map_err(|e| self.err("pause", name, e))
    }

    fn resume(&self, name: &str) -> Result<(), HypervisorError> {
        self.existing("resume", name)?.resume().map(|_| ()).map_err(|e| self.err("resume", name, e))
    }

    fn state(&self, name: &str) -> Result<Option<DomainState>, HypervisorError> {
        use virt::domain::DomainState as S;
        let Some(dom) = self.domain("state", name)? else {
            return Ok(None);
        };
        let (state, _) = dom.state().map_err(|e| self.err("state", name, e))?;
        Ok(Some(match state.unwrap_or(S::NoState) {
            S::Running | S::Blocked => DomainState::Running,
            S::Paused => DomainState::Paused,
            S::Shutoff | S::Crashed => DomainState::ShutOff,
            _ => DomainState::Other,
        }))
    }

    fn console_log(&self, name: &str) -> Result<Option<PathBuf>, HypervisorError> {
        let dom = self.existing("console_log", name)?;
        let xml = dom.xml_desc(0).map_err(|e| self.err("console_log", name, e))?;
        Ok(console_path_from_xml(&xml))
    }

    fn list(&self) -> Result<Vec<String>, HypervisorError> {
        let domains = self.conn.list_all_domains(0).map_err(|e| self.err("list", "domains", e))?;
        let mut names: Vec<String> = domains.iter().filter_map(|d| d.name().ok()).collect();
        names.retain(|n| n.starts_with(DOMAIN_PREFIX));
        names.sort();
        Ok(names)
    }

    fn ensure_network(&self, name: &str, xml: &str) -> Result<bool, HypervisorError> {
        match self.conn.lookup_network_by_name(name) {
            Ok(net) => {
                if !net.is_active().map_err(|e| self.err("network lookup", name, e))? {
                    net.create().map_err(|e| self.err("network start", name, e))?;
                }
                Ok(false)
            }
            Err(e) if is(&e, ErrorNumber::NoNetwork) => {
                self.conn.create_network_xml(xml).map_err(|e| HypervisorError::Definition {
                    name: name.to_string(),
                    message: e.message().to_string(),
                })?;
                Ok(true)
            }
            Err(e) => Err(self.err("network lookup", name, e)),
        }
    }

    fn remove_network(&self, name: &str) -> Result<(), HypervisorError> {
        let net = match self.conn.lookup_network_by_name(name) {
            Ok(net) => net,
            Err(e) if is(&e, ErrorNumber::NoNetwork) => return Ok(()),
            Err(e) => return Err(self.err("network lookup", name, e)),
        };
        if net.is_active().unwrap_or(false) {
            net.destroy().map_err(|e| self.err("network destroy", name, e))?;
        }
        if net.is_persistent().unwrap_or(false) {
            net.undefine().map_err(|e| self.err("network undefine", name, e))?;
        }
        Ok(())
    }

    fn list_networks(&self) -> Result<Vec<String>, HypervisorError> {
        let nets = self.conn.list_all_networks(0).map_err(|e| self.err("list", "networks", e))?;
        let mut names: Vec<String> = nets.iter().filter_map(|n| n.name().ok()).collect();
        names.retain(|n| n.starts_with(NETWORK_PREFIX));
        names.sort();
        Ok(names)
    }
}
