//! Deterministic tests of the planner: every edge case Gfarm operators met.

use super::*;

fn host(name: &str, site: &str) -> HostView {
    HostView { host: name.into(), site: site.into(), free: 1 << 40, down_for_ms: None, draining: false }
}

fn down(mut h: HostView, ms: u64) -> HostView {
    h.down_for_ms = Some(ms);
    h
}

fn rep(host: &str) -> ReplicaView {
    ReplicaView { host: host.into(), gen: 3, bad: false }
}

fn bad(host: &str) -> ReplicaView {
    ReplicaView { host: host.into(), gen: 3, bad: true }
}

fn file(ncopy: u32, replicas: Vec<ReplicaView>) -> FileView {
    FileView { ino: 42, gen: 3, size: 1000, ncopy, replicas, in_flight: Vec::new() }
}

fn three_sites() -> Vec<HostView> {
    vec![host("a1", "A"), host("a2", "A"), host("b1", "B"), host("c1", "C")]
}

fn worker(grace: u64) -> Policy {
    Policy { want: Want::Ncopy { default: 1 }, from: None, to: None, remove_surplus: true, down_grace_ms: grace }
}

fn copies(n: u32) -> Policy {
    Policy { want: Want::Copies(n), from: None, to: None, remove_surplus: false, down_grace_ms: 0 }
}

fn dsts(p: &FilePlan) -> Vec<&str> {
    p.copies.iter().map(|c| c.dst.as_str()).collect()
}

#[test]
fn satisfied_file_needs_nothing() {
    let p = plan_file(&file(2, vec![rep("a1"), rep("b1")]), &three_sites(), &worker(1000));
    assert_eq!(p, FilePlan::satisfied());
}

#[test]
fn empty_file_is_never_copied() {
    let mut f = file(3, vec![]);
    f.size = 0;
    assert_eq!(plan_file(&f, &three_sites(), &worker(0)), FilePlan::satisfied());
}

#[test]
fn new_copies_go_to_distinct_sites_first() {
    let p = plan_file(&file(0, vec![rep("a1")]), &three_sites(), &copies(3));
    assert_eq!(p.outcome, Outcome::Planned);
    let mut d = dsts(&p);
    d.sort();
    assert_eq!(d, ["b1", "c1"], "a2 shares site A with the existing replica");
    for c in &p.copies {
        assert_eq!(c.sources, ["a1"]);
    }
}

#[test]
fn same_site_host_used_only_when_sites_run_out() {
    let p = plan_file(&file(0, vec![rep("a1")]), &three_sites(), &copies(4));
    let mut d = dsts(&p);
    d.sort();
    assert_eq!(d, ["a2", "b1", "c1"]);
    assert_eq!(p.outcome, Outcome::Planned);
}

#[test]
fn not_enough_hosts_is_reported_short() {
    let p = plan_file(&file(0, vec![rep("a1")]), &three_sites(), &copies(6));
    assert_eq!(p.copies.len(), 3);
    assert_eq!(p.outcome, Outcome::Short { reason: SkipReason::NoTarget, missing: 2 });
}

#[test]
fn destination_filter_counts_only_replicas_there() {
    let mut pol = copies(1);
    pol.to = Some(Selector::Site("B".into()));
    let p = plan_file(&file(0, vec![rep("a1"), rep("a2")]), &three_sites(), &pol);
    assert_eq!(dsts(&p), ["b1"]);
    // Already at B: nothing to do.
    let p = plan_file(&file(0, vec![rep("a1"), rep("b1")]), &three_sites(), &pol);
    assert_eq!(p.outcome, Outcome::Satisfied);
    assert!(p.copies.is_empty());
}

#[test]
fn destination_host_filter() {
    let mut pol = copies(1);
    pol.to = Some(Selector::Host("a2".into()));
    let p = plan_file(&file(0, vec![rep("a1")]), &three_sites(), &pol);
    assert_eq!(dsts(&p), ["a2"]);
    assert_eq!(p.copies[0].sources, ["a1"]);
}

#[test]
fn source_filter_and_source_order() {
    let hosts = three_sites();
    let mut pol = copies(1);
    pol.to = Some(Selector::Host("a2".into()));
    // Sources: same site as the destination first.
    let p = plan_file(
        &file(0, vec![rep("b1"), rep("a1"), rep("c1")]),
        &hosts,
        &Policy { want: Want::Copies(4), ..pol.clone() },
    );
    assert_eq!(p.copies[0].sources, ["a1", "b1", "c1"]);
    // Restricted to site C.
    pol.from = Some(Selector::Site("C".into()));
    let p = plan_file(
        &file(0, vec![rep("b1"), rep("a1"), rep("c1")]),
        &hosts,
        &Policy { want: Want::Copies(4), ..pol.clone() },
    );
    assert_eq!(p.copies[0].sources, ["c1"]);
    // No replica at the requested source.
    let p = plan_file(&file(0, vec![rep("b1")]), &hosts, &pol);
    assert_eq!(p.outcome, Outcome::Short { reason: SkipReason::NoSource, missing: 1 });
    assert!(p.copies.is_empty());
}

