//! `renkei user` and `renkei group` (issue 17, acceptance 4) with real
//! processes: a user an admin adds can work at once, one removed is refused
//! at their next request (on a connection already open too), group changes
//! show in the next `whoami`, and none of it restarts the meta server or a
//! file server. A plain user is refused every admin command, at the meta
//! server.

use super::common::{json, text};
use std::path::Path;
use tests::procs::ProcFederation;
use tests::with_timeout;

fn ok_as(fed: &ProcFederation, cfg: &Path, args: &[&str]) -> String {
    let out = fed.renkei_as(cfg, args);
    assert!(out.status.success(), "renkei {args:?} as {}: {}", cfg.display(), text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn refused_as(fed: &ProcFederation, cfg: &Path, args: &[&str], why: &str) -> String {
    let out = fed.renkei_as(cfg, args);
    let t = text(&out);
    assert!(!out.status.success(), "renkei {args:?} as {} should fail: {t}", cfg.display());
    assert!(t.contains(why), "renkei {args:?} says {why:?}: {t}");
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_groups_change_at_once_without_a_restart() {
    with_timeout(240, async {
        let fed = ProcFederation::up(1).await;
        // Only users an admin adds: no registration on first contact.
        let meta_toml = fed.dir().join("meta.toml");
        let cfg = std::fs::read_to_string(&meta_toml).unwrap();
        std::fs::write(&meta_toml, format!("auto_register_users = false\n{cfg}")).unwrap();
        fed.kill("meta");
        fed.restart().await;
        let (meta_pid, pop_pid) = (fed.pid("meta").unwrap(), fed.pid("pop1").unwrap());
        let admin = fed.state.client_config.clone();
        let carol = fed.user_config("carol");

        // Unknown: refused.
        refused_as(&fed, &carol, &["whoami"], "not registered");

        // Added: works at the next request, with the ids given.
        let added = json(&ok_as(&fed, &admin, &["--json", "user", "add", "carol", "--uid", "2001"]));
        assert_eq!(added[0]["uid"], 2001, "{added}");
        let me = json(&ok_as(&fed, &carol, &["--json", "whoami"]));
        assert_eq!(
            (me["uid"].as_u64(), me["gid"].as_u64(), me["admin"].as_bool()),
            (Some(2001), Some(2001), Some(false))
        );
        ok_as(&fed, &admin, &["mkdir", "-m", "777", "/shared"]);
        let src = fed.dir().join("carol-file");
        std::fs::write(&src, b"carol's bytes").unwrap();
        ok_as(&fed, &carol, &["put", &src.to_string_lossy(), "/shared/c"]);
        let st = json(&ok_as(&fed, &admin, &["--json", "stat", "/shared/c"]));
        assert_eq!(st["uid"], 2001, "carol owns what she wrote: {st}");
        let users = json(&ok_as(&fed, &carol, &["--json", "user", "ls"]));
        let names: Vec<&str> = users.as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap()).collect();
        assert!(names.contains(&"carol") && names.contains(&fed.state.user.as_str()), "anyone may list users: {users}");

        // A plain user is refused every admin command, by the meta server.
        for args in [
            &["user", "add", "mallory"][..],
            &["user", "mod", "carol", "--admin", "true"],
            &["user", "rm", fed.state.user.as_str()],
            &["group", "add", "wheel2"],
            &["host", "drain", "pop1"],
            &["host", "rm", "pop1"],
            &["quota", "set", "carol", "--files", "1"],
        ] {
            let t = refused_as(&fed, &carol, args, "only an admin may");
            assert!(t.contains("carol"), "the refusal names who asked: {t}");
        }
        let t = text(&fed.renkei_as(&carol, &["--json", "hosts"]));
        assert!(!t.contains("\"draining\": true"), "nothing was drained: {t}");

        // Groups: named, members' groups change at their next request.
        let g = json(&ok_as(&fed, &admin, &["--json", "group", "add", "lab", "--gid", "5000", "--members", "carol"]));
        assert_eq!((g[0]["gid"].as_u64(), g[0]["members"][0].as_str()), (Some(5000), Some("carol")), "{g}");
        let me = json(&ok_as(&fed, &carol, &["--json", "whoami"]));
        assert_eq!(me["groups"], serde_json::json!([5000]), "{me}");
        ok_as(&fed, &admin, &["chmod", "770", "/shared"]);
        ok_as(&fed, &admin, &["chown", ":lab", "/shared"]);
        ok_as(&fed, &carol, &["ls", "/shared"]);
        ok_as(&fed, &admin, &["group", "mod", "lab", "--remove", "carol"]);
        let me = json(&ok_as(&fed, &carol, &["--json", "whoami"]));
        assert_eq!(me["groups"], serde_json::json!([]), "{me}");
        refused_as(&fed, &carol, &["ls", "/shared"], "ermission");
        let groups = json(&ok_as(&fed, &admin, &["--json", "group", "ls"]));
        assert_eq!(groups, serde_json::json!([{ "name": "lab", "gid": 5000, "members": [] }]));

        // Made an admin, carol may add users; taken back, not.
        ok_as(&fed, &admin, &["user", "mod", "carol", "--admin", "true", "--groups", "lab"]);
        ok_as(&fed, &carol, &["user", "add", "dave"]);
        ok_as(&fed, &admin, &["user", "mod", "carol", "--admin", "false"]);
        refused_as(&fed, &carol, &["user", "add", "erin"], "only an admin may");
        ok_as(&fed, &admin, &["group", "rm", "lab"]);
        let me = json(&ok_as(&fed, &carol, &["--json", "whoami"]));
        assert_eq!(me["groups"], serde_json::json!([]), "a removed group leaves its members: {me}");

        // Removed: refused at the next request, on an open connection too.
        let open = fs_client::Client::connect(fs_client::ClientConfig::load(&carol).unwrap()).await.unwrap();
        assert_eq!(open.meta().whoami().await.unwrap().uid, 2001);
        ok_as(&fed, &admin, &["user", "rm", "carol"]);
        let e = open.meta().whoami().await.unwrap_err().to_string();
        assert!(e.contains("was removed"), "{e}");
        refused_as(&fed, &carol, &["ls", "/"], "was removed");
        refused_as(&fed, &admin, &["user", "rm", fed.state.user.as_str()], "may not remove themselves");
        // Back, under another uid: her old files keep the old one.
        ok_as(&fed, &admin, &["user", "add", "carol", "--uid", "2002"]);
        let me = json(&ok_as(&fed, &carol, &["--json", "whoami"]));
        assert_eq!(me["uid"], 2002, "{me}");

        // Nothing was restarted for any of it.
        assert_eq!((fed.pid("meta"), fed.pid("pop1")), (Some(meta_pid), Some(pop_pid)));
        // And the changes were durable: they survive a meta restart.
        fed.kill("meta");
        fed.restart().await;
        let users = json(&ok_as(&fed, &admin, &["--json", "user", "ls"]));
        let carol_rec = users.as_array().unwrap().iter().find(|u| u["name"] == "carol").cloned();
        assert_eq!(carol_rec.map(|u| u["uid"].clone()), Some(serde_json::json!(2002)), "{users}");
    })
    .await
}
