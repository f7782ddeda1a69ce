//! A file server never empties its spool for a meta server of another
//! namespace (issue 12, finding 12): a server pointed at the wrong meta
//! server, or at one whose database was rebuilt, used to delete every
//! replica as "unknown" when it joined. Now each spool is stamped with the
//! namespace its replicas belong to, such a server refuses to start with a
//! message that says why and how to proceed, the replicas stay, and once
//! the right meta server is back they are served again.

use std::path::Path;
use tests::procs::ProcFederation;
use tests::{pattern, with_timeout};

/// Replica files in a spool.
fn replicas(spool: &Path) -> usize {
    walk(&spool.join("data"))
}

fn walk(p: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(p) else { return 0 };
    rd.flatten().map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 }).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_refuses_to_empty_its_spool_for_another_namespace() {
    with_timeout(180, async {
        let fed = ProcFederation::up(1).await;
        let c = fed.client(None).await;
        let data = pattern(300_000, 7);
        c.put_bytes(&data, "/kept").await.unwrap();
        drop(c);
        let spool = fed.dir().join("spool").join("pop1");
        let stamp = std::fs::read_to_string(spool.join("namespace-id")).expect("the spool is stamped");
        let held = replicas(&spool);
        assert!(held >= 1, "the replica is in the spool");

        // The meta server comes back with a new, empty database (on the
        // etcd store: under a new prefix).
        fed.kill("meta");
        fed.kill("pop1");
        let db = fed.dir().join("meta.db");
        let saved = fed.dir().join("meta.db.saved");
        std::fs::rename(&db, &saved).unwrap();
        let meta_toml = fed.dir().join("meta.toml");
        let config = std::fs::read_to_string(&meta_toml).unwrap();
        if tests::etcd::store_is_etcd() {
            let other = config.replace("prefix = \"", "prefix = \"another-");
            assert_ne!(other, config, "the etcd store's prefix is in meta.toml");
            std::fs::write(&meta_toml, other).unwrap();
        }
        // pop1 heartbeats before it reads the answer's namespace, so `local
        // up` may or may not have counted it up before it exits: wait for
        // the exit itself.
        let up = fed.try_restart(&[]).await;
        fed.wait_dead("pop1", std::time::Duration::from_secs(30)).await;
        let log = fed.log("pop1");
        assert!(log.contains("refusing to join") && log.contains("--forget-spool"), "{up:?}\n{log}");
        assert_eq!(replicas(&spool), held, "no replica was deleted");
        assert_eq!(std::fs::read_to_string(spool.join("namespace-id")).unwrap(), stamp);

        // The right database back: the file is served as before.
        fed.kill("meta");
        std::fs::remove_dir_all(&db).unwrap();
        std::fs::rename(&saved, &db).unwrap();
        std::fs::write(&meta_toml, &config).unwrap();
        fed.restart().await;
        let c = fed.client(None).await;
        assert_eq!(c.get_bytes("/kept").await.unwrap(), data);
    })
    .await
}