#[test]
fn bad_and_stale_replicas_are_never_sources() {
    let mut f = file(0, vec![bad("a1"), rep("b1")]);
    f.replicas.push(ReplicaView { host: "c1".into(), gen: 2, bad: false });
    let p = plan_file(&f, &three_sites(), &copies(3));
    for c in &p.copies {
        assert_eq!(c.sources, ["b1"], "only the good current replica is read");
    }
    // Only bad or stale replicas: nothing to read from.
    let mut f = file(0, vec![bad("a1")]);
    f.replicas.push(ReplicaView { host: "c1".into(), gen: 2, bad: false });
    let p = plan_file(&f, &three_sites(), &copies(2));
    assert_eq!(p.outcome, Outcome::Short { reason: SkipReason::NoSource, missing: 2 });
}

#[test]
fn down_hosts_are_not_sources_or_destinations() {
    let hosts = vec![host("a1", "A"), down(host("b1", "B"), 10), host("c1", "C")];
    let p = plan_file(&file(0, vec![rep("a1"), rep("b1")]), &hosts, &copies(2));
    // b1 is down (grace 0 for `rep`): its replica does not count, and the
    // new copy goes to c1, read from a1.
    assert_eq!(dsts(&p), ["c1"]);
    assert_eq!(p.copies[0].sources, ["a1"]);
}

#[test]
fn briefly_down_holder_still_counts_then_is_replaced() {
    let within = vec![host("a1", "A"), down(host("b1", "B"), 500), host("c1", "C")];
    let f = file(2, vec![rep("a1"), rep("b1")]);
    assert_eq!(plan_file(&f, &within, &worker(1000)), FilePlan::satisfied());
    let past = vec![host("a1", "A"), down(host("b1", "B"), 1500), host("c1", "C")];
    let p = plan_file(&f, &past, &worker(1000));
    assert_eq!(dsts(&p), ["c1"]);
    assert!(p.removals.is_empty(), "nothing is removed while a holder is down");
}

#[test]
fn returning_host_makes_surplus_that_is_trimmed_keeping_sites() {
    let hosts = vec![host("a1", "A"), host("b1", "B"), host("c1", "C")];
    let p = plan_file(&file(2, vec![rep("a1"), rep("b1"), rep("c1")]), &hosts, &worker(1000));
    assert!(p.copies.is_empty());
    assert_eq!(p.removals.len(), 1);
    // Same site twice: the duplicate goes, distinct sites stay.
    let hosts = vec![host("a1", "A"), host("a2", "A"), host("b1", "B")];
    let p = plan_file(&file(2, vec![rep("a1"), rep("a2"), rep("b1")]), &hosts, &worker(1000));
    assert_eq!(p.removals.len(), 1);
    assert!(p.removals[0].starts_with('a'), "{:?}", p.removals);
}

#[test]
fn surplus_only_for_files_that_asked_for_a_count() {
    let hosts = three_sites();
    // ncopy 0 (default 1) with 3 replicas: made by `rep`, left alone.
    let p = plan_file(&file(0, vec![rep("a1"), rep("b1"), rep("c1")]), &hosts, &worker(1000));
    assert_eq!(p, FilePlan::satisfied());
    // Not in `rep` plans either.
    let p = plan_file(&file(2, vec![rep("a1"), rep("b1"), rep("c1")]), &hosts, &copies(1));
    assert!(p.removals.is_empty());
}

#[test]
fn no_removal_while_copies_are_in_flight_or_a_holder_is_down() {
    let mut f = file(2, vec![rep("a1"), rep("b1"), rep("c1")]);
    f.in_flight = vec!["a2".into()];
    assert!(plan_file(&f, &three_sites(), &worker(1000)).removals.is_empty());
    let hosts = vec![host("a1", "A"), host("b1", "B"), host("c1", "C"), down(host("a2", "A"), 5)];
    let f = file(2, vec![rep("a1"), rep("b1"), rep("c1"), rep("a2")]);
    assert!(plan_file(&f, &hosts, &worker(1000)).removals.is_empty());
}

#[test]
fn in_flight_copies_count_so_nothing_is_planned_twice() {
    let mut f = file(2, vec![rep("a1")]);
    f.in_flight = vec!["b1".into()];
    assert_eq!(plan_file(&f, &three_sites(), &worker(1000)).copies, vec![]);
}

