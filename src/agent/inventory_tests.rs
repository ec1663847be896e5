//! Unit tests of the inventory operations (agent spec §3.4).

use super::*;

fn dest(ip: &str) -> Dest {
    Dest { ip: ip.into(), port: 2411 }
}

fn inv() -> Inventory {
    let mut inv = Inventory::default();
    inv.add_host("compute-0", "h0", dest("10.0.0.10")).unwrap();
    inv.add_host("compute-1", "h1", dest("10.0.0.11")).unwrap();
    inv
}

fn cmds(out: &[Outgoing]) -> Vec<(&str, &ServerCmd)> {
    out.iter().map(|o| (o.hostname.as_str(), &o.cmd)).collect()
}

#[test]
fn add_host_keeps_the_existing_record() {
    let mut inv = inv();
    assert_eq!(inv.add_host("compute-0", "other", dest("1.1.1.1")), Err(InvError::HostExists("compute-0".into())));
    assert_eq!(inv.host("compute-0").unwrap().dest.ip, "10.0.0.10");
    assert_eq!(inv.host("h0").unwrap().hostname, "compute-0");
    assert!(!inv.host("h0").unwrap().reporting);
}

#[test]
fn mod_host_updates_uuid_index_and_refuses_unknown() {
    let mut inv = inv();
    inv.mod_host("compute-0", "h0b", dest("10.0.0.99")).unwrap();
    assert!(inv.host("h0").is_none());
    assert_eq!(inv.host("h0b").unwrap().dest.ip, "10.0.0.99");
    assert_eq!(inv.mod_host("nope", "x", dest("1.1.1.1")), Err(InvError::UnknownHost("nope".into())));
}

#[test]
fn add_inst_sends_add_and_moves_between_hosts() {
    let mut inv = inv();
    let out = inv.add_inst("compute-0", "i1", false).unwrap();
    assert_eq!(cmds(&out), vec![("compute-0", &ServerCmd::AddInst { uuid: "i1".into(), enabled: false })]);
    let out = inv.add_inst("compute-1", "i1", true).unwrap();
    assert_eq!(
        cmds(&out),
        vec![
            ("compute-0", &ServerCmd::DelInst { uuid: "i1".into() }),
            ("compute-1", &ServerCmd::AddInst { uuid: "i1".into(), enabled: true })
        ]
    );
    assert!(inv.host("compute-0").unwrap().instances.is_empty());
    assert_eq!(inv.instance("i1").unwrap().hostname, "compute-1");
    assert_eq!(inv.add_inst("compute-9", "i2", false), Err(InvError::UnknownHost("compute-9".into())));
    assert_eq!(inv.add_inst("compute-0", "", false), Err(InvError::EmptyUuid));
}

#[test]
fn re_post_keeps_reporting_and_mod_always_sends() {
    let mut inv = inv();
    inv.mod_inst("compute-0", "i1", true).unwrap();
    let out = inv.add_inst("compute-0", "i1", false).unwrap();
    assert!(inv.instance("i1").unwrap().reporting);
    assert_eq!(out[0].cmd, ServerCmd::AddInst { uuid: "i1".into(), enabled: true });
    let out = inv.mod_inst("compute-0", "i1", true).unwrap();
    assert_eq!(out[0].cmd, ServerCmd::ModInst { uuid: "i1".into(), enabled: true });
}

#[test]
fn del_inst_and_del_host() {
    let mut inv = inv();
    inv.add_inst("compute-0", "i1", false).unwrap();
    inv.add_inst("compute-0", "i2", false).unwrap();
    assert_eq!(inv.del_inst("nope"), Err(InvError::UnknownInstance("nope".into())));
    let out = inv.del_inst("i1").unwrap();
    assert_eq!(out[0].cmd, ServerCmd::DelInst { uuid: "i1".into() });
    let out = inv.del_host("h0").unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].dest.ip, "10.0.0.10");
    assert!(inv.instance("i2").is_none());
    assert!(inv.host("compute-0").is_none());
    assert_eq!(inv.hostnames(), vec!["compute-1".to_string()]);
}

#[test]
fn host_inst_enables_only_on_enable() {
    let mut inv = inv();
    let out = inv.host_inst("compute-1", true).unwrap();
    assert_eq!(out[0].cmd, ServerCmd::ModHost { host_uuid: "h1".into(), enabled: true });
    assert!(inv.host("compute-1").unwrap().reporting);
    inv.host_inst("h1", false).unwrap();
    assert!(!inv.host("compute-1").unwrap().reporting);
    assert!(inv.host_inst("x", true).is_err());
}

#[test]
fn ready_replays_every_instance_of_the_host() {
    let mut inv = inv();
    inv.add_inst("compute-0", "a", true).unwrap();
    inv.add_inst("compute-0", "b", false).unwrap();
    inv.add_inst("compute-1", "c", true).unwrap();
    let out = inv.set_inst_state("compute-0").unwrap();
    assert_eq!(
        cmds(&out),
        vec![
            ("compute-0", &ServerCmd::ModInst { uuid: "a".into(), enabled: true }),
            ("compute-0", &ServerCmd::ModInst { uuid: "b".into(), enabled: false })
        ]
    );
}

#[test]
fn restore_round_trips() {
    let mut inv = inv();
    inv.add_inst("compute-1", "c", true).unwrap();
    inv.host_inst("compute-1", true).unwrap();
    let hosts: Vec<Host> = inv.hosts().cloned().collect();
    let insts: Vec<Instance> = inv.instances().cloned().collect();
    let back = Inventory::restore(hosts, insts);
    assert_eq!(back, inv);
}
