//! Hosts and instances with the exact inventory semantics of agent spec §3.4.
//!
//! Pure code owned by the dispatcher's `State`: every operation changes the
//! tables and returns the guestServer commands it implies as `Outgoing`
//! values, each already addressed, so a command to a host that the same
//! operation removed still reaches it. Lookups are O(1) through the hostname
//! table, the host-uuid index and the instance table.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Where a host's guestServer listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dest {
    pub ip: String,
    pub port: u16,
}

/// One worker host (spec §3.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    pub hostname: String,
    pub uuid: String,
    pub dest: Dest,
    /// The host-level failure-reporting gate.
    pub reporting: bool,
    /// Instance uuids in insertion order.
    pub instances: Vec<String>,
    #[serde(skip)]
    pub got_host_state: bool,
    #[serde(skip)]
    pub got_instances: bool,
    #[serde(skip)]
    pub query_flag: bool,
    #[serde(skip)]
    pub query_misses: u32,
}

/// One instance (spec §3.2); the timeouts are the guest's decimal strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub uuid: String,
    pub hostname: String,
    /// The instance-level failure-reporting gate.
    pub reporting: bool,
    pub heartbeating: bool,
    pub corrective_action: String,
    pub restart_to: String,
    pub resume_to: String,
    pub suspend_to: String,
    pub shutdown_to: String,
    pub vote_to: String,
}

impl Instance {
    fn fresh(uuid: &str, hostname: &str, reporting: bool) -> Self {
        Self {
            uuid: uuid.to_string(),
            hostname: hostname.to_string(),
            reporting,
            heartbeating: false,
            corrective_action: "log".into(),
            restart_to: "0".into(),
            resume_to: "0".into(),
            suspend_to: "0".into(),
            shutdown_to: "0".into(),
            vote_to: "0".into(),
        }
    }
}

/// A command for one guestServer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerCmd {
    AddInst {
        uuid: String,
        enabled: bool,
    },
    ModInst {
        uuid: String,
        enabled: bool,
    },
    DelInst {
        uuid: String,
    },
    ModHost {
        host_uuid: String,
        enabled: bool,
    },
    Query,
    Vote {
        uuid: String,
        event: String,
    },
    Notify {
        uuid: String,
        event: String,
    },
    /// Acknowledges event `event_id` (ours, issue 6; 0 = "I acknowledge").
    Ack {
        event_id: u64,
    },
}

/// A command with its destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub hostname: String,
    pub dest: Dest,
    pub cmd: ServerCmd,
}

/// Why an inventory operation did nothing.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum InvError {
    #[error("host {0} already exists")]
    HostExists(String),
    #[error("host {0} is not known")]
    UnknownHost(String),
    #[error("instance {0} is not known")]
    UnknownInstance(String),
    #[error("empty uuid")]
    EmptyUuid,
    #[error("empty hostname")]
    EmptyHostname,
    #[error("inventory is full ({0} hosts)")]
    Full(usize),
}

/// Capacity limit of the original (MAX_NODES).
pub const MAX_HOSTS: usize = 500;

/// The agent's whole inventory.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Inventory {
    hosts: HashMap<String, Host>,
    /// host uuid → hostname.
    by_uuid: HashMap<String, String>,
    /// Hostnames in insertion order (the audit walks this).
    order: Vec<String>,
    instances: HashMap<String, Instance>,
}

impl Inventory {
    /// Rebuilds an inventory from persisted hosts and instances.
    pub fn restore(hosts: Vec<Host>, instances: Vec<Instance>) -> Self {
        let mut inv = Inventory::default();
        for mut h in hosts {
            h.instances.clear();
            inv.insert_host(h);
        }
        for i in instances {
            if let Some(h) = inv.hosts.get_mut(&i.hostname) {
                h.instances.push(i.uuid.clone());
                inv.instances.insert(i.uuid.clone(), i);
            }
        }
        inv
    }