#[test]
fn bad_replica_is_repaired_in_place_then_removed_if_elsewhere() {
    let hosts = vec![host("a1", "A"), host("b1", "B"), host("c1", "C")];
    // Repair goal: two registered, one bad: copy back onto the bad host.
    let pol =
        Policy { want: Want::Repair { default: 1 }, from: None, to: None, remove_surplus: false, down_grace_ms: 0 };
    let p = plan_file(&file(0, vec![rep("a1"), bad("c1")]), &hosts, &pol);
    assert_eq!(dsts(&p), ["c1"]);
    assert_eq!(p.copies[0].sources, ["a1"]);
    // The worker keeps ncopy 2 and removes the bad record once 2 good exist.
    let p = plan_file(&file(2, vec![rep("a1"), rep("b1"), bad("c1")]), &hosts, &worker(1000));
    assert!(p.copies.is_empty());
    assert_eq!(p.removals, ["c1"]);
}

#[test]
fn full_hosts_are_skipped() {
    let mut hosts = three_sites();
    hosts[2].free = 10; // b1
    let p = plan_file(&file(0, vec![rep("a1")]), &hosts, &copies(2));
    assert_eq!(dsts(&p), ["c1"]);
}

#[test]
fn unknown_holder_counts_as_lost() {
    let p = plan_file(&file(2, vec![rep("a1"), rep("gone")]), &three_sites(), &worker(1000));
    assert_eq!(p.copies.len(), 1);
    assert!(p.removals.is_empty());
}

#[test]
fn placement_spreads_files_over_equal_hosts() {
    let hosts: Vec<HostView> = (0..4).map(|i| host(&format!("h{i}"), &format!("S{i}"))).collect();
    let mut seen = BTreeSet::new();
    for ino in 0..64 {
        let f = FileView { ino, gen: 1, size: 1, ncopy: 0, replicas: vec![], in_flight: vec![] };
        let mut f = f;
        f.replicas.push(ReplicaView { host: "h0".into(), gen: 1, bad: false });
        let p = plan_file(&f, &hosts, &copies(2));
        seen.insert(p.copies[0].dst.clone());
    }
    assert_eq!(seen.len(), 3, "all three other hosts receive copies: {seen:?}");
}

#[test]
fn selector_resolves_hosts_before_sites() {
    let hosts = vec![host("A", "B"), host("x", "A")];
    assert_eq!(Selector::resolve("A", &hosts), Some(Selector::Host("A".into())));
    assert_eq!(Selector::resolve("B", &hosts), Some(Selector::Site("B".into())));
    assert_eq!(Selector::resolve("nope", &hosts), None);
}

fn draining(mut h: HostView) -> HostView {
    h.draining = true;
    h
}

#[test]
fn draining_host_replicas_move_elsewhere_and_keep_the_count() {
    let hosts = vec![host("a1", "A"), draining(host("a2", "A")), host("b1", "B")];
    // One copy, on the draining host: copied from there, to a host not
    // draining, naming the replica it replaces.
    let p = plan_file(&file(0, vec![rep("a2")]), &hosts, &worker(1000));
    assert_eq!(p.copies.len(), 1, "{p:?}");
    assert_ne!(p.copies[0].dst, "a2");
    assert_eq!(p.copies[0].sources, vec!["a2".to_string()]);
    assert_eq!(p.copies[0].replaces.as_deref(), Some("a2"));
    assert!(p.removals.is_empty());
    // Two copies without a copy count (made by `rep`): still two after.
    let p = plan_file(&file(0, vec![rep("a1"), rep("a2")]), &hosts, &worker(1000));
    assert_eq!(dsts(&p), vec!["b1"]);
    assert_eq!(p.copies[0].replaces.as_deref(), Some("a2"));
    // A copy count the other replicas meet: the draining one just goes.
    let p = plan_file(&file(1, vec![rep("a1"), rep("a2")]), &hosts, &worker(1000));
    assert!(p.copies.is_empty(), "{p:?}");
    assert_eq!(p.removals, vec!["a2".to_string()]);
    // A bad replica there goes once a good one lives elsewhere.
    let p = plan_file(&file(0, vec![rep("a1"), bad("a2")]), &hosts, &worker(1000));
    assert!(p.copies.is_empty() && p.removals == vec!["a2".to_string()], "{p:?}");
    // `rep` never copies to a draining host, and reads from one.
    let p = plan_file(&file(0, vec![rep("a2")]), &hosts, &copies(3));
    assert_eq!(p.outcome, Outcome::Short { reason: SkipReason::NoTarget, missing: 1 });
    assert!(!dsts(&p).contains(&"a2"));
    assert!(p.copies.iter().all(|c| c.replaces.is_none()));
}