    /// Hosts in audit order.
    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        self.order.iter().filter_map(|n| self.hosts.get(n))
    }

    /// Hostnames in audit order.
    pub fn hostnames(&self) -> Vec<String> {
        self.order.clone()
    }

    /// Every instance, host by host.
    pub fn instances(&self) -> impl Iterator<Item = &Instance> {
        self.hosts().flat_map(|h| h.instances.iter().filter_map(|u| self.instances.get(u)))
    }

    pub fn host_count(&self) -> usize {
        self.hosts.len()
    }

    /// Looks a host up by hostname or host uuid, as the original does.
    pub fn host(&self, key: &str) -> Option<&Host> {
        self.hosts.get(key).or_else(|| self.by_uuid.get(key).and_then(|n| self.hosts.get(n)))
    }

    pub fn host_mut(&mut self, key: &str) -> Option<&mut Host> {
        let name = if self.hosts.contains_key(key) { key.to_string() } else { self.by_uuid.get(key)?.clone() };
        self.hosts.get_mut(&name)
    }

    pub fn instance(&self, uuid: &str) -> Option<&Instance> {
        self.instances.get(uuid)
    }

    pub fn instance_mut(&mut self, uuid: &str) -> Option<&mut Instance> {
        self.instances.get_mut(uuid)
    }

    fn insert_host(&mut self, h: Host) {
        if !h.uuid.is_empty() {
            self.by_uuid.insert(h.uuid.clone(), h.hostname.clone());
        }
        self.order.push(h.hostname.clone());
        self.hosts.insert(h.hostname.clone(), h);
    }

    /// add_host: an existing hostname is left unchanged (the original's RETRY).
    pub fn add_host(&mut self, hostname: &str, uuid: &str, dest: Dest) -> Result<(), InvError> {
        if hostname.is_empty() {
            return Err(InvError::EmptyHostname);
        }
        if self.hosts.contains_key(hostname) {
            return Err(InvError::HostExists(hostname.to_string()));
        }
        if self.hosts.len() >= MAX_HOSTS {
            return Err(InvError::Full(MAX_HOSTS));
        }
        self.insert_host(Host {
            hostname: hostname.to_string(),
            uuid: uuid.to_string(),
            dest,
            reporting: false,
            instances: Vec::new(),
            got_host_state: false,
            got_instances: false,
            query_flag: false,
            query_misses: 0,
        });
        Ok(())
    }

    /// mod_host: overwrite uuid and address of a known host.
    pub fn mod_host(&mut self, hostname: &str, uuid: &str, dest: Dest) -> Result<(), InvError> {
        if hostname.is_empty() {
            return Err(InvError::EmptyHostname);
        }
        let h = self.hosts.get_mut(hostname).ok_or_else(|| InvError::UnknownHost(hostname.to_string()))?;
        let old_uuid = std::mem::replace(&mut h.uuid, uuid.to_string());
        h.dest = dest;
        if old_uuid != uuid {
            self.by_uuid.remove(&old_uuid);
            if !uuid.is_empty() {
                self.by_uuid.insert(uuid.to_string(), hostname.to_string());
            }
        }
        Ok(())
    }

    /// del_host: DEL_INST for every instance, then forget the host.
    pub fn del_host(&mut self, key: &str) -> Result<Vec<Outgoing>, InvError> {
        let name = self.host(key).map(|h| h.hostname.clone()).ok_or_else(|| InvError::UnknownHost(key.to_string()))?;
        let Some(host) = self.hosts.remove(&name) else {
            return Err(InvError::UnknownHost(key.to_string()));
        };
        self.by_uuid.remove(&host.uuid);
        self.order.retain(|n| *n != name);
        let mut out = Vec::new();
        for uuid in &host.instances {
            self.instances.remove(uuid);
            out.push(to(&host, ServerCmd::DelInst { uuid: uuid.clone() }));
        }
        Ok(out)
    }

    /// Removes `uuid` from whatever host holds it, returning its DEL_INST.
    fn remove_instance(&mut self, uuid: &str) -> Option<Outgoing> {
        let inst = self.instances.remove(uuid)?;
        let host = self.hosts.get_mut(&inst.hostname)?;
        host.instances.retain(|u| u != uuid);
        Some(to(host, ServerCmd::DelInst { uuid: uuid.to_string() }))
    }

    /// Appends a fresh instance to a known host and returns its ADD_INST.
    fn append_instance(&mut self, hostname: &str, uuid: &str, reporting: bool) -> Result<Outgoing, InvError> {
        let host = self.hosts.get_mut(hostname).ok_or_else(|| InvError::UnknownHost(hostname.to_string()))?;
        host.instances.push(uuid.to_string());
        let out = to(host, ServerCmd::AddInst { uuid: uuid.to_string(), enabled: reporting });
        self.instances.insert(uuid.to_string(), Instance::fresh(uuid, hostname, reporting));
        Ok(out)
    }

    /// add_inst (VIM POST, VIM list). A known instance on the same host is
    /// left as it is, but its ADD_INST is sent again so a guestServer that
    /// lost it gets it back; on another host it moves.
    pub fn add_inst(&mut self, hostname: &str, uuid: &str, reporting: bool) -> Result<Vec<Outgoing>, InvError> {
        self.place_inst(hostname, uuid, reporting, false)
    }

    /// mod_inst (VIM PATCH): set the instance gate and always send MOD_INST;
    /// unknown or moved instances are created as by add_inst.
    pub fn mod_inst(&mut self, hostname: &str, uuid: &str, reporting: bool) -> Result<Vec<Outgoing>, InvError> {
        self.place_inst(hostname, uuid, reporting, true)
    }

    fn place_inst(
        &mut self,
        hostname: &str,
        uuid: &str,
        reporting: bool,
        modify: bool,
    ) -> Result<Vec<Outgoing>, InvError> {
        if uuid.is_empty() {
            return Err(InvError::EmptyUuid);
        }
        let mut out = Vec::new();
        if let Some(inst) = self.instances.get_mut(uuid) {
            if inst.hostname == hostname {
                if modify {
                    inst.reporting = reporting;
                }
                let enabled = inst.reporting;
                let host = self.hosts.get(hostname).ok_or_else(|| InvError::UnknownHost(hostname.to_string()))?;
                let uuid = uuid.to_string();
                let cmd =
                    if modify { ServerCmd::ModInst { uuid, enabled } } else { ServerCmd::AddInst { uuid, enabled } };
                out.push(to(host, cmd));
                return Ok(out);
            }
            if !self.hosts.contains_key(hostname) {
                return Err(InvError::UnknownHost(hostname.to_string()));
            }
            out.extend(self.remove_instance(uuid));
        }
        out.push(self.append_instance(hostname, uuid, reporting)?);
        Ok(out)
    }

    /// del_inst (VIM DELETE).
    pub fn del_inst(&mut self, uuid: &str) -> Result<Vec<Outgoing>, InvError> {
        if uuid.is_empty() {
            return Err(InvError::EmptyUuid);
        }
        self.remove_instance(uuid).map(|o| vec![o]).ok_or_else(|| InvError::UnknownInstance(uuid.to_string()))
    }

    /// host_inst (VIM PUT host): `enable` or anything else, which disables.
    pub fn host_inst(&mut self, hostname: &str, enable: bool) -> Result<Vec<Outgoing>, InvError> {
        let host = self.host_mut(hostname).ok_or_else(|| InvError::UnknownHost(hostname.to_string()))?;
        host.reporting = enable;
        Ok(vec![to(host, ServerCmd::ModHost { host_uuid: host.uuid.clone(), enabled: enable })])
    }

    /// set_inst_state (guestServer READY): MOD_INST for each instance of the host.
    pub fn set_inst_state(&self, hostname: &str) -> Result<Vec<Outgoing>, InvError> {
        let host = self.host(hostname).ok_or_else(|| InvError::UnknownHost(hostname.to_string()))?;
        Ok(host
            .instances
            .iter()
            .filter_map(|u| self.instances.get(u))
            .map(|i| to(host, ServerCmd::ModInst { uuid: i.uuid.clone(), enabled: i.reporting }))
            .collect())
    }

    /// A command for a host by name, if it is known.
    pub fn command(&self, hostname: &str, cmd: ServerCmd) -> Option<Outgoing> {
        self.host(hostname).map(|h| to(h, cmd))
    }
}

/// Addresses `cmd` to `host`.
pub fn to(host: &Host, cmd: ServerCmd) -> Outgoing {
    Outgoing { hostname: host.hostname.clone(), dest: host.dest.clone(), cmd }
}

#[cfg(test)]
#[path = "inventory_tests.rs"]
mod tests;
